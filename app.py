"""NTM Studio: `python app.py` serves the app (bundled model, no network needed)."""
import os

from app import build_app, launch

if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    launch(build_app(), server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
           server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
