"""knlab: where, if anywhere, does a language model keep its knowledge?

The Python API: ``load_model`` a model (the real ``smollm2-135m``, installed from the package index, the
organisms ``world-gpt`` / ``world-bert``, or any supported Hugging Face model), ask it with ``predict``,
and serve many users from one ``ModelWorker``.
"""

from knlab.errors import InputError, KnlabError
from knlab.models import LM, ModelLoadError, load_model, weights_checksum
from knlab.predict import Prediction, predict
from knlab.worker import ModelWorker, default_worker

__all__ = ["LM", "InputError", "KnlabError", "ModelLoadError", "ModelWorker", "Prediction", "default_worker",
           "load_model", "predict", "weights_checksum"]
__version__ = "0.1.0"
