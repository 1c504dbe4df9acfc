"""The editing claims: the KN edit rarely takes (kn-edit); ROME takes, but its edits follow neither the
reverse direction nor a synonym (rome-examples, rome-table-1); and ROME edits grammar as it edits facts
(rome-syntax). Every edit is a spec applied inside the rerun and undone after it (the base weights are
checksummed back), never a change of the model.

The rules, each written once here and in docs/paper.md (boundaries on a share of items; ``studies.findings``
turns a share and its 95% interval into agrees / departs / undecided):
- an edit *takes* (reliability): the paper's ROME figures are 96-100%; "reliable" is read as above 80%;
- the KN edit's reliability: 1.66-47.86% in the figures the paper quotes (Yao et al.): below 50%;
- symmetry and synonymy: the paper's 24-34% and 52-58%, "not symmetric / not synonym-aware", read as
  below 70% (the least of the paper's reliability figures less a quarter of it);
- Fig. 8's single examples, repeated over many edits: the reverse question of the new object does not
  name the subject (below 50%), the old object's reverse question still does (above 50%), the
  occupation does not follow the edited field (below 50%); Fig. 8c: the edit carries to another noun
  after the same head (above 50%) and not to another head (below 50%)."""

from __future__ import annotations

import numpy as np

from knlab.core.errors import InputError
from knlab.core.models import LM
from knlab.core.specs import applied
from knlab.core.tokens import first_token
from knlab.methods.predict import encode, next_token_probs, top_token
from knlab.studies import published
from knlab.studies.claims.common import Items, ModelRun, Progress, pct, tick, timed
from knlab.studies.edit_report import generate, make_spec
from knlab.studies.findings import mean, share, share_bar
from knlab.studies.known_facts import iter_known_subjects, known_subjects
from knlab.studies.relation_evaluation import answerable_objects, counterfactual, evaluate_relation
from knlab.world import facts as F
from knlab.world.training_corpus import evaluation_pairs

RELIABLE = 0.8  # an edit "takes", as the paper's ROME does (96-100%)
KN_RELIABLE = 0.5  # the KN edit's quoted reliability: 1.66-47.86%
NOT_GENERALISED = 0.7  # symmetry / synonymy: the paper's 24-58%
MOST = 0.5  # Fig. 8's examples, counted over many edits


def _answer(lm: LM, prompt: str) -> str:
    return top_token(lm, next_token_probs(lm, encode(lm, prompt)))[1]


def _says(lm: LM, answer: str, word: str) -> bool:
    """Does the model's answer start as ``word`` does (a BPE model's first piece of it)?"""
    return first_token(lm, answer) == first_token(lm, word)


def _before_after(lm: LM, spec, prompts: list[str], tokens: int = 0) -> dict[str, dict]:
    """Each prompt's answer (and, with ``tokens``, greedy continuation) on the base model and with the edit."""
    out = {p: {"before": _answer(lm, p)} for p in prompts}
    if tokens:
        for p in prompts:
            out[p]["generation_before"] = generate(lm, p, tokens)
    with applied(lm, [spec]):
        for p in prompts:
            out[p]["after"] = _answer(lm, p)
            if tokens:
                out[p]["generation_after"] = generate(lm, p, tokens)
    return out


def _known(lm: LM, relation: str, n: int) -> list[str]:
    subjects = known_subjects(lm, relation, n)
    if not subjects:
        raise InputError(f"{lm.spec} knows none of {relation}'s facts at its first template: nothing to edit")
    return subjects


def _count(rows: list[dict], criterion: str) -> tuple[int, int]:
    """(facts for which the criterion held, facts it applied to): one probe per fact for these criteria."""
    vals = [r[criterion] for r in rows if r.get(criterion) is not None]
    return sum(v == 1.0 for v in vals), len(vals)


def _leave_out_skipped(items: Items, ev) -> None:
    for s in ev.skipped:
        items.leave_out(f"{ev.relation}:{s['subject']}", s["reason"])


def _kn_sides(facts: list[dict], score) -> dict[str, tuple[int, int]]:
    """(facts where ``score(row)`` holds, facts) among those whose KNs' summed activation at the prompt is
    negative, and among the rest."""
    out = {}
    for side, on in (("negative", True), ("non-negative", False)):
        rows = [r for r in facts if (r["activation"] < 0) == on and r.get("reliability") is not None]
        out[side] = (sum(bool(score(r)) for r in rows), len(rows))
    return out


