"""knlab's Gradio app: ``python app.py`` serves on 7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT honoured)."""

import os

from knlab.ui import build_app

demo = build_app()

if __name__ == "__main__":
    demo.queue(default_concurrency_limit=8).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        show_error=True)
