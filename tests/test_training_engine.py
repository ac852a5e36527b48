"""The GPU training engine, checked on the CPU: shapes rendered on the training device with captions gathered from
a table embedded once, resumable; checkpoints in bounded shards; the run folder the app reads."""
import glob
import os
import shutil

import pytest
import torch
from safetensors import safe_open

from ntm_core.batches import DeviceShapes, HostBatches, generator
from ntm_core.checkpoint import list_checkpoints
from ntm_core.config import load_config
from ntm_core.data.shapes_torch import ShapesRenderer
from ntm_core.runs import RunFolder
from ntm_core.text import CaptionTable, get_text_encoder
from ntm_core.train import Trainer, train

from .train_helpers import metrics, run_tiny, tiny_config

DEVICE = ["data.render=device", "data.categories=[single_object,counting]"]


def test_caption_table_embeds_like_the_encoder():
    encoder = get_text_encoder(None, 16)
    captions = ShapesRenderer("train", categories=("single_object",)).captions[:20]
    table = CaptionTable(encoder, captions)
    ids = torch.tensor([3, 0, 19, 3])
    got, ref = table[ids], encoder.encode([captions[i] for i in ids.tolist()])
    assert torch.allclose(got.pooled, ref.pooled, atol=1e-6)
    for i in range(len(ids)):  # same real tokens (the table pads to its longest caption, a batch to its own)
        assert torch.allclose(got.tokens[i][got.mask[i]], ref.tokens[i][ref.mask[i]], atol=1e-6)


def test_device_rendered_training_is_resumable_and_keeps_its_data_order(tmp_path):
    cfg = tiny_config(tmp_path / "a", *DEVICE, "train.data_echo=2")
    trainer = Trainer(cfg)
    assert isinstance(trainer.batches, DeviceShapes)
    trainer._open_batches()
    first = [trainer._micro_batch(m) for m in range(4)]
    assert torch.equal(first[0][0], first[1][0]) and not torch.equal(first[1][0], first[2][0])  # data echo
    assert first[0][0].shape == (8, 3, 16, 16) and first[0][1].pooled.shape[0] == 8
    trainer.step = 3  # where --resume at step 3 starts: the same images and captions
    trainer._open_batches()
    x, text = trainer._micro_batch(3)
    assert torch.equal(x, first[3][0]) and torch.equal(text.pooled, first[3][1].pooled)
    trainer._release_lock()

    out = tmp_path / "b"
    run_tiny(out, *DEVICE, "train.steps=4", "train.checkpoint_every=2")
    losses = {m["step"]: m["loss"] for m in metrics(out)}
    (_, step2), _ = list_checkpoints(os.path.join(out, "checkpoints"))
    resumed_dir = tmp_path / "c"
    shutil.copytree(step2, resumed_dir / "checkpoints" / os.path.basename(step2))  # as if stopped at step 2
    train(tiny_config(resumed_dir, *DEVICE, "train.steps=4", "train.checkpoint_every=2"), resume=True)
    resumed = {m["step"]: m["loss"] for m in metrics(resumed_dir)}
    assert sorted(resumed) == [3, 4]
    for step in resumed:  # the resumed run continues the uninterrupted one exactly
        assert abs(resumed[step] - losses[step]) < 1e-5, (step, resumed[step], losses[step])