@timed
def kn_edit(lm: LM, n: int, progress: Progress = None, items: Items | None = None) -> ModelRun:
    """Fig. 6c: the KN edit on facts the model knows, with each fact's KNs found once (over its
    paraphrases, as Dai et al.) and edited by both rules (``intervene.KN_RULES``), each scored both ways
    (``probes.SCORINGS``). The finding against the published figure is measured as the figure was: EKN's
    rule, which EasyEdit's KN calls, scored by teacher-forced token accuracy of the whole new object (the
    seed's and Yao et al.'s scoring); Dai's rule with knlab's first-token scoring is a finding beside it,
    and so is the sign of the KNs' summed activation, which turns the added direction around."""
    subjects = _known(lm, "P36", n)
    ekn = evaluate_relation(lm, "kn", "P36", progress=(lambda f, d: progress(0.5 * f, f"rule ekn: {d}"))
                            if progress else None, subjects=subjects, seed_scoring=True, rule="ekn",
                            measure=items.measure)
    _leave_out_skipped(items, ekn)
    neurons = {r["subject"]: [tuple(x) for x in r["neurons"]] for r in ekn.facts}
    dai = evaluate_relation(lm, "kn", "P36", progress=(lambda f, d: progress(0.5 + 0.5 * f, f"rule dai: {d}"))
                            if progress else None, subjects=[s for s in subjects if s in neurons],
                            seed_scoring=True, rule="dai", neurons=neurons, measure=items.measure)
    pub = published.KN_EDIT_RELIABILITY
    paper = f"{min(pub.values())}-{max(pub.values())}%, Yao et al."

    def token_accuracy(ev) -> list[float]:
        return [r["seed"]["reliability"] for r in ev.facts if "reliability" in r.get("seed", {})]

    k, m = _count(dai.facts, "reliability")
    variant_seed = "rule ekn, EasyEdit's; scoring token-accuracy, the seed's"
    variant_dai = "rule dai; scoring first-token, knlab's"
    findings = [mean(f"KN edit reliability on P36 ({variant_seed})", token_accuracy(ekn), "below", KN_RELIABLE,
                     paper, "token accuracy"),
                share(f"KN edit reliability on P36 ({variant_dai})", k, m, "below", KN_RELIABLE, paper)]
    # Dai's rule adds lambda_new x a x e(new) to the layer's output, a the KNs' summed activation: where a < 0
    # (SiLU(gate) x up can be), the edit pushes away from the new object. Reliability on each side.
    sides = _kn_sides(dai.facts, lambda r: r["reliability"] == 1.0)
    negative = sum(r["activation"] < 0 for r in dai.facts)
    findings.append(share(f"facts whose KNs' summed activation is negative ({variant_dai})", negative,
                          len(dai.facts), "below", MOST, "not stated: the paper's GPT-2 / LLaMA edits assume a "
                          "positive activation carries the added direction"))
    for side, (kk, mm) in sides.items():
        if mm == 0:  # no fact on this side (the organisms' GELU keeps most sums positive): nothing to decide
            continue
        findings.append(share(f"KN edit reliability on P36, KNs' summed activation {side} ({variant_dai})", kk, mm,
                              "below", KN_RELIABLE, paper))
    variants = {"rule ekn, token-accuracy": token_accuracy(ekn),
                "rule ekn, first-token": [r["reliability"] for r in ekn.facts if r["reliability"] is not None],
                "rule dai, token-accuracy": token_accuracy(dai),
                "rule dai, first-token": [r["reliability"] for r in dai.facts if r["reliability"] is not None]}
    rows = [{"item": f"KN edit reliability on P36, {name} (%)", "live": pct(float(np.mean(v))) if v else None,
             "published": f"CounterFact GPT-J {pub[('CounterFact', 'GPT-J')]}, T5-XL {pub[('CounterFact', 'T5-XL')]}; "
                          f"ZsRE GPT-J {pub[('ZsRE', 'GPT-J')]}, T5-XL {pub[('ZsRE', 'T5-XL')]} (Yao et al.: EasyEdit's "
                          "KN, token accuracy)"} for name, v in variants.items()]
    rows += [{"item": f"rule dai: facts with the KNs' summed activation {side}: reliability (first-token)",
              "live": f"{kk} of {mm}", "published": "-"} for side, (kk, mm) in sides.items()]
    rows += [{"item": "KN edit generality, locality (rule ekn / dai, first-token) (%)",
              "live": f"{pct(ekn.rates['generality'])}, {pct(ekn.rates['locality'])} / "
                      f"{pct(dai.rates['generality'])}, {pct(dai.rates['locality'])}", "published": "-"},
             {"item": "facts edited / skipped", "live": f"{ekn.n} / {len(ekn.skipped)}", "published": "-"},
             {"item": "KNs per fact (median)", "live": float(np.median([len(v) for v in neurons.values()]))
              if neurons else None, "published": "-"}]
    names = list(variants)
    figure = {"type": "bar", "title": "KN edit reliability on P36 by rule and scoring (%)", "x": names,
              "ylabel": "%", "series": {"live": [pct(float(np.mean(v))) if v else None for v in variants.values()],
                                        "CounterFact GPT-J (Yao et al.)": [pub[("CounterFact", "GPT-J")]] + [None] * 3,
                                        "CounterFact T5-XL (Yao et al.)": [pub[("CounterFact", "T5-XL")]] + [None] * 3},
              "intervals": {"live": [None, None, None, share_bar(k, m)]}}
    return ModelRun(lm.spec, rows, findings, figure,
                    detail={"ekn": ekn.to_json(), "dai": dai.to_json(), "rules": {"dai": "1 x e(old) out, 8 x e(new) in",
                                                                                  "ekn": "2 x e(old) out, 2 x e(new) in"}})


