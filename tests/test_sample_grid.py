"""The sample grid shows each image framed by the evaluator's verdict: green where it accepts, red where not."""
import numpy as np

from analysis.sample_grid import BORDER, CELL, FAIL, HEAD_H, LABEL_W, PASS, draw
from ntm_core.data.shapes_eval import check
from ntm_core.data.shapes import ShapesDataset
from ntm_core.images import to_uint8


def test_frames_follow_the_evaluator_and_tiles_are_the_images():
    ds = ShapesDataset("test", seed=3)
    items = [ds[i] for i in range(3)]
    real = [to_uint8(it["image"]) for it in items]
    black = np.zeros_like(real[0])
    pictures = [real[0], black, real[2]]
    accepted = [check(it["spec"], p) for it, p in zip(items, pictures)]
    assert accepted == [True, False, True]
    sheet = np.asarray(draw([("row", pictures, accepted)], [it["caption"] for it in items]))
    assert sheet.shape == (HEAD_H + CELL + 2 * BORDER, LABEL_W + 3 * (CELL + 2 * BORDER), 3)
    for j, (picture, ok) in enumerate(zip(pictures, accepted)):
        x, y = LABEL_W + j * (CELL + 2 * BORDER), HEAD_H
        assert tuple(sheet[y + 1, x + 1]) == (PASS if ok else FAIL)
        tile = sheet[y + BORDER : y + BORDER + CELL, x + BORDER : x + BORDER + CELL]
        scale = CELL // picture.shape[0]
        assert np.array_equal(tile[::scale, ::scale], picture)  # nearest-neighbour enlargement of the image itself
