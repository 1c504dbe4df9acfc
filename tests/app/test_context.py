"""The shared request path: a request whose client cancelled it while it waited for its lane never runs."""

import threading
import time

import pytest

from helpers import free_port


@pytest.mark.slow  # a Gradio server and two HTTP clients (~8 s); tests/serve/test_worker.py drops a request at the worker
def test_a_cancelled_request_waiting_for_its_lane_is_dropped_not_run(gpt):
    from gradio_client import Client
    from gradio_client.utils import Status

    from knlab.app.ui import build_app
    from knlab.serve.worker import INTERACTIVE, ModelWorker

    worker = ModelWorker(device="cpu")
    worker.add_model(gpt)
    app = build_app(worker)
    app.queue(default_concurrency_limit=8).launch(server_name="127.0.0.1", server_port=free_port(),
                                                  prevent_thread_lock=True, quiet=True)
    started, release = threading.Event(), threading.Event()

    def hold(lm):
        started.set()
        assert release.wait(60)

    def served() -> int:
        return worker.status()["models"]["world-gpt"]["lanes"][INTERACTIVE]["requests"]

    holder = threading.Thread(target=worker.run, args=("world-gpt", [], hold), kwargs={"lane": INTERACTIVE})
    try:
        holder.start()
        assert started.wait(30)
        cancelled, kept = Client(app.local_url, verbose=False), Client(app.local_url, verbose=False)
        gone = cancelled.submit("world-gpt", "The capital of France is", 3, api_name="/predict")
        waits = kept.submit("world-gpt", "The capital of Spain is", 3, api_name="/predict")
        for job in (gone, waits):  # both handed to a thread by Gradio, both waiting for the lane
            deadline = time.time() + 30
            while job.status().code != Status.PROCESSING and time.time() < deadline:
                time.sleep(0.05)
            assert job.status().code == Status.PROCESSING
        time.sleep(0.3)
        assert gone.cancel()
        time.sleep(0.5)  # longer than the worker's poll of its waiting requests
        release.set()
        holder.join(30)
        assert waits.result(timeout=60)[1]["top"][0]["token"].strip() == "Madrid"
        time.sleep(0.5)
        assert served() == 2  # the holder and the kept request: the cancelled one never ran
    finally:
        release.set()
        app.close()
