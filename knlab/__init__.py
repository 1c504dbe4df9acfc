"""knlab: where, if anywhere, does a language model keep its knowledge?

The Python API: ``load_model`` a model (the real ``smollm2-135m``, installed from the package index, the
organisms ``world-gpt`` / ``world-bert``, or any supported Hugging Face model), ask it with ``predict``,
serve many users from one ``ModelWorker``, and keep edits as files of a few KB (``save_edits`` /
``load_edits``: the edit, never the edited model).

The package is built in layers, each importing only those below it (``tests/test_layers.py`` checks):

    core       errors, limits, the architecture table, hooks, model loading, tokens, replay, edit specs
    world      the data: facts, paradigms, corpora, prompts (never a method)
    methods    predict, causal tracing, attribution patching, IG attribution, neuron selection,
               interventions, ROME
    studies    what the paper does with the methods: edit reports, edit files, criteria, batch evaluation,
               localisation, paradigm analysis, trace summaries, the claims, the published figures
    organisms  the shipped models' making and measuring: tokenizer, training, model cards
    serve      the model worker, sessions' limits, hosting
    app        the CLI, the plots and the Gradio app
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# The API's names and the modules that hold them. They are imported on first use (PEP 562), not here:
# ``import knlab.core.errors`` runs this file first, and an eager import of the worker or of predict
# would pull torch and the layers above core into every process that wanted one low module.
_API = {
    "InputError": "knlab.core.errors", "KnlabError": "knlab.core.errors",
    "LM": "knlab.core.models", "ModelLoadError": "knlab.core.models", "load_model": "knlab.core.models",
    "weights_checksum": "knlab.core.models",
    "Prediction": "knlab.methods.predict", "predict": "knlab.methods.predict",
    "KnockoutResult": "knlab.methods.knockout", "knockout": "knlab.methods.knockout",
    "SweepResult": "knlab.studies.sweep", "sweep": "knlab.studies.sweep",
    "ModelWorker": "knlab.serve.worker", "default_worker": "knlab.serve.worker",
    "ResultCache": "knlab.serve.result_cache", "Served": "knlab.serve.result_cache",
    "EditRecord": "knlab.studies.edit_files", "save_edits": "knlab.studies.edit_files",
    "load_edits": "knlab.studies.edit_files",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'knlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value  # the next look-up is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
