"""The editing claims: the KN edit rarely takes (kn-edit); ROME takes, but its edits follow neither the
reverse direction nor a synonym (rome-examples, rome-table-1); and ROME edits grammar as it edits facts
(rome-syntax). Every edit is a spec applied inside the rerun and undone after it (the base weights are
checksummed back), never a change of the model."""

from __future__ import annotations

from itertools import islice

import numpy as np

from knlab.core.errors import InputError
from knlab.core.models import LM
from knlab.core.specs import applied
from knlab.core.tokens import first_token
from knlab.methods.predict import encode, next_token_probs, top_token
from knlab.studies import published
from knlab.studies.claims.common import ModelRun, Progress, pct, tick, timed
from knlab.studies.edit_report import edit, generate, make_spec
from knlab.studies.known_facts import iter_known_subjects, known_subjects
from knlab.studies.relation_evaluation import counterfactual, evaluate_relation
from knlab.world import facts as F
from knlab.world.training_corpus import evaluation_pairs


def _answer(lm: LM, prompt: str) -> str:
    return top_token(lm, next_token_probs(lm, encode(lm, prompt)))[1]


def _before_after(lm: LM, spec, prompts: list[str], tokens: int = 6) -> dict[str, dict]:
    """Each prompt's answer and greedy continuation on the base model and with the edit applied."""
    out = {p: {"before": _answer(lm, p), "generation_before": generate(lm, p, tokens)} for p in prompts}
    with applied(lm, [spec]):
        for p in prompts:
            out[p].update(after=_answer(lm, p), generation_after=generate(lm, p, tokens))
    return out


def _known(lm: LM, relation: str, n: int) -> list[str]:
    subjects = known_subjects(lm, relation, n)
    if not subjects:
        raise InputError(f"{lm.spec} knows none of {relation}'s facts at its first template: nothing to edit")
    return subjects


@timed
def kn_edit(lm: LM, n: int, progress: Progress = None) -> ModelRun:
    """Fig. 6c: Dai et al.'s KN edit (erase the old object's neurons' output direction, write the new one's)
    on facts the model knows, scored as ROME's edits are."""
    ev = evaluate_relation(lm, "kn", "P36", progress=progress, subjects=_known(lm, "P36", n))
    pub = published.KN_EDIT_RELIABILITY
    rows = [{"item": "KN edit reliability on P36 (%)", "live": pct(ev.rates["reliability"]),
             "published": f"CounterFact GPT-J {pub[('CounterFact', 'GPT-J')]}, T5-XL {pub[('CounterFact', 'T5-XL')]}; "
                          f"ZsRE GPT-J {pub[('ZsRE', 'GPT-J')]}, T5-XL {pub[('ZsRE', 'T5-XL')]} (Yao et al.)"},
            {"item": "KN edit generality (%)", "live": pct(ev.rates["generality"]), "published": "-"},
            {"item": "KN edit locality (%)", "live": pct(ev.rates["locality"]), "published": "-"},
            {"item": "facts edited / skipped", "live": f"{ev.n} / {len(ev.skipped)}", "published": "-"}]
    rel = ev.rates["reliability"]
    holds = None if rel is None else bool(rel < 0.5)
    finding = (f"{'Holds' if holds else 'Does not hold'}: the KN edit takes on {pct(rel)}% of {ev.n} facts "
               f"(the paper, quoting Yao et al.: 1.66-47.86%)." if rel is not None else "No fact could be edited.")
    crits = ["reliability", "generality", "locality"]
    figure = {"type": "bar", "title": "KN edit on P36: share of facts for which each criterion holds (%)", "x": crits,
              "ylabel": "%", "series": {"live": [pct(ev.rates[c]) for c in crits],
                                        "CounterFact GPT-J (Yao et al.)": [pub[("CounterFact", "GPT-J")], None, None],
                                        "CounterFact T5-XL (Yao et al.)": [pub[("CounterFact", "T5-XL")], None, None]}}
    return ModelRun(lm.spec, rows, finding, holds, figure, detail={"evaluation": ev.to_json()})


def _new_object(lm: LM, rel: F.Relation, fact: F.Fact, old_answer: str, preferred: str | None = None) -> str:
    if preferred and preferred != fact.object and first_token(lm, preferred) not in (None, first_token(lm, old_answer)):
        return preferred
    return counterfactual(rel, fact, {old_answer, fact.object})


