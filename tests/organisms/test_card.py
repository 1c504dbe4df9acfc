"""Every shipped model's card is what knlab.organisms.card renders from the metrics saved beside it, and
the one card-writing path writes both (the measuring itself is tested in test_measure_*.py)."""

import json
import shutil

import pytest

from knlab.core.models import ASSETS
from knlab.methods.attribute import IG_STEPS
from knlab.methods.neurons import ADAPTIVE_THRESHOLD, TAU_START
from knlab.organisms import card
from knlab.studies import published

MODELS = ["world-gpt", "world-bert", "smollm2-135m"]


def saved(model: str) -> dict:
    return json.loads((ASSETS / "models" / model / "metrics.json").read_text())


@pytest.mark.parametrize("model", MODELS)
def test_committed_card_is_what_its_saved_metrics_render(model):
    folder = ASSETS / "models" / model
    rendered = card.render_card(saved(model), card.read_recipe(folder))
    assert rendered == (folder / "README.md").read_text(), (
        f"{folder}/README.md is stale: re-render it from metrics.json with knlab.organisms.card.render_card")


@pytest.mark.parametrize("model", MODELS)
def test_write_card_is_one_path_for_every_model(model, tmp_path, monkeypatch):
    """write_card measures an organism with measure_organism and a pretrained model with measure_pretrained,
    saves the metrics as it writes them and renders the card from them."""
    calls = []
    monkeypatch.setattr(card, "measure_organism",
                        lambda kind, path, log: calls.append(("organism", kind)) or saved(model))

    def pretrained(spec, size, log, parts, previous, checkpoint):
        calls.append(("pretrained", spec, size, parts, previous is not None))
        checkpoint({"model": spec})  # a section finished: the partial metrics are on disk
        assert json.loads((tmp_path / "metrics.json").read_text()) == {"model": spec}
        return saved(model)

    monkeypatch.setattr(card, "measure_pretrained", pretrained)
    if model in card.ORGANISM_KINDS:
        shutil.copy(ASSETS / "models" / model / "recipe.json", tmp_path)
    card.write_card(model, tmp_path, size=3, log=lambda s: None)
    assert calls == ([("organism", model.removeprefix("world-"))] if model in card.ORGANISM_KINDS
                     else [("pretrained", model, 3, None, False)])
    assert (tmp_path / "README.md").read_text() == (ASSETS / "models" / model / "README.md").read_text()
    assert (tmp_path / "metrics.json").read_text() == (ASSETS / "models" / model / "metrics.json").read_text()


def test_re_measuring_some_sections_keeps_the_others(tmp_path, monkeypatch):
    (tmp_path / "metrics.json").write_text(json.dumps(saved("smollm2-135m"), indent=1))
    seen = {}

    def pretrained(spec, size, log, parts, previous, checkpoint):
        seen.update(parts=parts, previous=previous)
        return previous

    monkeypatch.setattr(card, "measure_pretrained", pretrained)
    card.write_card("smollm2-135m", tmp_path, parts=("editing",), log=lambda s: None)
    assert seen == {"parts": ("editing",), "previous": saved("smollm2-135m")}


def test_settings_and_published_figures_come_from_their_sources():
    """The card's prose reads the methods' settings and the paper's figures where they are defined."""
    text = card.render_card(saved("smollm2-135m"))
    assert f"Integrated gradients ({IG_STEPS} steps" in text
    assert f"adaptive threshold\n{ADAPTIVE_THRESHOLD:g}, tau search from {TAU_START:g}" in text
    for model, rows in published.ROME_TABLE_1.items():
        for rid, row in rows.items():
            for criterion, value in row.items():
                assert f"{value:.2f}%" in text, (model, rid, criterion)
    for model in published.LOCALISATION:
        assert published.KN_LAYERS[model] in text


def test_markdown_table():
    assert card.markdown_table(["a", "b"], [[1, "x"]]) == "| a | b |\n|---|---|\n| 1 | x |"
