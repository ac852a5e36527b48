"""NTM Studio: `python app.py` serves the app (bundled model, no network needed)."""
import os

from app import build_app, launch

def limit_malloc_arenas(n: int = 2) -> None:
    """glibc gives each thread that allocates its own heap arena (up to 8 per core), and gradio runs handlers on
    a pool of threads: without a cap the server's memory climbs for hundreds of calls before it levels off."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt(-8, n)  # -8 = M_ARENA_MAX
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to cap
        pass


if __name__ == "__main__":
    limit_malloc_arenas()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    launch(build_app(), server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
           server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