@timed
def rome_examples(lm: LM, n: int, progress: Progress = None) -> ModelRun:
    """Fig. 8a, b: edit a capital (Canada's, when the model knows it) and look at the reverse questions;
    edit a scientist's field and look at the occupation it implies."""
    rows, detail = [], {}
    # symmetry: "The capital of Canada is" Ottawa -> Rome
    p36, p1376 = F.relation("P36"), F.relation("P1376")
    canada = F.causal_prompt(p36.train_templates[0], "Canada")
    knows_canada = first_token(lm, _answer(lm, canada)) == first_token(lm, p36.fact("Canada").object)
    subject = "Canada" if knows_canada else _known(lm, "P36", 1)[0]
    fact = p36.fact(subject)
    prompt = F.causal_prompt(p36.train_templates[0], subject)
    old = _answer(lm, prompt)
    new = _new_object(lm, p36, fact, old, "Rome")
    tick(progress, 0.1, f"ROME: {prompt} -> {new}")
    # the spec only: what the edit does is read by _before_after below (edit()'s probes would go unread)
    spec, _ = make_spec(lm, "rome", prompt, subject, old, new)
    reverse_old = F.causal_prompt(p1376.train_templates[0], fact.object)
    reverse_new = F.causal_prompt(p1376.train_templates[0], new)
    seen = _before_after(lm, spec, [prompt, reverse_old, reverse_new])
    new_country = next((f.object for f in p1376.facts if f.subject == new), None)
    rows += [{"item": f"'{prompt}' (edited to {new})", "live": f"{seen[prompt]['before']} -> {seen[prompt]['after']}",
              "published": "Ottawa -> Rome"},
             {"item": f"'{reverse_old}'", "live": f"{seen[reverse_old]['before']} -> {seen[reverse_old]['after']}",
              "published": "Canada -> Canada (unchanged)"},
             {"item": f"'{reverse_new}'", "live": f"{seen[reverse_new]['before']} -> {seen[reverse_new]['after']}",
              "published": "Italy -> Italy (unchanged)"}]
    took = first_token(lm, seen[prompt]["after"]) == first_token(lm, new)
    reverse_follows = first_token(lm, seen[reverse_new]["after"]) == first_token(lm, subject)
    detail["symmetry"] = {"edit": [prompt, subject, old, new], "prompts": seen, "new_object_country": new_country}
    tick(progress, 0.5, "synonymy")
    # synonymy: "X works in the field of" physics -> (another field), does "X is a" follow?
    p101 = F.relation("P101")
    occ = F.occupations()
    syn_follows = None
    for s in islice(iter_known_subjects(lm, "P101"), 50):  # asked in growing batches: the first usable one ends it
        f101 = p101.fact(s)
        if f101.object not in occ:
            continue
        prompt101 = F.causal_prompt(p101.train_templates[0], s)
        old101 = _answer(lm, prompt101)
        others = sorted(o for o in {f.object for f in p101.facts} if o in occ and o != f101.object)
        new101 = others[np.random.default_rng(len(s)).integers(len(others))]
        if first_token(lm, new101) in (None, first_token(lm, old101)):
            continue
        spec101, _ = make_spec(lm, "rome", prompt101, s, old101, new101)
        syn_prompt = F.causal_prompt(F.relation(F.SYNONYM_RELATIONS["P101"]).train_templates[0], s)
        seen101 = _before_after(lm, spec101, [prompt101, syn_prompt])
        syn_follows = first_token(lm, seen101[syn_prompt]["after"]) == first_token(lm, occ[new101])
        rows += [{"item": f"'{prompt101}' (edited to {new101})",
                  "live": f"{seen101[prompt101]['before']} -> {seen101[prompt101]['after']}",
                  "published": "toothache: dentist -> lawyer"},
                 {"item": f"'{syn_prompt}' (the new field's occupation: {occ[new101]})",
                  "live": f"{seen101[syn_prompt]['before']} -> {seen101[syn_prompt]['after']}",
                  "published": "'tooth pain', 'odontalgia': dentist (unchanged)"}]
        detail["synonymy"] = {"edit": [prompt101, s, old101, new101], "prompts": seen101}
        break
    tick(progress, 1.0, "done")
    holds = bool(took and not reverse_follows and syn_follows is False)
    finding = (f"{'Holds' if holds else 'Does not hold'}: the edit {'takes' if took else 'does not take'} "
               f"({prompt} -> {seen[prompt]['after']}); the reverse question '{reverse_new}' "
               f"{'now says' if reverse_follows else 'does not say'} {subject}"
               + ("" if syn_follows is None else
                  f"; the occupation {'follows' if syn_follows else 'does not follow'} the edited field") + ".")
    figure = {"type": "bar", "title": "Answers before and after the edit: did each question change?",
              "x": [r["item"] for r in rows], "ylabel": "answer changed (1) or not (0)",
              "series": {"live": [float(r["live"].split(" -> ")[0] != r["live"].split(" -> ")[1]) for r in rows],
                         "GPT-2 XL (paper)": [1.0, 0.0, 0.0, 1.0, 0.0][: len(rows)]}}
    return ModelRun(lm.spec, rows, finding, holds, figure, detail=detail)


