"""The trainer's data: micro-batch m as (images on the device, text embedding on the device), a pure function of
(seed, m, rank) — so a resumed run sees the same data — and disjoint across data-parallel processes.

HostBatches: items from any dataset (shapes, MNIST, an image folder), collated on the CPU, rendered ahead by
  DataLoader workers on GPU machines; captions through the text encoder's LRU cache.
DeviceShapes: the shapes dataset rendered on the training device by `ShapesRenderer`, many micro-batches per call
  (`data.render_pool`), captions gathered from a `CaptionTable` embedded once; nothing crosses the host in the loop.
DeviceImages: MNIST / Fashion-MNIST held on the training device as uint8 and walked in a permutation drawn there
  (the same kind of walk as HostBatches, not the same order), captions gathered from the ten labels' table.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from .conditioning import TextEmbedding
from .config import DEVICE_DATA
from .data import collate
from .data.idx import IdxDataset, fit
from .images import from_pixels
from .text import CaptionTable

RENDER_POOL = 8192  # data.render_pool auto on a GPU: images per render call (~2 GB transient at 32 px, measured on the CPU)


def build_dataset(cfg: dict, seed: int):
    from .data.imagefolder import ImageFolderDataset
    from .data.shapes import CATEGORIES, ShapesDataset

    d = cfg["data"]
    kind, size, ch = d["kind"], d["image_size"], d["channels"]
    if kind == "shapes":
        return ShapesDataset("train", seed=seed, image_size=size, categories=d.get("categories") or CATEGORIES)
    if kind in ("mnist", "fashion-mnist"):
        if not d.get("root"):
            raise ValueError(f"data.root must point at the {kind} IDX files")
        return IdxDataset(d["root"], kind, "train", image_size=size, channels=ch)
    if kind == "imagefolder":
        return ImageFolderDataset(d["root"], image_size=size, channels=ch)
    raise ValueError(f"unknown data.kind {kind!r}")


def generator(*key: int, device="cpu") -> torch.Generator:
    """A generator seeded from a tuple of integers (seed, micro-step, rank, …), on `device`."""
    seed = int(np.random.SeedSequence(list(key)).generate_state(1)[0])
    return torch.Generator(device=device).manual_seed(seed)


class BatchSampler:
    """Micro-batch m of process r is a pure function of (seed, m, r): resumable, and disjoint across processes.
    Finite datasets are walked in a fresh seeded permutation each epoch."""

    def __init__(self, dataset, batch_size: int, seed: int, rank: int, world: int):
        self.ds, self.b, self.seed, self.rank, self.world = dataset, batch_size, seed, rank, world
        self.finite = not hasattr(dataset, "spec_at")
        self._perm: tuple[int, np.ndarray] | None = None

    def _index(self, i: int) -> int:
        if not self.finite:
            return i
        n = len(self.ds)
        epoch, pos = divmod(i, n)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(n))
        return int(self._perm[1][pos])

    def batch(self, m: int) -> dict:
        start = (m * self.world + self.rank) * self.b
        return collate([self.ds[self._index(i)] for i in range(start, start + self.b)])


class _MicroBatches(torch.utils.data.Dataset):
    """Micro-batch m of a BatchSampler as a dataset item, so that a DataLoader can prefetch them."""

    def __init__(self, sampler: BatchSampler):
        self.sampler = sampler

    def __getitem__(self, m: int) -> dict:
        return dict(self.sampler.batch(int(m)), micro=int(m))


class HostBatches:
    def __init__(self, cfg: dict, seed: int, rank: int, world: int, device, encoder, workers):
        self.sampler = BatchSampler(build_dataset(cfg, seed), cfg["train"]["batch_size"], seed, rank, world)
        self.device, self.encoder = torch.device(device), encoder
        if workers == "auto":
            workers = min(8, (os.cpu_count() or 1) - 1) if self.device.type == "cuda" else 0
        self.workers = int(workers)
        self._m, self._batch, self._stream = None, None, iter(())

    def open(self, first: int, end: int) -> None:
        """Data micro-batches first…end-1, in order."""
        items = _MicroBatches(self.sampler)
        if self.workers <= 0:
            self._stream = (items[m] for m in range(first, end))
        else:
            self._stream = iter(torch.utils.data.DataLoader(
                items, batch_size=None, sampler=range(first, end), num_workers=self.workers, prefetch_factor=4,
                pin_memory=self.device.type == "cuda"))
        self._m = None

    def get(self, m: int) -> tuple[torch.Tensor, TextEmbedding | None]:
        if self._m != m:  # a new batch: moved and embedded once, however many echoed steps it serves
            batch = next(self._stream)
            assert batch["micro"] == m, (batch["micro"], m)  # prefetching must keep the order
            text = None if self.encoder is None else self.encoder.encode(batch["caption"]).to(device=self.device)
            self._m, self._batch = m, (batch["image"].to(self.device, non_blocking=True), text)
        return self._batch


class DeviceShapes:
    """Micro-batch m is rows (m mod P)·b … of a pool of P·b images rendered in one call with generator (seed, m // P,
    rank): a render call launches the same 1,679 kernels whatever its batch (its rounds of proposals per category),
    more than the network's forward and backward together at shapes32_fm (`analysis.step_ops`), so a launch-bound GPU
    would wait on them every step; a pool shares them among P steps. P = 1 (the CPU default) renders per step."""

    def __init__(self, cfg: dict, seed: int, rank: int, world: int, device, encoder):
        from .data.shapes import CATEGORIES
        from .data.shapes_torch import ShapesRenderer

        d = cfg["data"]
        self.seed, self.rank, self.b, self.device = seed, rank, cfg["train"]["batch_size"], torch.device(device)
        self.renderer = ShapesRenderer("train", d["image_size"], d.get("categories") or CATEGORIES, self.device)
        self.table = None if encoder is None else CaptionTable(encoder, self.renderer.captions, self.device)
        pool = d.get("render_pool", "auto")
        if pool == "auto":
            pool = RENDER_POOL if self.device.type == "cuda" else self.b
        self.per_pool = max(1, int(pool) // self.b)
        self._q, self._pool = None, None

    def open(self, first: int, end: int) -> None:
        self._q = None

    def get(self, m: int) -> tuple[torch.Tensor, TextEmbedding | None]:
        q, i = divmod(m, self.per_pool)
        if self._q != q:
            self._q = q
            g = generator(self.seed, q, self.rank, 11, device=self.device)
            batch = self.renderer.sample(self.b * self.per_pool, g)
            self._pool = batch["image"], batch["caption_id"]
        rows = slice(i * self.b, (i + 1) * self.b)
        image, caption_id = (v[rows] for v in self._pool)
        return image, None if self.table is None else self.table[caption_id]


class DeviceImages:
    def __init__(self, cfg: dict, seed: int, rank: int, world: int, device, encoder):
        ds = build_dataset(cfg, seed)
        if not isinstance(ds, IdxDataset):
            raise ValueError(f"data.render=device holds MNIST or Fashion-MNIST, not {cfg['data']['kind']!r}")
        self.ds, self.seed, self.rank, self.world = ds, seed, rank, world
        self.b, self.device = cfg["train"]["batch_size"], torch.device(device)
        self.images = torch.tensor(ds.images, device=self.device)  # [N, h, w] uint8: 47 MB for MNIST
        self.labels = torch.tensor(ds.labels, device=self.device).long()
        captions = [ds.caption(y) for y in range(int(ds.labels.max()) + 1)]
        self.table = None if encoder is None else CaptionTable(encoder, captions, self.device)
        self._perm: tuple[int, torch.Tensor] | None = None
        self._m, self._batch = None, None

    def _order(self, epoch: int) -> torch.Tensor:
        """Epoch e's permutation: the same in every process (they take disjoint slices of it)."""
        if self._perm is None or self._perm[0] != epoch:
            g = generator(self.seed, epoch, 13, device=self.device)
            self._perm = (epoch, torch.randperm(len(self.labels), generator=g, device=self.device))
        return self._perm[1]

    def open(self, first: int, end: int) -> None:
        self._m = None

    def get(self, m: int) -> tuple[torch.Tensor, TextEmbedding | None]:
        if self._m != m:
            n, start = len(self.labels), (m * self.world + self.rank) * self.b
            # a batch lies in at most two epochs when b ≤ n; positions are host integers, so no sync
            parts, i = [], start
            while i < start + self.b:
                epoch, pos = divmod(i, n)
                take = min(start + self.b - i, n - pos)
                parts.append(self._order(epoch)[pos : pos + take])
                i += take
            idx = torch.cat(parts)
            x = fit(from_pixels(self.images[idx])[:, None], self.ds.image_size, self.ds.channels)
            self._m, self._batch = m, (x, self.labels[idx])
        x, labels = self._batch
        return x, None if self.table is None else self.table[labels]


def training_batches(cfg: dict, seed: int, rank: int, world: int, device, encoder):
    """The data stream `cfg.data` asks for (render: auto → on the device for shapes and MNIST on a GPU)."""
    d = cfg["data"]
    render = d.get("render", "auto")
    if render == "auto":
        render = "device" if d["kind"] in DEVICE_DATA and torch.device(device).type == "cuda" else "cpu"
    if render == "device":
        if d["kind"] not in DEVICE_DATA:
            raise ValueError(f"data.render=device: {d['kind']!r} is read on the host (render: cpu)")
        return (DeviceShapes if d["kind"] == "shapes" else DeviceImages)(cfg, seed, rank, world, device, encoder)
    return HostBatches(cfg, seed, rank, world, device, encoder, cfg["train"]["num_workers"])