def _new_object(lm: LM, rel: F.Relation, fact: F.Fact, old_answer: str, prefer: set[str] | None,
                preferred: str | None = None) -> str:
    if preferred and preferred != fact.object and first_token(lm, preferred) not in (None, first_token(lm, old_answer)):
        return preferred
    return counterfactual(rel, fact, {old_answer, fact.object}, prefer)


FIG_8A_SUBJECT, FIG_8A_NEW = "Canada", "Rome"  # the paper's example: Ottawa -> Rome


def _symmetry_item(lm: LM, subject: str, prefer: set[str] | None, generate_tokens: int,
                   new: str | None = None) -> dict:
    """Fig. 8a on one P36 fact: edit its capital (to ``new``, else one drawn as Table 1 draws it) and ask
    both reverse questions before and after."""
    p36, p1376 = F.relation("P36"), F.relation("P1376")
    fact = p36.fact(subject)
    prompt = F.causal_prompt(p36.train_templates[0], subject)
    old = _answer(lm, prompt)
    new = new or _new_object(lm, p36, fact, old, prefer, FIG_8A_NEW if subject == FIG_8A_SUBJECT else None)
    spec, _ = make_spec(lm, "rome", prompt, subject, old, new)
    reverse_old = F.causal_prompt(p1376.train_templates[0], fact.object)
    reverse_new = F.causal_prompt(p1376.train_templates[0], new)
    seen = _before_after(lm, spec, [prompt, reverse_old, reverse_new], generate_tokens)
    own = next((f.object for f in p1376.facts if f.subject == new), None)  # Rome -> Italy
    return {"edit": [prompt, subject, old, new], "prompts": seen, "takes": _says(lm, seen[prompt]["after"], new),
            "reverse_old": reverse_old, "reverse_new": reverse_new, "own": own,
            # None: the model does not answer that reverse question before the edit, so it measures nothing
            "reverse_new_names_subject": (_says(lm, seen[reverse_new]["after"], subject)
                                          if own and _says(lm, seen[reverse_new]["before"], own) else None),
            "reverse_old_names_subject": (_says(lm, seen[reverse_old]["after"], subject)
                                          if _says(lm, seen[reverse_old]["before"], subject) else None)}


def _synonymy_item(lm: LM, subject: str, generate_tokens: int) -> dict:
    """Fig. 8b on one P101 fact: edit the field and ask the occupation it implies."""
    p101, occ = F.relation("P101"), F.occupations()
    fact = p101.fact(subject)
    prompt = F.causal_prompt(p101.train_templates[0], subject)
    old = _answer(lm, prompt)
    others = sorted(o for o in {f.object for f in p101.facts} if o in occ and o != fact.object
                    and first_token(lm, o) not in (None, first_token(lm, old)))
    new = others[np.random.default_rng(len(subject)).integers(len(others))]
    spec, _ = make_spec(lm, "rome", prompt, subject, old, new)
    syn_prompt = F.causal_prompt(F.relation(F.SYNONYM_RELATIONS["P101"]).train_templates[0], subject)
    seen = _before_after(lm, spec, [prompt, syn_prompt], generate_tokens)
    return {"edit": [prompt, subject, old, new], "prompts": seen, "takes": _says(lm, seen[prompt]["after"], new),
            "occupation": [occ[fact.object], occ[new]],
            "occupation_follows": (_says(lm, seen[syn_prompt]["after"], occ[new])
                                   if _says(lm, seen[syn_prompt]["before"], occ[fact.object]) else None)}