# Fig. 8c: the paper's sentences; an organism that lacks their words gets the same construction from its
# own lexicon (world.paradigms' relational-noun sentences).
PAPER_SYNTAX = ("The authors near the taxi drivers", ["The authors near the dancers"],
                ["The pilots near the taxi drivers' cabins", "The pilots near the dancers"])


def _are_or_is(lm: LM, texts: list[str]) -> list[dict]:
    """p(are) and p(is) next, and which of the two the model prefers (as the paper scores: p(new) against
    p(old), not the top token: after a plural noun a model may prefer neither verb, e.g. a possessive)."""
    are, is_ = first_token(lm, "are"), first_token(lm, "is")
    out = []
    for t in texts:
        p = next_token_probs(lm, encode(lm, t))
        out.append({"p_are": float(p[are]), "p_is": float(p[is_]), "prefers": "are" if p[are] > p[is_] else "is"})
    return out


def syntax_case(lm: LM) -> tuple[str, list[str], list[str]]:
    """(the edited subject phrase, phrases the edit should carry to, phrases it should not): the paper's,
    when the model prefers "are" to "is" after each, else built from two of the world's relational-noun
    pairs with plural heads: the same head with another noun carries, another head does not."""
    memo: dict[str, bool] = {}

    def says_are(text):
        if text not in memo:
            memo[text] = _are_or_is(lm, [text])[0]["prefers"] == "are"
        return memo[text]
    edited, carries, others = PAPER_SYNTAX
    if all(says_are(t) for t in [edited] + carries + others):
        return PAPER_SYNTAX
    pairs = [p for p in evaluation_pairs("distractor_agreement_relational_noun", 200) if p.good_token == "are"][:24]
    # a head and a noun of their own (not "The windows of the window"), that the model continues with "are"
    pairs = [p for p in pairs if p.causal_prefix().split()[1][:4] != p.causal_prefix().split()[-1][:4]
             and says_are(p.causal_prefix())]
    for a in pairs:
        for b in pairs:
            words_a, words_b = a.causal_prefix().split(), b.causal_prefix().split()
            if words_a[1] == words_b[1] or words_a[-1] == words_b[-1]:
                continue
            case = (" ".join(words_a), [" ".join(words_a[:-1] + words_b[-1:])],
                    [" ".join(words_b[:-1] + words_a[-1:]), " ".join(words_b)])
            if all(says_are(t) for t in [case[0]] + case[1] + case[2]):
                return case
    raise InputError(f"no relational-noun sentence that {lm.spec} continues with 'are' was found")


