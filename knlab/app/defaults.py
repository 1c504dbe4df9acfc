"""What each tab starts with on each shipped model: inputs that model answers (a masked model's prompts carry
a [MASK]; ROME is not offered on a masked model; a causal model gets a paradigm it can be asked), and sizes
that keep the real model's first click to about a minute. Changing the model in the header puts these in
every tab; a model knlab does not ship keeps the causal organism's."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TabDefaults:
    prompt: str  # a fact prompt the model answers (Predict, Trace, Attribute, Edit)
    subject: str  # the prompt's subject (Trace, Edit)
    new_target: str  # the Edit tab's new object
    edit_methods: tuple[str, ...]  # the edit methods offered ("rome" only for causal models)
    paradigm: str  # the Attribute tab's paradigm: one this model can be asked
    paradigm_prompts: int
    evaluate_facts: int
    note: str = ""  # shown next to the choices a model does not have

    @property
    def edit_method(self) -> str:
        return self.edit_methods[0]


DEFAULTS: dict[str, TabDefaults] = {
    "smollm2-135m": TabDefaults("The capital of France is", "France", "Rome", ("rome", "kn"),
                                "determiner_noun_agreement_1", 4, 1),
    "world-gpt": TabDefaults("The capital of Canada is", "Canada", "Rome", ("rome", "kn"),
                             "determiner_noun_agreement_1", 40, 10),
    "world-bert": TabDefaults("The capital of Canada is [MASK] .", "Canada", "Rome", ("kn",),
                              "determiner_noun_agreement_2", 40, 10,
                              note="ROME edits causal language models: a masked model offers the KN edit only"),
}


def defaults_for(model: str | None) -> TabDefaults:
    return DEFAULTS.get((model or "").strip(), DEFAULTS["world-gpt"])
