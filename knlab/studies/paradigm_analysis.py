"""The paper's analysis of a grammatical paradigm (Niu et al. 2024, section 3 of docs/paper.md): find the
knowledge neurons shared by a paradigm's prompts of one target type (as the paper's seed code groups them),
suppress them, and chart how the probability of each of the 24 modifiers changes (relative change, two-sample
t-test per token) and how often the model's grammatical preference is overturned."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from knlab.core.errors import InputError
from knlab.core.limits import check_count
from knlab.core.models import LM
from knlab.core.tokens import single_token
from knlab.methods.attribute import IG_STEPS, attribute
from knlab.methods.intervene import NeuronIntervention
from knlab.methods.neurons import select
from knlab.methods.predict import answer_logits
from knlab.world import paradigms
from knlab.world.training_corpus import evaluation_pairs


@dataclass
class TokenChange:
    token: str
    group: str  # plural / singular / neutral
    pre: float
    post: float
    rel_change: float  # percent, (post - pre) / min(pre, post)
    p_value: float


@dataclass
class TargetGroup:
    """One target type's prompts of a paradigm (its critical word singular, or plural; feminine, or masculine), as the
    paper's seed code takes them: ``search_kns(paradigm, search_target)`` finds the KNs of one type's prompts at a
    time (up to 100), and the paper's Fig. 2 suppresses the plural prompts' neuron in the plural prompts
    (``localise_kn.ipynb``). Their shared KNs, and what suppressing those does to these prompts."""

    target: str  # paradigms.target_type: "sg" / "pl", or "f" / "m"
    neurons: list[tuple[int, int]]
    tau: float
    r2_1: float
    n_prompts: int
    tokens: list[TokenChange]
    overturned: float
    correct_before: float
    correct_after: float

    def to_json(self) -> dict:
        return {"target": self.target, "neurons": [[l, i] for l, i in self.neurons], "tau": self.tau,
                "r2_1": self.r2_1, "n_prompts": self.n_prompts,
                "tokens": [{"token": t.token, "group": t.group, "pre": t.pre, "post": t.post,
                            "rel_change": t.rel_change, "p_value": t.p_value} for t in self.tokens],
                "overturned": self.overturned, "correct_before": self.correct_before,
                "correct_after": self.correct_after}


@dataclass
class ParadigmAnalysis:
    """A paradigm analysed per target type (``groups``); its |KN|, tau and R^2_1 are the means over the groups, the
    paper's per-paradigm figures (Table 8), as ``localisation`` records them."""

    model: str
    paradigm: str
    site: str
    groups: list[TargetGroup]

    @property
    def kn_count(self) -> float:
        return float(np.mean([len(g.neurons) for g in self.groups]))

    @property
    def tau(self) -> float:
        return float(np.mean([g.tau for g in self.groups]))

    @property
    def r2_1(self) -> float:
        return float(np.mean([g.r2_1 for g in self.groups]))

    @property
    def n_prompts(self) -> int:
        return sum(g.n_prompts for g in self.groups)

    @property
    def overturned(self) -> float:
        """The share of all the paradigm's prompts whose grammatical preference the suppression overturned."""
        return sum(g.overturned * g.n_prompts for g in self.groups) / self.n_prompts

    def to_json(self) -> dict:
        return {"model": self.model, "paradigm": self.paradigm, "site": self.site,
                "grouping": "by target type, the seed's", "kn": self.kn_count, "tau": self.tau, "r2_1": self.r2_1,
                "n_prompts": self.n_prompts, "overturned": self.overturned,
                "groups": [g.to_json() for g in self.groups]}


def _prompt(lm: LM, p: paradigms.MinimalPair) -> str:
    if lm.masked:
        return p.masked_prompt
    if p.critical_index <= p.controller_index:
        raise InputError(f"in {p.paradigm} the critical word comes before the word it agrees with; "
                         f"a causal model cannot be asked for it: use a masked model (world-bert)")
    return p.causal_prefix()


@torch.no_grad()
def _probs(lm: LM, prompts: list[str]) -> np.ndarray:
    return torch.softmax(answer_logits(lm, prompts), -1).numpy()


def usable_pairs(lm: LM, name: str, n: int) -> tuple[list[paradigms.MinimalPair], list[str]]:
    """Up to ``n`` of the paradigm's evaluation pairs this model can be asked (for a causal model, the
    critical word after the word it agrees with) whose two critical words are single tokens of its
    vocabulary (a BPE model splits some), with their prompts. Pairs are dropped, never the paradigm."""
    if name not in paradigms.paradigm_names():
        raise InputError(f"unknown paradigm {name!r}; known: {', '.join(paradigms.paradigm_names())}")
    pairs = evaluation_pairs(name, max(n, 4 * n))
    if pairs and not lm.masked and pairs[0].critical_index <= pairs[0].controller_index:
        _prompt(lm, pairs[0])  # raises the clear message
    kept = [p for p in pairs if single_token(lm, p.good_token) is not None and single_token(lm, p.bad_token)
            is not None][:n]
    if len(kept) < 2:
        raise InputError(f"{name}: fewer than two of its pairs have single-token critical words on {lm.spec}")
    return kept, [_prompt(lm, p) for p in kept]