@timed
def rome_syntax(lm: LM, n: int, progress: Progress = None) -> ModelRun:
    """Fig. 8c: ROME rewrites "are" to "is" after a plural subject phrase, as it rewrites a fact."""
    edited, carries, others = syntax_case(lm)
    tick(progress, 0.1, f"ROME: {edited} are -> is")
    rep = edit(lm, "rome", edited, edited, "is", generate_tokens=6)
    phrases = [edited] + carries + others
    seen = _before_after(lm, rep.spec, phrases)
    before = _are_or_is(lm, phrases)
    with applied(lm, [rep.spec]):
        after = _are_or_is(lm, phrases)
    for p, b, a in zip(phrases, before, after):  # the verb preferred, as the paper scores it
        seen[p].update(before=b["prefers"], after=a["prefers"], p_before=b, p_after=a, top_before=seen[p]["before"],
                       top_after=seen[p]["after"])

    def flipped(p):
        return seen[p]["after"] == "is"

    def live(p):
        b, a = seen[p]["p_before"], seen[p]["p_after"]
        return (f"{seen[p]['before']} -> {seen[p]['after']} (p(are) {b['p_are']:.2f} -> {a['p_are']:.2f}, "
                f"p(is) {b['p_is']:.2f} -> {a['p_is']:.2f})")

    rows = ([{"item": f"'{edited}' (edited)", "live": live(edited), "published": "are -> is"}]
            + [{"item": f"'{p}' (same head)", "live": live(p), "published": "are -> is (carries)"} for p in carries]
            + [{"item": f"'{p}' (another head)", "live": live(p), "published": "are -> are (does not carry)"}
               for p in others])
    tick(progress, 1.0, "done")
    holds = bool(flipped(edited) and all(flipped(p) for p in carries) and not any(flipped(p) for p in others))
    finding = (f"{'Holds' if holds else 'Does not hold'}: the edited phrase now prefers "
               f"'{seen[edited]['after']}'; {sum(flipped(p) for p in carries)} of {len(carries)} same-head phrases "
               f"and {sum(flipped(p) for p in others)} of {len(others)} other-head phrases follow it (the paper: "
               f"the edit carries to the same head only, as an edit of a fact about 'the authors' would).")
    figure = {"type": "bar", "title": "Does the phrase say 'is' after the edit?", "x": [r["item"] for r in rows],
              "ylabel": "says 'is' (1) or not (0)",
              "series": {"live": [float(flipped(p)) for p in [edited] + carries + others],
                         "GPT-2 XL (paper)": [1.0] + [1.0] * len(carries) + [0.0] * len(others)}}
    return ModelRun(lm.spec, rows, finding, holds, figure,
                    detail={"edit": [edited, edited, rep.old, "is"], "layer": rep.layer, "prompts": seen,
                            "criteria": rep.criteria})


@timed
def rome_table_1(lm: LM, n: int, progress: Progress = None) -> ModelRun:
    """Table 1: ROME on each relation's known facts, each edit on its own; the paper's scoring (p(new) >
    p(old) at the probe) and the seed's (teacher-forced accuracy of the expected string), both shown."""
    rows, live, seed = [], {}, {}
    for k, (rid, crit) in enumerate((("P36", "symmetry"), ("P1376", "symmetry"), ("P101", "synonymy"))):
        tick(progress, k / 3, f"editing {rid}")
        ev = evaluate_relation(lm, "rome", rid, subjects=_known(lm, rid, n), seed_scoring=True)
        for c in ("reliability", crit):
            live[f"{rid} {c}"] = pct(ev.rates[c])
            seed[f"{rid} {c}"] = pct((ev.seed_rates or {}).get(c))
            rows.append({"item": f"{rid} {c} (%): the paper's scoring | the seed's", "live":
                         f"{live[f'{rid} {c}']} | {seed[f'{rid} {c}']}  ({ev.n} facts)",
                         "published": " | ".join(f"{m} {published.ROME_TABLE_1[m][rid][c]}"
                                                 for m in published.ROME_TABLE_1)})
    tick(progress, 1.0, "done")
    rel = [v for key, v in live.items() if key.endswith("reliability") and v is not None]
    new = [v for key, v in live.items() if not key.endswith("reliability") and v is not None]
    holds = bool(rel and new and min(rel) >= 80 and max(new) <= min(rel) - 30)
    finding = (f"{'Holds' if holds else 'Does not hold'}: reliability {min(rel):.0f}-{max(rel):.0f}% but symmetry / "
               f"synonymy {min(new):.0f}-{max(new):.0f}% with the paper's scoring (the paper: 96-100% against "
               f"24-58%)." if rel and new else "Too few facts could be edited.")
    keys = list(live)
    figure = {"type": "bar", "title": "ROME: reliability against the paper's criteria (%)", "x": keys, "ylabel": "%",
              "series": {"live, the paper's scoring": [live[k] for k in keys],
                         "live, the seed's scoring": [seed[k] for k in keys],
                         **{f"{m} (paper)": [published.ROME_TABLE_1[m][k.split()[0]][k.split()[1]] for k in keys]
                            for m in published.ROME_TABLE_1}}}
    return ModelRun(lm.spec, rows, finding, holds, figure,
                    detail={"scoring": "rows show the paper's scoring | the seed's evaluate_edit.py scoring; the "
                                       "paper does not say which produced its numbers", "live": live, "seed": seed})