def _shares(results: list[dict], key: str) -> tuple[int, int]:
    vals = [r[key] for r in results if r.get(key) is not None]
    return sum(vals), len(vals)


@timed
def rome_examples(lm: LM, n: int, progress: Progress = None, items: Items | None = None) -> ModelRun:
    """Fig. 8a, b, repeated over ``n`` edits each: capitals edited (Canada's to Rome first, when the model
    knows it) and the reverse questions asked; scientists' fields edited and the occupation asked. The
    first edit of each is shown with its generations, as the paper's figure shows one."""
    p36 = F.relation("P36")
    subjects = _known(lm, "P36", n)
    if FIG_8A_SUBJECT in subjects:  # the paper's own example first
        subjects = [FIG_8A_SUBJECT] + [s for s in subjects if s != FIG_8A_SUBJECT]
    prefer = answerable_objects(lm, p36)
    sym = []
    for k, s in enumerate(subjects):
        tick(progress, 0.5 * k / len(subjects), f"capital of {s}")
        # generations for the paper's own example only: an item's result must not depend on its place
        sym.append(items.measure(f"symmetry:{s}", lambda s=s: _symmetry_item(lm, s, prefer,
                                                                             6 if s == FIG_8A_SUBJECT else 0)))
    occ = F.occupations()
    p101_subjects = [s for s in iter_known_subjects(lm, "P101") if F.relation("P101").fact(s).object in occ][:n]
    syn = []
    for k, s in enumerate(p101_subjects):
        tick(progress, 0.5 + 0.5 * k / max(1, len(p101_subjects)), f"field of {s}")
        # the first known scientist is first at every size: its generations are the same item's
        syn.append(items.measure(f"synonymy:{s}", lambda s=s, k=k: _synonymy_item(lm, s, 6 if k == 0 else 0)))
    tick(progress, 1.0, "done")
    for r in sym:
        if r["reverse_new_names_subject"] is None:
            items.leave_out(f"symmetry:{r['edit'][1]} (reverse of the new object)",
                            f"the model does not say {r['edit'][3]}'s own country before the edit")
        if r["reverse_old_names_subject"] is None:
            items.leave_out(f"symmetry:{r['edit'][1]} (reverse of the old object)",
                            f"the model does not say {r['edit'][1]} for {r['edit'][2]} before the edit")
    for r in syn:
        if r["occupation_follows"] is None:
            items.leave_out(f"synonymy:{r['edit'][1]}", f"the model does not call {r['edit'][1]} a "
                            f"{r['occupation'][0]} before the edit")
    findings = [share("the capital edit takes", *_shares(sym, "takes"), "above", MOST, "Ottawa -> Rome"),
                share("the new capital's reverse question names the edited country",
                      *_shares(sym, "reverse_new_names_subject"), "below", MOST,
                      "'Rome is the capital of' still says Italy"),
                share("the old capital's reverse question still names the country",
                      *_shares(sym, "reverse_old_names_subject"), "above", MOST,
                      "'Ottawa is the capital of' still says Canada"),
                share("the field edit takes", *_shares(syn, "takes"), "above", MOST, "dentist -> lawyer"),
                share("the occupation follows the edited field", *_shares(syn, "occupation_follows"), "below", MOST,
                      "'tooth pain', 'odontalgia' still say dentist")]
    rows = []
    for r, labels in ((sym[:1], ("Ottawa -> Rome", "Canada -> Canada (unchanged)", "Italy -> Italy (unchanged)")),
                      (syn[:1], ("toothache: dentist -> lawyer", "'tooth pain', 'odontalgia': dentist (unchanged)"))):
        for ex in r:
            for (p, seen), pub in zip(ex["prompts"].items(), labels):
                rows.append({"item": f"'{p}'" + (f" (edited to {ex['edit'][3]})" if p == ex["edit"][0] else ""),
                             "live": f"{seen['before']} -> {seen['after']}", "published": pub})
    rows += [{"item": f.name, "live": f.text(), "published": f.rule} for f in findings]
    figure = {"type": "bar", "title": f"Fig. 8 over many edits: share of edits for which each holds (%)",
              "x": [f.name for f in findings], "ylabel": "%",
              "series": {"live": [pct(f.value) for f in findings],
                         "GPT-2 XL's single example (paper)": [100.0, 0.0, 100.0, 100.0, 0.0]},
              "intervals": {"live": [share_bar(f.k, f.n) for f in findings]}}
    return ModelRun(lm.spec, rows, findings, figure,
                    detail={"symmetry_example": sym[0] if sym else None, "synonymy_example": syn[0] if syn else None})


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


