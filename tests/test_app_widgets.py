"""Display helpers: grey (1-channel) models' images must display like RGB ones."""
import numpy as np
from PIL import Image

from app.widgets import show


def test_show_accepts_grey_and_rgb_arrays_and_enlarges_without_blur():
    grey = np.zeros((28, 28, 1), np.uint8)
    grey[3, 5, 0] = 200
    img = show(grey, 252)
    assert img.mode == "L" and img.size == (252, 252)
    assert img.getpixel((5 * 9 + 4, 3 * 9 + 4)) == 200 and img.getpixel((0, 0)) == 0  # nearest, ×9
    rgb = show(np.full((32, 32, 3), 7, np.uint8), 256)
    assert rgb.mode == "RGB" and rgb.size == (256, 256)
    assert show(Image.new("RGB", (16, 16)), 256).size == (256, 256)


def test_first_open_results_are_worked_out_once_and_outlive_the_prune(tmp_path):
    """Every visitor's first open of a tab runs with the same defaults: the second visitor gets the first one's
    outputs without the work, its files still there after the output folders are pruned; other inputs are worked
    out anew; a shown result is kept (skips); a failed call keeps nothing."""
    import os
    import time

    import gradio as gr
    import pandas as pd

    from app.widgets import OutputFiles, first_open_handler

    files = OutputFiles(str(tmp_path / "out"), max_age=60)
    calls = []

    def work(prompt, seed, progress=gr.Progress()):
        calls.append((prompt, seed))
        if prompt == "bad":
            raise gr.Error("no")
        return f"note for {prompt}", [(files.csv(pd.DataFrame({"s": [seed]}), prompt), "caption")], seed

    first = first_open_handler(work, 3, files)
    note, gallery, seed = first(None, "a red circle", 0)
    assert note == "note for a red circle" and seed == 0
    csv = gallery[0][0]
    assert os.path.relpath(csv, files.root).startswith(OutputFiles.KEPT), "moved out of the pruned folders"
    for name in os.listdir(files.root):
        path = os.path.join(files.root, name)
        os.utime(path, (time.time() - 120, time.time() - 120))
    files.new_folder()  # the prune
    again = first([], "a red circle", 0)
    assert again == (note, gallery, seed) and len(calls) == 1, "the second visitor: the same outputs, no work"
    assert os.path.isfile(csv) and gallery[0][1] == "caption"
    first(None, "two green triangles", 0)
    assert len(calls) == 2, "other inputs are worked out anew"
    assert all(isinstance(o, type(gr.skip())) for o in first(["shown"], "a red circle", 0)), "a shown tab is kept"
    for _ in range(2):
        try:
            first(None, "bad", 0)
        except gr.Error:
            pass
    assert calls.count(("bad", 0)) == 2, "a failed call is not kept"
