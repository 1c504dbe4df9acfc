"""Each shipped model brings inputs every tab can answer (tests/app/test_browser.py presses every tab's button
with them, on every shipped model)."""

from knlab.app.defaults import DEFAULTS, defaults_for
from knlab.app.tabs.attribute import attribute_defaults
from knlab.app.tabs.edit import edit_defaults
from knlab.app.tabs.evaluate import evaluate_defaults
from knlab.core.models import SHIPPED_MODELS
from knlab.world import paradigms


def test_every_shipped_model_has_defaults_that_fit_it():
    assert set(DEFAULTS) == set(SHIPPED_MODELS)
    for name, d in DEFAULTS.items():
        masked = name == "world-bert"
        assert ("[MASK]" in d.prompt) == masked and d.subject in d.prompt
        assert ("rome" in d.edit_methods) == (not masked) and (bool(d.note) == masked)
        pair = paradigms.minimal_pairs(d.paradigm, 1)[0]
        assert masked or pair.critical_index > pair.controller_index  # a causal model can be asked it
    assert defaults_for("gpt2") == DEFAULTS["world-gpt"]  # a hub model keeps the causal organism's


def test_changing_the_model_puts_its_defaults_in_every_tab():
    for name, d in DEFAULTS.items():
        assert attribute_defaults(name)[0] == d.prompt and attribute_defaults(name)[2] == d.paradigm
        method, prompt, subject, target = edit_defaults(name)
        assert method["choices"] == list(d.edit_methods) and method["value"] == d.edit_method
        assert (prompt, subject, target) == (d.prompt, d.subject, d.new_target)
        assert evaluate_defaults(name)[0]["value"] == d.edit_method
    assert "ROME edits causal" in edit_defaults("world-bert")[0]["info"]


def test_the_lesson_opens_each_step_in_its_tab_with_every_tab_on_the_lessons_model():
    """The app's wiring, without a browser (tests/app/test_browser.py presses the buttons): every tab registers
    the inputs a lesson step fills in, and a model set by the app brings every tab's defaults for it."""
    from knlab.app.ui import build_app
    from knlab.studies.lesson import STEPS, lesson_model
    app = build_app()
    ctx = app.knlab_context
    for s in STEPS:
        names = ctx.fields[s.tab]
        for key in s.inputs(lesson_model()):
            assert (key in names) if s.tab != "Paper" else (f"claim:{s.inputs(lesson_model())[key]}" in names)
    filled = ctx.defaults_for_all("world-bert")
    prompts = [v for k, v in filled.items() if getattr(k, "elem_id", "") and k.elem_id.endswith("-prompt")]
    assert len(prompts) == 4 and all(v == DEFAULTS["world-bert"].prompt for v in prompts)
    methods = [v for k, v in filled.items() if getattr(k, "elem_id", "") in ("edit-method", "evaluate-method")]
    assert len(methods) == 2 and all(m["choices"] == ["kn"] for m in methods)