def test_one_render_call_serves_a_pool_of_micro_batches_and_a_resume_finds_its_place(tmp_path):
    # batch 8, 32 images per render call: micro-batches 0–3 are its rows in order, 4 opens the next call
    trainer = Trainer(tiny_config(tmp_path, *DEVICE, "data.render_pool=32"))
    batches = trainer.batches
    assert batches.per_pool == 4
    trainer._open_batches()
    seen = [batches.get(m) for m in range(6)]
    pool = batches.renderer.sample(32, generator(trainer.seed, 0, trainer.rank, 11))
    assert torch.equal(torch.cat([x for x, _ in seen[:4]]), pool["image"])
    assert torch.equal(torch.cat([t.pooled for _, t in seen[:4]]), batches.table[pool["caption_id"]].pooled)
    nxt = batches.renderer.sample(32, generator(trainer.seed, 1, trainer.rank, 11))
    assert torch.equal(seen[4][0], nxt["image"][:8]) and torch.equal(seen[5][0], nxt["image"][8:16])
    assert all(not torch.equal(seen[i][0], seen[j][0]) for i in range(6) for j in range(i))
    trainer._release_lock()
    again = Trainer(tiny_config(tmp_path / "again", *DEVICE, "data.render_pool=32"))
    again.step = 5  # a resume in the middle of a pool renders that pool and takes its rows
    again._open_batches()
    x, text = again._micro_batch(5)
    assert torch.equal(x, seen[5][0]) and torch.equal(text.pooled, seen[5][1].pooled)
    again._release_lock()


@pytest.mark.parametrize("pool", [0, -8, 2.5, "many", True])
def test_a_render_pool_that_is_not_a_count_of_images_is_refused(pool):
    with pytest.raises(ValueError, match="render_pool"):
        load_config("ntm_core/configs/tiny.yaml", [f"data.render_pool={pool}"])


def test_cpu_default_renders_on_the_host(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, "train.steps=1"))
    assert isinstance(trainer.batches, HostBatches)  # render: auto → host workers without a GPU
    trainer._release_lock()


def test_checkpoints_are_cut_into_bounded_shards_and_resume(tmp_path):
    out = tmp_path / "run"
    run_tiny(out, "train.steps=2", "train.checkpoint_every=2", "train.shard_mb=0.02")
    (_, ckpt), = list_checkpoints(os.path.join(out, "checkpoints"))
    shards = glob.glob(os.path.join(ckpt, "*-of-*.safetensors"))
    assert len(shards) > 3
    for f in shards:  # a shard holds ≤ 20 kB of tensors, or one tensor larger than that on its own
        with safe_open(f, "pt") as st:
            keys = list(st.keys())
            nbytes = sum(st.get_tensor(k).numel() * st.get_tensor(k).element_size() for k in keys)
        assert nbytes <= 0.02e6 or len(keys) == 1, (f, nbytes, len(keys))
    assert os.path.exists(os.path.join(ckpt, "model.safetensors.index.json"))
    train(tiny_config(out, "train.steps=4", "train.checkpoint_every=2", "train.shard_mb=0.02"), resume=True)
    assert [m["step"] for m in metrics(out)] == [1, 2, 3, 4]


def test_run_folder_reads_what_the_trainer_wrote(tmp_path):
    out = tmp_path / "run"
    run_tiny(out, "train.steps=2", "train.checkpoint_every=2")
    run = RunFolder(str(out))
    status = run.status()
    assert status["state"] == "finished" and status["step"] == 2 and status["samples"] == 16
    assert list(run.metrics()["step"]) == [1, 2] and run.has_pipeline
    assert run.config()["train"]["steps"] == 2 and len(run.checkpoints()) == 1
    with open(run.metrics_path, "a") as f:
        f.write('{"step": 3, "lo')  # torn by a kill mid-write
    assert list(run.metrics()["step"]) == [1, 2]


def test_a_time_budget_stops_the_run_unfinished_and_resume_finishes_it(tmp_path):
    out = tmp_path / "run"
    # a budget that the first step already exceeds: stopped at step 1 of 3, the model so far exported
    pipe = run_tiny(out, "train.steps=3", "train.max_seconds=1e-9")
    run = RunFolder(str(out))
    status = run.status()
    assert status["state"] == "stopped" and status["reason"] == "time budget", status
    assert status["step"] == 1 and status["total_steps"] == 3
    assert pipe == run.pipeline_path and run.has_pipeline
    first = status["train_seconds"]
    train(tiny_config(out, "train.steps=3"), resume=True)
    status = run.status()
    assert status["state"] == "finished" and status["step"] == 3
    # the job's training time counts on over the resume (a model card's minutes), not from zero again
    assert status["train_seconds"] > first > 0 and status["train_seconds"] > status["seconds"]
    assert [m["step"] for m in metrics(out)] == [1, 2, 3]
    single = tmp_path / "single"  # over budget on its only step: that step ends the schedule, so it is finished
    run_tiny(single, "train.steps=1", "train.max_seconds=1e-9")
    assert RunFolder(str(single)).status()["state"] == "finished"


