"""knlab: where, if anywhere, does a language model keep its knowledge?

The Python API: ``load_model`` a model (the real ``smollm2-135m``, installed from the package index, the
organisms ``world-gpt`` / ``world-bert``, or any supported Hugging Face model), ask it with ``predict``,
and serve many users from one ``ModelWorker``.

The package is built in layers, each importing only those below it (``tests/test_layers.py`` checks):

    core       errors, limits, the architecture table, hooks, model loading, tokens, replay, edit specs
    world      the data: facts, paradigms, corpora, prompts (never a method)
    methods    predict, causal tracing, attribution patching, IG attribution, neuron selection,
               interventions, ROME
    studies    what the paper does with the methods: edit reports, criteria, batch evaluation,
               localisation, paradigm analysis, trace summaries, the claims, the published figures
    organisms  the shipped models' making and measuring: tokenizer, training, model cards
    serve      the model worker, sessions' limits, hosting
    app        the CLI, the plots and the Gradio app
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

from knlab.core.errors import InputError, KnlabError
from knlab.core.models import LM, ModelLoadError, load_model, weights_checksum
from knlab.methods.predict import Prediction, predict
from knlab.serve.worker import ModelWorker, default_worker

__all__ = ["LM", "InputError", "KnlabError", "ModelLoadError", "ModelWorker", "Prediction", "default_worker",
           "load_model", "predict", "weights_checksum"]
__version__ = "0.1.0"

# The module paths of the flat package knlab grew up as (``from knlab.trace import trace`` in notebooks,
# ``knlab.edit`` in the README) keep working: each names the same module object as its new home.
MOVED = {
    "knlab.errors": "knlab.core.errors", "knlab.arch": "knlab.core.arch", "knlab.nethook": "knlab.core.nethook",
    "knlab.models": "knlab.core.models", "knlab.packaged": "knlab.core.packaged", "knlab.replay": "knlab.core.replay",
    "knlab.limits": "knlab.core.limits", "knlab.predict": "knlab.methods.predict",
    "knlab.trace": "knlab.methods.trace", "knlab.patching": "knlab.methods.patching",
    "knlab.attribute": "knlab.methods.attribute", "knlab.neurons": "knlab.methods.neurons",
    "knlab.intervene": "knlab.methods.intervene", "knlab.rome": "knlab.methods.rome",
    "knlab.evaluate": "knlab.studies.evaluate", "knlab.edit": "knlab.studies.edit",
    "knlab.paradigm": "knlab.studies.paradigm", "knlab.paper": "knlab.studies.paper",
    "knlab.pretrained_card": "knlab.organisms.pretrained_card", "knlab.corpora": "knlab.world.corpora",
    "knlab.worker": "knlab.serve.worker", "knlab.hosting": "knlab.serve.hosting",
    "knlab.cli": "knlab.app.cli", "knlab.plots": "knlab.app.plots", "knlab.ui": "knlab.app.ui",
}


class _OldPaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old path as its new module (the same object, not a copy: patching one patches both)."""

    specs: dict = {}

    def find_spec(self, name, path=None, target=None):
        if name in MOVED or name.split(".")[0:2] == ["knlab", "rome"] and name != "knlab.rome":
            return importlib.util.spec_from_loader(name, self)
        return None

    def create_module(self, spec):
        new = MOVED.get(spec.name) or spec.name.replace("knlab.rome.", "knlab.methods.rome.", 1)
        module = importlib.import_module(new)
        self.specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module) -> None:
        module.__spec__ = self.specs[module.__name__]  # the import system stamped the old name's spec on it


sys.meta_path.append(_OldPaths())
# ``knlab.predict`` is also the function above: alias the already-imported modules directly, so that a
# later ``import knlab.predict`` finds the module in sys.modules and leaves the attribute (the function) be.
for _old, _new in MOVED.items():
    if _new in sys.modules:
        sys.modules.setdefault(_old, sys.modules[_new])
