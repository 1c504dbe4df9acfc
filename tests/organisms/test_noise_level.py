"""Each shipped model's trace noise comes from its own embeddings, as the registry records them."""

import pytest

from knlab.core.models import SHIPPED_MODELS
from knlab.methods.corruption import embedding_std, noise_level
from knlab.world.training_corpus import build_documents


@pytest.mark.parametrize("name", ["world-gpt", "world-bert", "smollm2-135m"])
def test_noise_level_reference_is_each_models_own(name, request):
    """The trace's noise comes from the embedding std each shipped model carries (so serving never rebuilds
    the corpus): re-measured here over the world corpus's tokens, as the registry says it was."""
    fixture = {"world-gpt": "gpt", "world-bert": "bert", "smollm2-135m": "smol"}[name]
    lm = request.getfixturevalue(fixture)
    texts = [d.text for d in build_documents()][:4000]
    measured = embedding_std(lm, texts)
    assert abs(measured - SHIPPED_MODELS[name].embedding_std) <= 1e-6 * measured, (
        f"{name}'s embedding std is now {measured!r}: write it into knlab/core/models.py SHIPPED_MODELS")
    assert noise_level(lm) == pytest.approx(3 * measured, rel=1e-6)
    assert lm.embedding_std == SHIPPED_MODELS[name].embedding_std
