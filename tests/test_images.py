"""ntm_core.images, the one conversion between pixels and the models' [−1, 1] scaling: exact round trips, the
evaluator's rounding, layouts, and every kind of source loading to the same tensor."""
import numpy as np
import pytest
import torch
from PIL import Image

from ntm_core import images


def test_every_pixel_value_round_trips_exactly():
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    rgb = np.stack([values, values[::-1], values.T], axis=-1)
    x = images.from_uint8(rgb)
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    assert x.min() == -1 and x.max() == 1
    assert np.array_equal(images.to_uint8(x), rgb)
    assert np.array_equal(images.to_uint8(x[None]), rgb[None]), "batches come back channels-last too"
    grey = images.from_uint8(values)
    assert grey.shape == (1, 16, 16) and np.array_equal(images.to_uint8(grey)[..., 0], values)


def test_to_uint8_rounds_half_up_and_clips():
    # 0.5/127.5 above −1 is pixel 0.5: rounds up to 1; values outside [−1, 1] clip
    x = torch.tensor([-1.5, -1.0, -1 + 0.5 / 127.5 + 1e-6, -1 + 0.49 / 127.5, 1.0, 2.0]).reshape(1, 1, 6)
    assert images.to_uint8(x).ravel().tolist() == [0, 0, 1, 0, 255, 255]
    assert images.to_uint8(np.full((3, 4, 4), 1.0, np.float32)).max() == 255, "numpy floats are read as tensors"
    u8 = np.zeros((4, 4, 3), np.uint8)
    assert images.to_uint8(u8) is u8, "uint8 passes through"
    assert torch.equal(images.to_unit(torch.tensor([-2.0, -1.0, 0.0, 1.0])), torch.tensor([0.0, 0.0, 0.5, 1.0]))


def test_load_takes_paths_files_pil_and_arrays_alike(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    path = tmp_path / "a.png"
    Image.fromarray(arr).save(path)
    with open(path, "rb") as f:
        from_file = images.load(f, 24)
    loaded = [images.load(str(path), 24), from_file, images.load(Image.fromarray(arr), 24), images.load(arr, 24)]
    for x in loaded:
        assert torch.equal(x, images.from_uint8(arr)), "same pixels at the native size, whatever the source"
    assert images.load(arr, 12, channels=1).shape == (1, 12, 12)
    with pytest.raises(ValueError, match="cannot read image a.txt"):
        (tmp_path / "a.txt").write_text("not an image")
        images.load(str(tmp_path / "a.txt"), 24)
