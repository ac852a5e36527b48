"""MNIST-like data held on the training device (DeviceImages), checked on the CPU with a small IDX file: the same
images and captions as the host dataset, each epoch a permutation, disjoint across processes, resumable."""
import gzip

import numpy as np
import pytest
import torch

from ntm_core.batches import DeviceImages, training_batches
from ntm_core.data.idx import IdxDataset
from ntm_core.text import get_text_encoder
from ntm_core.train import Trainer

from .train_helpers import metrics, run_tiny, tiny_config

N = 20  # images; batch 8 → micro-batch 2 spans the end of epoch 0 and the start of epoch 1


def _write(path, arr):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


@pytest.fixture
def root(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N, 28, 28))
    images[:, 0, 0] = np.arange(N)  # a tag: which item a batch row is
    _write(tmp_path / "train-images-idx3-ubyte.gz", images)
    _write(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(N) % 10)
    return str(tmp_path)


def _cfg(root, batch=8, size=32, channels=3):
    return {"data": {"kind": "mnist", "root": root, "image_size": size, "channels": channels},
            "train": {"batch_size": batch}}


def _tags(x):  # the tag pixel sits at (2, 2) after padding 28 → 32
    return torch.round((x[:, 0, 2, 2] + 1) * 127.5).long()


@pytest.mark.parametrize("size", [32, 16])  # padded, and resized (the tag is blurred: compare images there)
def test_rows_are_the_host_dataset_items(root, size):
    host = IdxDataset(root, "mnist", "train", image_size=size, channels=3)
    data = DeviceImages(_cfg(root, size=size), seed=0, rank=0, world=1, device="cpu", encoder=None)
    x, text = data.get(0)
    assert x.shape == (8, 3, size, size) and text is None
    items = torch.stack([host[i]["image"] for i in range(N)])
    for row in x:  # each row equals one item exactly
        assert (items - row).abs().flatten(1).amax(1).min() < 1e-6


def test_epochs_are_permutations_and_batches_a_pure_function(root):
    data = DeviceImages(_cfg(root, batch=4), seed=3, rank=0, world=1, device="cpu", encoder=None)
    tags = torch.cat([_tags(data.get(m)[0]) for m in range(10)])  # 40 rows = two epochs of 20
    assert sorted(tags[:N].tolist()) == list(range(N)) and sorted(tags[N:].tolist()) == list(range(N))
    assert tags[:N].tolist() != tags[N:].tolist()  # a fresh order each epoch
    fresh = DeviceImages(_cfg(root, batch=4), seed=3, rank=0, world=1, device="cpu", encoder=None)
    assert torch.equal(_tags(fresh.get(7)[0]), tags[28:32])  # batch 7 without visiting 0…6: what resume needs
    other = DeviceImages(_cfg(root, batch=4), seed=4, rank=0, world=1, device="cpu", encoder=None)
    assert _tags(other.get(0)[0]).tolist() != tags[:4].tolist()


def test_a_batch_across_the_epoch_end_and_disjoint_processes(root):
    one = DeviceImages(_cfg(root), seed=0, rank=0, world=1, device="cpu", encoder=None)
    rows = torch.cat([_tags(one.get(m)[0]) for m in range(5)])  # 40 rows, batch 2 = rows 16…23
    assert sorted(rows[:N].tolist()) == list(range(N)) and sorted(rows[N:].tolist()) == list(range(N))
    r0 = DeviceImages(_cfg(root, batch=5), seed=0, rank=0, world=2, device="cpu", encoder=None)
    r1 = DeviceImages(_cfg(root, batch=5), seed=0, rank=1, world=2, device="cpu", encoder=None)
    epoch = torch.cat([_tags(r.get(m)[0]) for m in range(2) for r in (r0, r1)])  # 2 steps × 2 processes × 5
    assert sorted(epoch.tolist()) == list(range(N))


def test_captions_are_the_labels_prompts(root):
    encoder = get_text_encoder(None, 16)
    data = DeviceImages(_cfg(root), seed=0, rank=0, world=1, device="cpu", encoder=encoder)
    x, text = data.get(1)
    want = encoder.encode([f"a handwritten digit {w}" for w in
                           [("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")[t % 10]
                            for t in _tags(x).tolist()]])
    assert torch.allclose(text.pooled, want.pooled, atol=1e-6)


def test_device_render_is_chosen_and_trains_and_refuses_image_folders(root, tmp_path):
    over = ["data.kind=mnist", f"data.root={root}", "data.render=device", "data.channels=1", "train.steps=2"]
    trainer = Trainer(tiny_config(tmp_path / "a", *over))
    assert isinstance(trainer.batches, DeviceImages)
    trainer._release_lock()
    run_tiny(tmp_path / "b", *over)
    assert [m["step"] for m in metrics(tmp_path / "b")] == [1, 2]
    assert all(np.isfinite(m["loss"]) for m in metrics(tmp_path / "b"))
    cfg = {"data": {"kind": "imagefolder", "root": str(tmp_path), "image_size": 16, "channels": 3,
                    "render": "device"}, "train": {"batch_size": 2, "num_workers": 0}}
    with pytest.raises(ValueError, match="read on the host"):
        training_batches(cfg, 0, 0, 1, "cpu", None)
    with pytest.raises(ValueError, match="read on the host"):  # and the config check says so before a run starts
        tiny_config(tmp_path / "c", "data.kind=imagefolder", f"data.root={tmp_path}", "data.render=device")