def syntax_cases(lm: LM, n: int) -> list[tuple[str, list[str], list[str]]]:
    """Up to ``n`` cases (the edited subject phrase, phrases the edit should carry to, phrases it should
    not), each with its own edited phrase: the paper's first, when the model prefers "are" to "is" after
    each of its phrases, then cases built from pairs of the world's relational-noun sentences with plural
    heads: the same head with the other's noun carries, the other head does not."""
    memo: dict[str, bool] = {}

    def says_are(text):
        if text not in memo:
            memo[text] = _are_or_is(lm, [text])[0]["prefers"] == "are"
        return memo[text]
    cases = []
    edited, carries, others = PAPER_SYNTAX
    if all(says_are(t) for t in [edited] + carries + others):
        cases.append(PAPER_SYNTAX)
    pairs = [p for p in evaluation_pairs("distractor_agreement_relational_noun", 400) if p.good_token == "are"][:96]
    # a head and a noun of their own (not "The windows of the window"), that the model continues with "are"
    pairs = [p for p in pairs if p.causal_prefix().split()[1][:4] != p.causal_prefix().split()[-1][:4]
             and says_are(p.causal_prefix())]
    for a in pairs:
        if len(cases) >= n:
            break
        words_a = a.causal_prefix().split()
        if any(c[0] == " ".join(words_a) for c in cases):
            continue
        for b in pairs:
            words_b = b.causal_prefix().split()
            if words_a[1] == words_b[1] or words_a[-1] == words_b[-1]:
                continue
            case = (" ".join(words_a), [" ".join(words_a[:-1] + words_b[-1:])],
                    [" ".join(words_b[:-1] + words_a[-1:]), " ".join(words_b)])
            if all(says_are(t) for t in [case[0]] + case[1] + case[2]):
                cases.append(case)
                break
    if not cases:
        raise InputError(f"no relational-noun sentence that {lm.spec} continues with 'are' was found")
    return cases[:n]


def _syntax_item(lm: LM, case: tuple[str, list[str], list[str]]) -> dict:
    """One case edited (are -> is after the edited phrase) and every phrase's preferred verb after it."""
    edited, carries, others = case
    spec, where = make_spec(lm, "rome", edited, edited, "are", "is")
    phrases = [edited] + carries + others
    before = _are_or_is(lm, phrases)
    with applied(lm, [spec]):
        after = _are_or_is(lm, phrases)
    r6 = lambda d: {k: round(v, 6) if isinstance(v, float) else v for k, v in d.items()}  # noqa: E731
    seen = {p: {"before": r6(b), "after": r6(a)} for p, b, a in zip(phrases, before, after)}
    return {"edited": edited, "carries": carries, "others": others, "layer": where["layer"], "prompts": seen,
            "takes": after[0]["prefers"] == "is",
            "same_head_flipped": [seen[p]["after"]["prefers"] == "is" for p in carries],
            "other_head_flipped": [seen[p]["after"]["prefers"] == "is" for p in others]}


