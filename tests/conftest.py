import os
import subprocess
import sys
import time
import urllib.request

import pytest
import torch

from helpers import REPO, free_port

sys.path.insert(0, str(REPO))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# results kept on disk by an earlier run must never answer a test (tests of the disk cache give it a folder)
os.environ.setdefault("KNLAB_CACHE_DISK_MB", "0")
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))


@pytest.fixture(scope="session")
def gpt():
    from knlab.core.models import load_model
    return load_model("world-gpt", device="cpu")


@pytest.fixture(scope="session")
def bert():
    from knlab.core.models import load_model
    return load_model("world-bert", device="cpu")


@pytest.fixture(scope="session")
def smol():
    """The real model, SmolLM2-135M (installed by ./run_tests.sh; converted once into knlab's cache)."""
    from knlab.core.models import load_model
    return load_model("smollm2-135m", device="cpu")


@pytest.fixture(scope="session")
def app_url(tmp_path_factory):
    """The real app, started as a user would (python app.py), on a free loopback port."""
    port = free_port()
    log = tmp_path_factory.mktemp("app") / "app.log"
    # the page opens on world-gpt so the browser tests stay fast; the real model is the default otherwise
    # (tests/test_ui.py) and is driven through the API (tests/test_app.py) and the browser explicitly
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "KNLAB_DEFAULT_MODEL": "world-gpt",
           "KNLAB_WARM": "0"}  # pages open empty: the examples and their warm-up: tests/app/test_prefill.py
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except Exception:
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError(f"app did not start: {log.read_text()[-2000:]}")
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


# The families whose fast paths (replayed blocks, cached prefixes, staged IG rows) tests/methods compares with
# the straightforward implementations of tests/reference/; every family of the table runs the conformance
# suite, tests/test_families.py, whose properties hold whatever path ran.
FAMILIES = ["gpt2", "gpt_neo", "gptj", "gpt_neox", "llama", "qwen2", "bert"]


@pytest.fixture(params=FAMILIES)
def tiny_lm(request):
    """A randomly initialised model of each family, with the shipped world tokenizer (masked: world-bert's)."""
    from knlab.core.models import from_model
    from tiny_models import TINY
    family = request.param
    tok = request.getfixturevalue("bert" if family == "bert" else "gpt").tokenizer
    torch.manual_seed(0)
    model = TINY[family]()
    model.resize_token_embeddings(len(tok))
    return from_model(model.eval(), tok, spec=f"tiny-{family}")


def pytest_itemcollected(item):
    """A test of the app started as a user would start it (``app_url``: ``python app.py``, ~20 s to boot
    on 2 cores, then HTTP) is a system test: the full lane runs it; the fast lane tests the same functions
    in-process (tests/app/test_*_tab.py, tests/serve/test_worker.py, tests/studies/test_edit_report.py)."""
    if "app_url" in item.fixturenames:
        item.add_marker(pytest.mark.slow)


@pytest.hookimpl(trylast=True)  # after -m / -k have deselected what will not run
def pytest_collection_modifyitems(session, config, items):
    """The Docker test's pip resolution takes ~30 s of one core: started here, before the first test, it
    runs beside the early tests instead of on its own (tests/test_docker.py)."""
    for item in items:
        if item.nodeid.endswith("test_docker.py::test_docker_build_and_start"):
            item.module.start_resolving_early()
            config.add_cleanup(item.module.drop_early)
            break