def test_a_lock_held_by_another_users_process_is_not_taken(tmp_path, monkeypatch):
    run = RunFolder(str(tmp_path / "run"))
    run.lock()
    with open(run.lock_path, "w") as f:
        f.write("4242")

    def kill(pid, sig):  # what os.kill(pid, 0) raises for a live process of another user
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", kill)
    with pytest.raises(ValueError, match="in use by training process 4242"):
        run.lock()
    with open(run.lock_path, "w") as f:
        f.write("not a pid")  # unreadable: stale
    run.lock()
    assert open(run.lock_path).read() == str(os.getpid())


def test_the_transporter_can_learn_at_its_own_rate(tmp_path):
    def trained(out, scale):
        trainer = Trainer(tiny_config(out, "train.steps=2", "train.checkpoint_every=1",
                                      f"train.transporter_lr_scale={scale}"))
        ntm = trainer.module.ntm
        before = {n: [p.detach().clone() for p in m.parameters()] for n, m in
                  (("transporter", ntm.transporter), ("predictor", ntm.predictor))}
        trainer.run()
        moved = {n: max(float((p.detach() - q).abs().max()) for p, q in zip(m.parameters(), before[n]))
                 for n, m in (("transporter", ntm.transporter), ("predictor", ntm.predictor))}
        return trainer, moved

    frozen, moved = trained(tmp_path / "a", 0)  # lr 0 for the transporter: it stays as initialised
    assert moved["transporter"] == 0 and moved["predictor"] > 0
    lrs = [g["lr"] for g in frozen.optimizer.param_groups]
    assert len(lrs) == 2 and lrs[1] == 0
    _, moved = trained(tmp_path / "b", 1)
    assert moved["transporter"] > 0
    # the two groups survive a checkpoint: the run goes on at the same relative rates
    train(tiny_config(tmp_path / "a", "train.steps=3", "train.transporter_lr_scale=0"), resume=True)
    assert RunFolder(str(tmp_path / "a")).status()["state"] == "finished"


def test_a_transporter_frozen_warm_up_keeps_f_T_at_identity_then_trains_it(tmp_path):
    # warmup_steps=0: without the freeze the transporter would move from the very first step
    trainer = Trainer(tiny_config(tmp_path / "a", "train.steps=4", "train.checkpoint_every=2", "train.warmup_steps=0",
                                  "train.transporter_frozen_steps=2"))
    ntm = trainer.module.ntm
    start = [p.detach().clone() for p in ntm.transporter.parameters()]
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(ntm.transporter(x, torch.tensor(0.5), None)[0], x)  # zero-initialised: the identity
    trainer.t["steps"] = 2  # stop after the frozen steps (the schedule keeps its 4-step length)
    trainer.run()
    assert all(torch.equal(p, q) for p, q in zip(ntm.transporter.parameters(), start))
    assert torch.equal(ntm.transporter(x, torch.tensor(0.5), None)[0], x)
    # resumed from the step-2 checkpoint, the transporter now learns on the shared cosine schedule
    resumed = Trainer(tiny_config(tmp_path / "a", "train.steps=4", "train.checkpoint_every=2", "train.warmup_steps=0",
                                  "train.transporter_frozen_steps=2"), resume=True)
    resumed.run()
    moved = max(float((p.detach() - q).abs().max()) for p, q in zip(resumed.module.ntm.transporter.parameters(), start))
    assert moved > 0
    assert [m["step"] for m in metrics(tmp_path / "a")] == [1, 2, 3, 4]