def usable_groups(lm: LM, name: str, n: int) -> dict[str, tuple[list[paradigms.MinimalPair], list[str]]]:
    """The paradigm's usable pairs (``usable_pairs``) grouped as the paper's seed code groups them for its KN
    search (``paradigms.target_type``: by the critical word's number, or gender), up to ``n`` pairs a group;
    a group with fewer than two pairs is left out (R^2_1 compares prompts)."""
    pairs, prompts = usable_pairs(lm, name, 4 * n)
    groups: dict[str, tuple[list[paradigms.MinimalPair], list[str]]] = {}
    for p, prompt in zip(pairs, prompts):
        ps, qs = groups.setdefault(paradigms.target_type(p), ([], []))
        if len(ps) < n:
            ps.append(p)
            qs.append(prompt)
    return {k: v for k, v in sorted(groups.items()) if len(v[0]) >= 2}


@dataclass
class Suppression:
    """What suppressing a set of neurons does to a paradigm's prompts."""

    tokens: list[TokenChange]  # the 24 modifiers (those that are single tokens of the model)
    correct_before: float  # share of pairs where p(good) > p(bad)
    correct_after: float
    overturned: float  # share of pairs correct before and wrong after


def suppress(lm: LM, pairs: list[paradigms.MinimalPair], prompts: list[str], neurons: list[tuple[int, int]],
             words: dict[str, list[str]] | None = None) -> Suppression:
    """Suppress ``neurons`` at every prompt's prediction position: each word's relative probability change
    with a two-sample t-test (``words``: group -> words, default the paper's 24 modifiers), and how many
    grammatical preferences are overturned."""
    groups = words or paradigms.modifiers()
    vocab = [(tok, g) for g, toks in groups.items() for tok in toks if single_token(lm, tok) is not None]
    ids = [single_token(lm, t) for t, _ in vocab]
    good = [single_token(lm, p.good_token) for p in pairs]
    bad = [single_token(lm, p.bad_token) for p in pairs]
    before = _probs(lm, prompts)
    if neurons:
        with NeuronIntervention(tuple(neurons), "suppress").apply(lm):
            after = _probs(lm, prompts)
    else:
        after = before.copy()
    rows = np.arange(len(pairs))
    ok_before = before[rows, good] > before[rows, bad]
    ok_after = after[rows, good] > after[rows, bad]
    from scipy import stats  # here, not at the top: 1.1 s of every app start for a test few requests run

    changes = []
    for (tok, g), i in zip(vocab, ids):
        pre, post = float(before[:, i].mean()), float(after[:, i].mean())
        rel = 100.0 * (post - pre) / max(min(pre, post), 1e-12)
        if np.allclose(before[:, i], after[:, i]):
            pval = 1.0
        else:
            pval = float(stats.ttest_ind(before[:, i], after[:, i]).pvalue)
        changes.append(TokenChange(tok, g, pre, post, rel, pval))
    return Suppression(changes, float(ok_before.mean()), float(ok_after.mean()), float((ok_before & ~ok_after).mean()))


def analyse(lm: LM, name: str, n: int = 40, steps: int = IG_STEPS, progress=None,
            site: str = "activation") -> ParadigmAnalysis:
    """The paradigm's KNs per target type, as the paper's seed finds them (``usable_groups``: up to ``n`` prompts a
    type, the critical word as the target), each type's ``suppress``ed in its own prompts."""
    n = check_count(n, "paradigm_prompts", "the number of prompts", low=2)
    groups = usable_groups(lm, name, n)
    if not groups:
        raise InputError(f"{name}: no target type has two prompts {lm.spec} can be asked")
    total, done, out = sum(len(ps) for ps, _ in groups.values()), 0, []
    for target, (pairs, prompts) in groups.items():
        maps = []
        for prompt, p in zip(prompts, pairs):
            maps.append(attribute(lm, prompt, p.good_token, steps, site=site).scores)
            done += 1
            if progress:
                progress(done / (total + 1), f"{target}: attributing prompt {len(maps)}/{len(pairs)}")
        sel = select(maps)
        sup = suppress(lm, pairs, prompts, sel.neurons)
        out.append(TargetGroup(target, sel.neurons, sel.tau, sel.r2_1, len(pairs), sup.tokens, sup.overturned,
                               sup.correct_before, sup.correct_after))
    return ParadigmAnalysis(lm.spec, name, site, out)
