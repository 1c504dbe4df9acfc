"""The paper's published figures, in one place, as data (docs/paper.md; the paper's figure or table named
with each). Everything that shows a published number beside a live one (the claims, the edit
evaluation, the model cards, the app) reads it from here. Never computed: transcribed."""

from __future__ import annotations

SOURCE = 'Niu et al., "What does the Knowledge Neuron Thesis Have to do with Knowledge?", ICLR 2024'

# Table 1: ROME's reliability beside the paper's new criteria, per model and relation (percent).
ROME_TABLE_1: dict[str, dict[str, dict[str, float]]] = {
    "GPT-2 XL": {"P101": {"reliability": 99.82, "synonymy": 52.35},
                 "P1376": {"reliability": 96.37, "symmetry": 23.71},
                 "P36": {"reliability": 99.79, "symmetry": 25.17}},
    "LLaMA-2-7B": {"P101": {"reliability": 100.0, "synonymy": 58.36},
                   "P1376": {"reliability": 100.0, "symmetry": 33.40},
                   "P36": {"reliability": 100.0, "symmetry": 33.64}},
}

# Fig. 6c, quoted by the paper from Yao et al. 2023: KN edit reliability (percent).
KN_EDIT_RELIABILITY = {("ZsRE", "T5-XL"): 22.51, ("ZsRE", "GPT-J"): 11.34,
                       ("CounterFact", "T5-XL"): 47.86, ("CounterFact", "GPT-J"): 1.66}
KN_EDIT_NOTE = ("Yao et al. 2023 (quoted in the paper's Fig. 6c; CounterFact / ZsRE, not these relations): "
                "KN edit reliability CounterFact GPT-J 1.66%, T5-XL 47.86%; ZsRE GPT-J 11.34%, T5-XL 22.51%")

# Fig. 2 / Table 4 (BERT, determiner_noun_agreement_2): the share of pairs of each determiner in which the
# neuron (layer, index) is a KN.
KN_SHARING = {
    (10, 2096): {"this": 0.93, "that": 0.75, "these": 0.0, "those": 0.0, "table_4": {"this": 0.88, "that": 0.81}},
    (9, 1094): {"this": 0.0, "that": 0.0, "these": 1.0, "those": 1.0},
}

# Fig. 3 / 6a: relative change of p(determiner) when its number's KNs are suppressed (percent, as printed).
DET_SUPPRESSION = {"this": 316.0, "these": -124.0, "that": 208.0, "those": -158.0}

# Fig. 6b: accuracy (percent) before -> after suppressing the KNs, BERT.
OVERTURN = {"determiner_noun_agreement_2": (100.0, 94.8),
            "determiner_noun_agreement_irregular_2": (99.5, 96.9),
            "determiner_noun_agreement_with_adj_2": (97.1, 94.4),
            "determiner_noun_agreement_with_adj_irregular_2": (97.4, 95.4)}

# Fig. 5a / Table 8: |KN| / tau / R^2_1 per paradigm (and two relations), per model.
_DET = ("determiner_noun_agreement_1", "determiner_noun_agreement_2", "determiner_noun_agreement_irregular_1",
        "determiner_noun_agreement_irregular_2", "determiner_noun_agreement_with_adj_1",
        "determiner_noun_agreement_with_adj_2", "determiner_noun_agreement_with_adj_irregular_1",
        "determiner_noun_agreement_with_adj_irregular_2")
LOCALISATION: dict[str, dict[str, tuple[float, float, float]]] = {
    "BERT-base": dict(zip(_DET, [(3.94, .71, .56), (1.86, .62, .56), (5.53, .73, .64), (2.45, .67, .55),
                                 (8.88, .78, .67), (2.26, .67, .57), (9.79, .78, .67), (2.60, .69, .58)]))
    | {"P101": (.167, .515, .399), "P1303": (10.46, .814, .684)},
    # the four _1 paradigms, in the order of _DET's odd entries
    "GPT-2": dict(zip(_DET[0::2], [(0.06, .45, .15), (1.32, .58, .24), (1.31, .62, .17), (0.12, .51, .15)])),
    "LLaMA-2-7B": dict(zip(_DET[0::2], [(3.38, .44, .24), (4.93, .48, .46), (3.38, .44, .24), (4.55, .45, .48)])),
}

# Fig. 5b / 12: where the KNs sit.
KN_LAYERS = {"BERT-base": "layers 7-11, mostly 9-11, for paradigms and relations alike",
             "GPT-2": "layers 0 and 3-11", "LLaMA-2-7B": "mostly layers 29-31"}

