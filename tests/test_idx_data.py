"""MNIST / Fashion-MNIST from the shared IDX files (skipped with a reason where ../shared/data is absent)."""
import gzip
import os

import numpy as np
import pytest

from ntm_core.data.idx import IdxDataset, read_idx

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
needs_shared = pytest.mark.skipif(not os.path.isdir(os.path.join(SHARED, "mnist")),
                                  reason="../shared/data (MNIST / Fashion-MNIST IDX files) is not beside this checkout")


@needs_shared
@pytest.mark.parametrize("name, n_train, n_test", [("mnist", 60000, 10000), ("fashion-mnist", 60000, 10000)])
def test_shared_files_parse(name, n_train, n_test):
    train = IdxDataset(os.path.join(SHARED, name), name, "train")
    test = IdxDataset(os.path.join(SHARED, name), name, "test", image_size=32, channels=3)
    assert len(train) == n_train and len(test) == n_test
    item = test[0]
    assert item["image"].shape == (3, 32, 32) and item["image"].min() >= -1 and item["image"].max() <= 1
    assert (item["image"][:, :2] == -1).all(), "28 → 32 by black padding"
    assert set(np.unique(train.labels)) == set(range(10))


@needs_shared
def test_captions_from_labels():
    mnist = IdxDataset(os.path.join(SHARED, "mnist"), "mnist", "test")
    fashion = IdxDataset(os.path.join(SHARED, "fashion-mnist"), "fashion-mnist", "test")
    assert mnist.caption(7) == "a handwritten digit seven"
    assert fashion.caption(9) == "a photo of an ankle boot" and fashion.caption(0) == "a photo of a t-shirt"
    assert mnist[0]["caption"] == mnist.caption(mnist[0]["label"])


def _write_idx(path, arr, compress):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(data)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_roundtrip_gz_or_plain(tmp_path, compress):
    arr = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    suffix = ".gz" if compress else ""
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", arr, compress)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", np.array([3, 9]), compress)
    ds = IdxDataset(str(tmp_path), "mnist", "test", image_size=16)
    assert len(ds) == 2 and ds[1]["image"].shape == (1, 16, 16) and ds[1]["label"] == 9
    assert np.array_equal(read_idx(str(tmp_path / f"t10k-images-idx3-ubyte{suffix}")), arr)


def test_truncated_idx_is_a_clear_error(tmp_path):
    p = tmp_path / "bad"
    p.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 9, 1, 2]))
    with pytest.raises(ValueError, match="expected"):
        read_idx(str(p))
    q = tmp_path / "notidx"
    q.write_bytes(b"PNG....")
    with pytest.raises(ValueError, match="not an unsigned-byte IDX"):
        read_idx(str(q))