@timed
def rome_syntax(lm: LM, n: int, progress: Progress = None, items: Items | None = None) -> ModelRun:
    """Fig. 8c over ``n`` cases: ROME rewrites "are" to "is" after a plural subject phrase, as it rewrites a
    fact; does the edit carry to the same head with another noun, and to another head?"""
    cases = syntax_cases(lm, n)
    results = []
    for k, case in enumerate(cases):
        tick(progress, k / len(cases), f"ROME: {case[0]} are -> is")
        results.append(items.measure(f"syntax:{case[0]}", lambda case=case: _syntax_item(lm, case)))
    tick(progress, 1.0, "done")
    same = [f for r in results for f in r["same_head_flipped"]]
    other = [f for r in results for f in r["other_head_flipped"]]
    findings = [share("the edit takes (the edited phrase says 'is')", sum(r["takes"] for r in results),
                      len(results), "above", MOST, "are -> is"),
                share("same head, another noun: carries", sum(same), len(same), "above", MOST,
                      "'The authors near the dancers' follows"),
                share("another head: carries", sum(other), len(other), "below", MOST,
                      "'The pilots near the taxi drivers' cabins', 'The pilots near the dancers' do not follow")]
    ex = results[0]

    def live(p):
        b, a = ex["prompts"][p]["before"], ex["prompts"][p]["after"]
        return (f"{b['prefers']} -> {a['prefers']} (p(are) {b['p_are']:.2f} -> {a['p_are']:.2f}, "
                f"p(is) {b['p_is']:.2f} -> {a['p_is']:.2f})")
    rows = ([{"item": f"'{ex['edited']}' (edited)", "live": live(ex["edited"]), "published": "are -> is"}]
            + [{"item": f"'{p}' (same head)", "live": live(p), "published": "are -> is (carries)"}
               for p in ex["carries"]]
            + [{"item": f"'{p}' (another head)", "live": live(p), "published": "are -> are (does not carry)"}
               for p in ex["others"]]
            + [{"item": f.name, "live": f.text(), "published": f.rule} for f in findings])
    figure = {"type": "bar", "title": "Fig. 8c over many edits: share of phrases that say 'is' after the edit (%)",
              "x": [f.name for f in findings], "ylabel": "%",
              "series": {"live": [pct(f.value) for f in findings], "GPT-2 XL's single example (paper)": [100.0, 100.0, 0.0]},
              "intervals": {"live": [share_bar(f.k, f.n) for f in findings]}}
    return ModelRun(lm.spec, rows, findings, figure, detail={"example": ex})


@timed
def rome_table_1(lm: LM, n: int, progress: Progress = None, items: Items | None = None) -> ModelRun:
    """Table 1: ROME on each relation's first ``n`` known facts, each edit on its own; the paper's scoring
    (p(new) > p(old) at the probe) gives the findings, the seed's (teacher-forced accuracy of the expected
    string) is shown beside it."""
    rows, findings, live, seed = [], [], {}, {}
    for k, (rid, crit) in enumerate((("P36", "symmetry"), ("P1376", "symmetry"), ("P101", "synonymy"))):
        tick(progress, k / 3, f"editing {rid}")
        known = _known(lm, rid, n)
        ev = evaluate_relation(lm, "rome", rid, subjects=known, seed_scoring=True, measure=items.measure,
                               progress=(lambda f, d, k=k: tick(progress, (k + f) / 3, f"{rid}: {d}")))
        _leave_out_skipped(items, ev)
        pub = published.rome_table_1(rid)
        for c, side, boundary in (("reliability", "above", RELIABLE), (crit, "below", NOT_GENERALISED)):
            f = share(f"{rid} {c}", *_count(ev.facts, c), side, boundary,
                      ", ".join(f"{m} {v[c]}%" for m, v in pub.items()))
            findings.append(f)
            live[f.name], seed[f.name] = pct(f.value), pct((ev.seed_rates or {}).get(c))
            rows.append({"item": f"{rid} {c}: the paper's scoring (the seed's)",
                         "live": f"{f.text()} ({seed[f.name]}%)", "published": f.rule})
        rows.append({"item": f"{rid}: facts edited", "live": f"{ev.n} of the {len(known)} asked (the model's known "
                     f"facts{'' if len(known) < n else f', the first {n}'}; {len(ev.skipped)} could not be edited)",
                     "published": "-"})
    tick(progress, 1.0, "done")
    keys = list(live)
    figure = {"type": "bar", "title": "ROME: reliability against the paper's criteria (%)", "x": keys, "ylabel": "%",
              "series": {"live, the paper's scoring": [live[k] for k in keys],
                         "live, the seed's scoring": [seed[k] for k in keys],
                         **{f"{m} (paper)": [published.ROME_TABLE_1[m][k.split()[0]][k.split()[1]] for k in keys]
                            for m in published.ROME_TABLE_1}},
              "intervals": {"live, the paper's scoring": [share_bar(f.k, f.n) for f in findings]}}
    return ModelRun(lm.spec, rows, findings, figure,
                    detail={"scoring": "the paper's scoring (p(new) > p(old)) decides; the seed's evaluate_edit.py "
                                       "scoring is shown beside it: the paper does not say which produced its numbers",
                            "seed": seed})
