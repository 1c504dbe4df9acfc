"""``python tests/serve/zerogpu_app.py``: knlab's app as on a ZeroGPU Space, on a CPU.

``KNLAB_ZEROGPU=standin`` (default): every model request goes through spaces' own ZeroGPU wrapper (a forked GPU
process, pickled in and out: tests/serve/zerogpu.py), decorated as on a Space, the models preloaded in the
main thread. ``KNLAB_ZEROGPU=spaces``: the real ``spaces`` package with ``SPACES_ZERO_GPU`` set (torch patched
as on a Space, CUDA emulated in the main thread), its device API a stub on loopback; it answers the start-up
report, so the app starts; model requests would need a GPU and are not made. Both print READY and the
worker's status once serving, and ``KNLAB_PREVIEW`` prompts the tokens preview from a thread other than the
main one, as Gradio's handlers run (``PREVIEW <markdown>``).
"""

import http.server
import json
import os
import sys
import threading
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parent)]
mode = os.environ.get("KNLAB_ZEROGPU", "standin")

if mode == "spaces":
    class DeviceAPI(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the start-up report
            self.send_response(200)
            self.end_headers()
        do_GET = do_POST  # noqa: N815

        def log_message(self, *a):
            pass
    api = http.server.ThreadingHTTPServer(("127.0.0.1", 0), DeviceAPI)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    os.environ.update(SPACES_ZERO_GPU="true", SPACES_ZERO_DEVICE_API_URL=f"http://127.0.0.1:{api.server_port}/")
    from zerogpu import as_on_a_space
    as_on_a_space()
    import spaces  # noqa: F401 - before anything else touches CUDA, as a Space does
else:
    from zerogpu import StandIn
    from knlab.serve import dispatch
    stand_in = StandIn()
    dispatch.zero_gpu = lambda: True
    dispatch.on_gpu = stand_in.GPU(dispatch.answer, duration=dispatch.gpu_seconds)

from knlab.app.ui import build_app  # noqa: E402
from knlab.serve.worker import default_worker  # noqa: E402

demo = build_app()
ctx = demo.knlab_context
demo.queue(default_concurrency_limit=8).launch(server_name="127.0.0.1",
                                               server_port=int(os.environ["GRADIO_SERVER_PORT"]),
                                               prevent_thread_lock=True)
status = default_worker().status()
print("READY", json.dumps({m: v["base"] for m, v in status["models"].items()}), flush=True)
if os.environ.get("KNLAB_PREVIEW"):
    out: list = []
    t = threading.Thread(target=lambda: out.append(ctx.tokens(os.environ.get("KNLAB_PREVIEW_MODEL", "world-gpt"),
                                                              os.environ["KNLAB_PREVIEW"])))
    t.start()
    t.join()
    print("PREVIEW", json.dumps(out[0]), flush=True)
threading.Event().wait()
