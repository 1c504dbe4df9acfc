"""knlab's app on ZeroGPU's contract, on a CPU (tests/serve/zerogpu_app.py): every tab's request answers through
spaces' own process wrapper with sessions kept apart; and with the real ``spaces`` and ``SPACES_ZERO_GPU`` set,
the app starts and its tokens preview answers from a handler's thread without touching a device. Both start
the app as a Space would (~30 s on 2 cores): system tests, in the full lane."""

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from gradio_client import Client
from helpers import REPO, free_port

pytestmark = pytest.mark.slow
LAUNCHER = Path(__file__).with_name("zerogpu_app.py")


def start(mode: str, tmp_path: Path, **env: str):
    port = free_port()
    log = tmp_path / f"{mode}.log"
    env = {**os.environ, "KNLAB_ZEROGPU": mode, "GRADIO_SERVER_PORT": str(port), "HF_HUB_OFFLINE": "1",
           "GRADIO_ANALYTICS_ENABLED": "False", "KNLAB_HOSTED": "1", "KNLAB_MODELS": "world-gpt,world-bert",
           "KNLAB_DEFAULT_MODEL": "world-gpt", **env}
    fh = open(log, "w")
    proc = subprocess.Popen([sys.executable, str(LAUNCHER)], cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    while time.time() < deadline:
        text = log.read_text()
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited: {text[-3000:]}")
        if "READY" in text and ("PREVIEW" in text or "KNLAB_PREVIEW" not in env):
            return proc, f"http://127.0.0.1:{port}/", log
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"the app did not start: {log.read_text()[-3000:]}")


def stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def line(log: Path, tag: str):
    return json.loads(next(ln for ln in log.read_text().splitlines() if ln.startswith(tag + " ")).split(" ", 1)[1])


def test_every_tab_answers_through_zerogpus_wrapper_and_sessions_stay_apart(tmp_path):
    proc, url, log = start("standin", tmp_path)
    try:
        alice, bob = Client(url, verbose=False), Client(url, verbose=False)

        def top(client, prompt="The capital of Canada is"):
            return client.predict("world-gpt", prompt, 3, api_name="/predict")[1]["top"][0]["token"]
        assert top(alice) == "Ottawa"
        traced = alice.predict("world-gpt", "The capital of Canada is", "Canada", "", 3, 3, "3sd", 0, True, "noise", "",
                               "prob", api_name="/trace")
        trace = next(o for o in traced if isinstance(o, dict) and "answer" in o)
        assert trace["answer"] == "Ottawa" and trace["clean"] > trace["corrupted"]
        attribution = alice.predict("world-gpt", "The capital of Canada is", "", 3, "ig", api_name="/attribute")
        assert next(o for o in attribution if isinstance(o, dict) and "target" in o)["target"] == "Ottawa"
        rome = alice.predict("world-gpt", "rome", "The capital of Canada is", "Canada", "Rome", None, "dai", "first-token",
                             api_name="/edit")
        assert rome[6]["criteria"]["reliability"] == 1.0
        assert top(alice) == "Rome" and top(bob) == "Ottawa"
        kn = bob.predict("world-gpt", "kn", "The capital of France is", "France", "Berlin", None, "dai", "first-token", api_name="/edit")
        assert kn[6]["method"] == "kn" and top(alice, "The capital of France is") == "Paris"
        with pytest.raises(Exception) as info:  # knlab's one line, not ZeroGPU's class name
            alice.predict("world-gpt", "rome", "The capital of Canada is", "Canda", "Rome", None, "dai", "first-token",
                          api_name="/edit")
        assert "not in the prompt" in str(info.value) and "Traceback" not in str(info.value)
        assert alice.predict(api_name="/undo")[1] == [] and top(alice) == "Ottawa"
        assert bob.predict(api_name="/reset")[1] == []
        claim = bob.predict(2, api_name="/paper_overturn")[3]
        assert claim["claim"] == "overturn" and [r["model"] for r in claim["runs"]] == ["world-bert"]
        status = alice.predict(api_name="/status")
        assert status["in_gpu_processes"] and all(m["unchanged"] for m in status["models"].values())
        assert status["models"]["world-gpt"]["base"] == line(log, "READY")["world-gpt"]
    finally:
        stop(proc)
    assert "SPACES_ZERO_GPU_DEBUG" in log.read_text() or "Traceback" not in log.read_text()


def test_with_spaces_zero_gpu_set_the_app_starts_and_the_preview_answers(tmp_path):
    proc, url, log = start("spaces", tmp_path, KNLAB_PREVIEW="The capital of France is")
    try:
        assert urllib.request.urlopen(url, timeout=10).status == 200
        assert line(log, "PREVIEW") == "6 tokens: `[BOS]` `The` `capital` `of` `France` `is`"
        assert set(line(log, "READY")) == {"world-gpt", "world-bert"}  # both loaded, in the main thread, at start
    finally:
        stop(proc)