# Fig. 11: subject-verb agreement KNs suppressed, the verbs charted.
SV_VERBS = (("are", "is"), ("were", "was"), ("have", "has"), ("run", "runs"), ("fight", "fights"),
            ("throw", "throws"), ("see", "sees"))
SV_AGREEMENT = {"GPT-2": "singular KNs lower singular verbs and barely touch plural ones; plural KNs act more strongly",
                "LLaMA-2-7B": "weak: -7% to +2% (singular KNs), 0% to +20% (plural KNs)"}

# Fig. 7 / 13 (GPT-2 XL): causal traces of facts and of grammar.
TRACE_SYNTAX = {
    "examples": [("The Space Needle is in downtown", "Space Needle", "Seattle"),
                 ("Rebecca was criticizing these good", "these", "documentaries"),
                 ("The key to the cabinets", "The key", "is")],
    "facts": "P19: the early-MLP (last subject token) / late-attention (last token) split, with a weaker late MLP",
    "determiner_noun_agreement_with_adj_1": "no such split",
    "subject_verb_agreement": "no such split: MLP strongest at layers 30-35 of 48, attention around 25",
}

# After the paper: three follow-up results (docs/paper.md, "After the paper"); not Niu et al.'s.
FOLLOW_UPS = {
    "Hase et al. 2023": 'Hase, Bansal, Kim & Ghandeharioun, "Does Localization Inform Editing?", NeurIPS 2023 '
                        "(code: google/belief-localization)",
    "Geva et al. 2023": 'Geva, Bastings, Filippova & Globerson, "Dissecting Recall of Factual Associations in '
                        'Auto-Regressive Language Models", EMNLP 2023 (code: google-research/dissecting_factual_predictions)',
    "Zhang & Nanda 2024": 'Zhang & Nanda, "Towards Best Practices of Activation Patching in Language Models: Metrics '
                          'and Methods", ICLR 2024',
}
HASE = {"peak": "GPT-J, CounterFact: the trace's peak layer does not tell which layer ROME edits best; "
                "edits succeed at early-to-mid MLP layers whatever the trace says",
        "r2": "GPT-J, CounterFact: the edit layer explains far more of the rewrite score's variance than the "
              "tracing effect, which adds next to nothing beyond the layer"}
HASE_ADDED_BOUNDARY = 0.05  # knlab's reading of "next to nothing": under 5 points of R^2
GEVA = {"where": "GPT-2 XL, GPT-J (Fig. 2): cutting last -> subject drops p(answer) sharply in the upper-middle "
                 "layers (a window of layers around each), and not elsewhere",
        "order": "GPT-2 XL, GPT-J: two critical points, the relation's (non-subject) positions first, the subject's "
                 "later",
        "against": "GPT-2 XL, GPT-J: cutting last -> last barely changes p(answer)"}
ZHANG_NANDA = {"both": "GPT-2 XL (Fig. 2, MLP at the last subject token, window 5): symmetric token replacement "
                       "suggests a much weaker early MLP peak than Gaussian noise",
               "weaker": "GPT-2 XL (Fig. 2): STR's MLP peak is much weaker than GN's, under either metric"}

# Table 2: the 16 BLiMP paradigms the paper uses.
PARADIGMS = ("anaphor_gender_agreement", "anaphor_number_agreement") + _DET + (
    "distractor_agreement_relational_noun", "distractor_agreement_relative_clause",
    "irregular_plural_subject_verb_agreement_1", "irregular_plural_subject_verb_agreement_2",
    "regular_plural_subject_verb_agreement_1", "regular_plural_subject_verb_agreement_2")


def rome_table_1(relation: str) -> dict[str, dict[str, float]]:
    """Table 1's row of ``relation`` for each model that has one."""
    return {model: rows[relation] for model, rows in ROME_TABLE_1.items() if relation in rows}


def localisation_row(model: str, item: str) -> str:
    """'|KN| / tau / R^2_1' as published, or '-' where the paper has no such row."""
    row = LOCALISATION.get(model, {}).get(item)
    return " / ".join(f"{x:g}" for x in row) if row else "-"


def most_overturned() -> float:
    """Fig. 6b's largest drop in accuracy, in points: the paper's "at most 5.2% of predictions overturned"."""
    return round(max(before - after for before, after in OVERTURN.values()), 1)


def det_suppression_text() -> str:
    """Fig. 3's relative changes as printed: 'this +316%, these -124%, ...'."""
    return ", ".join(f"{det} {change:+g}%" for det, change in DET_SUPPRESSION.items())
