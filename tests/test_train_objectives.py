"""Every objective trains on the tiny config: the loss goes down and a loadable pipeline folder comes out."""
import os

import numpy as np
import pytest
import torch

from analysis.eight_bit import measure
from app.likelihood import eight_bit_bounds
from ntm_core.flow_matching import training_times
from ntm_core.pipeline import FlowMatchingPipeline, NTMPipeline, load_pipeline

from .train_helpers import metrics, run_tiny, tiny_config

STEPS = ["train.steps=16", "train.lr=2.0e-3", "train.checkpoint_every=100", "text.drop_prob=0.0"]


def _assert_loss_falls(out_dir):
    losses = [m["loss"] for m in metrics(out_dir)]
    assert len(losses) == 16
    assert sum(losses[-3:]) / 3 < 0.9 * sum(losses[:3]) / 3, losses


@pytest.fixture(scope="module")
def fm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fm")
    return out, run_tiny(out, "objective=fm", *STEPS)


@pytest.fixture(scope="module")
def ntm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ntm")
    return out, run_tiny(out, "objective=ntm", *STEPS)


def test_ntm_from_scratch(ntm_run):
    out, folder = ntm_run
    _assert_loss_falls(out)
    pipe = load_pipeline(folder)
    assert isinstance(pipe, NTMPipeline) and pipe.transporter.config.num_blocks == 2
    img = pipe("a red circle", num_inference_steps=2, denoise="none", output_type="pt",
               generator=torch.Generator().manual_seed(0)).images
    assert img.shape == (1, 3, 16, 16)
    assert {"bits_per_dim", "base", "log_sigma", "logdet", "prior", "lr", "samples_per_s"} <= set(metrics(out)[0])


def test_ntm_with_the_8bit_likelihood_configuration(tmp_path):
    """t_min = 0 with dequantized data: trains, logs the 8-bit bound, samples, and reports the bound on uploads."""
    folder = run_tiny(tmp_path, "objective=ntm", *STEPS, "model.schedule.t_min=0.0",
                      "model.schedule.dequantize_levels=256", "model.predictor.min_sigma=0.02")
    _assert_loss_falls(tmp_path)
    rows = metrics(tmp_path)
    # the 8-bit bound is the bound on x_{t_0} plus log2(128) bits/dim (bin width 2/256 in [−1, 1] scaling)
    assert all(abs(m["data_bits_per_dim"] - m["bound_bits_per_dim"] - 7.0) < 1e-4 for m in rows)
    pipe = load_pipeline(folder)
    assert pipe.scheduler.config.t_min == 0.0 and pipe.scheduler.config.dequantize_levels == 256
    out = pipe("a red circle", num_inference_steps=2, denoise="none", output_type="pt", return_log_prob=True,
               generator=torch.Generator().manual_seed(0))
    assert out.nll.has_data_bound and torch.isfinite(out.log_prob).all()
    x = (torch.arange(3 * 16 * 16).reshape(1, 3, 16, 16) % 256).float() / 127.5 - 1  # an 8-bit image
    (nll,) = pipe.log_likelihood(x, "a red circle", 2, generator=torch.Generator().manual_seed(0))
    assert nll.has_data_bound and torch.isfinite(nll.data_bits_per_dim).all()
    # the app's 8-bit column and note go through the same formula: the dequantized trajectory's own bound
    values, weighted, how = eight_bit_bounds(pipe, x, "a red circle", 2, 3, 0, folder)
    assert how.startswith("dequantized trajectory") and values.shape == (3, 1) and weighted.shape == (1,)
    with torch.no_grad():
        ref = pipe.ntm.nll(x.repeat(3, 1, 1, 1), pipe.encode_prompt(["a red circle"] * 3)[0], 2,
                           torch.Generator().manual_seed(2)).data_bits_per_dim
    assert torch.allclose(values.flatten().double(), ref.double(), atol=1e-6)
    parts = measure(pipe, x.repeat(2, 1, 1, 1), None, None, 2, 0, 1)  # analysis.eight_bit's rows: no decoder needed
    assert torch.allclose(parts["total"], parts["x_t0"] + 7.0) and (parts["decoder"] == 0).all()


def test_gaussian_only_ablation(tmp_path):
    folder = run_tiny(tmp_path, "objective=gauss", *STEPS)
    _assert_loss_falls(tmp_path)
    pipe = load_pipeline(folder)
    assert pipe.transporter.config.num_blocks == 0
    assert all(m["logdet"] == 0.0 for m in metrics(tmp_path))


def test_flow_matching(fm_run):
    out, folder = fm_run
    _assert_loss_falls(out)
    pipe = load_pipeline(folder)
    assert isinstance(pipe, FlowMatchingPipeline) and pipe.predictor.config.s_conditioning is False
    for steps in (1, 4):
        img = pipe("a blue square", num_inference_steps=steps, output_type="np",
                   generator=torch.Generator().manual_seed(0)).images
        assert img.shape == (1, 16, 16, 3)


def test_ntm_finetuned_from_flow_matching(fm_run, tmp_path):
    _, fm_folder = fm_run
    folder = run_tiny(tmp_path, "objective=fm_to_ntm", f"init_from={fm_folder}", *STEPS)
    rows = metrics(tmp_path)
    assert "aux" in rows[0] and rows[0]["aux"] == pytest.approx(0.0, abs=1e-10), "μ_P = μ_FM at step 0"
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert isinstance(load_pipeline(folder), NTMPipeline)


def test_self_distilled_denoiser(ntm_run, tmp_path):
    _, ntm_folder = ntm_run
    folder = run_tiny(tmp_path, "objective=denoiser", f"init_from={ntm_folder}", *STEPS)
    _assert_loss_falls(tmp_path)
    pipe = load_pipeline(folder)
    assert pipe.denoiser is not None
    base = load_pipeline(ntm_folder)
    for name in ("transporter", "predictor"):  # the NTM itself is frozen while the denoiser learns
        a, b = getattr(pipe, name).state_dict(), getattr(base, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    img = pipe("a red circle", num_inference_steps=4, denoise="learned", output_type="pt",
               generator=torch.Generator().manual_seed(0)).images
    assert img.shape == (1, 3, 16, 16) and torch.isfinite(img).all()


def test_bad_configs_are_clear_errors(tmp_path):
    from ntm_core.config import load_config

    with pytest.raises(ValueError, match="objective"):
        load_config(None, ["objective=nope"])
    with pytest.raises(ValueError, match="init_from"):
        load_config(None, ["objective=denoiser"])
    with pytest.raises(ValueError, match="time_sampling"):
        load_config(None, ["train.time_sampling=beta"])
    assert not os.path.exists(tmp_path / "pipeline")


@pytest.mark.parametrize("sampling", ["uniform", "logit_normal"])
def test_flow_matching_noise_levels_follow_their_distribution(sampling):
    """Kolmogorov–Smirnov against the CDF each name promises (logit-normal: Φ(logit t)), in the objective a config
    builds; the other distribution is rejected, so the test can tell them apart."""
    from scipy import stats

    from ntm_core.config import load_config
    from ntm_core.objectives import build_objective

    objective = build_objective(load_config("ntm_core/configs/tiny.yaml", ["objective=fm",
                                                                         f"train.time_sampling={sampling}"]), 0)
    t = training_times(20000, torch.Generator().manual_seed(0), "cpu", torch.float64, objective.time_sampling).numpy()
    cdf = {"uniform": stats.uniform.cdf, "logit_normal": lambda x: stats.norm.cdf(np.log(x / (1 - x)))}
    assert stats.kstest(t, cdf[sampling]).pvalue > 1e-3
    assert stats.kstest(t, cdf[{"uniform": "logit_normal", "logit_normal": "uniform"}[sampling]]).pvalue < 1e-6


def test_overrides_read_numbers_as_numbers(tmp_path):
    from ntm_core.config import load_config

    cfg = load_config(None, ["train.lr=3e-4", "train.max_seconds=1E3", "train.steps=7", "name=1e-3x"])
    assert cfg["train"]["lr"] == 3e-4 and isinstance(cfg["train"]["lr"], float)  # plain YAML gives the str "3e-4"
    assert cfg["train"]["max_seconds"] == 1000.0 and cfg["train"]["steps"] == 7 and cfg["name"] == "1e-3x"
    (tmp_path / "c.yaml").write_text("train: {lr: 2e-4, warmup_steps: 10}\n")  # config files too
    assert load_config(str(tmp_path / "c.yaml"))["train"]["lr"] == 2e-4


def test_data_echo_reuses_each_rendered_batch(tmp_path):
    """data_echo=2: micro-steps 2m and 2m+1 train on the same images (fresh noise), 2m+2 on new ones; a run
    resumed at an odd step picks up the same batch; the run ends after exactly train.steps steps."""
    from ntm_core.config import load_config
    from ntm_core.train import Trainer

    with pytest.raises(ValueError, match="data_echo"):
        load_config(None, ["train.data_echo=0"])
    trainer = Trainer(tiny_config(tmp_path / "a", "train.data_echo=2", "train.steps=5"))
    trainer._open_batches()
    images = [trainer._micro_batch(m)[0] for m in range(5)]
    assert torch.equal(images[0], images[1]) and torch.equal(images[2], images[3])
    assert not torch.equal(images[1], images[2]) and not torch.equal(images[3], images[4])
    trainer.step = 3  # where --resume at step 3 starts
    trainer._open_batches()
    assert torch.equal(trainer._micro_batch(3)[0], images[3])
    trainer._release_lock()

    out = tmp_path / "b"
    run_tiny(out, "train.data_echo=2", "train.steps=5", "train.checkpoint_every=100")
    assert [m["step"] for m in metrics(out)] == [1, 2, 3, 4, 5]


def _first_loss(out_dir) -> float:
    return metrics(out_dir)[0]["loss"]


def _arch(model) -> dict:
    return {k: v for k, v in model.config.items() if not k.startswith("_")}


def test_flow_matching_goes_on_from_a_bundled_model(fm_run, tmp_path):
    """A warm start (init_from of the objective's own kind): the run begins at the init model's weights, so its
    first loss, on the same first batch as the run from scratch, is already lower; the architecture comes along."""
    from ntm_core.export import export_pipeline

    out, folder = fm_run
    bundle = export_pipeline(folder, str(tmp_path / "bundle"))  # bf16, as assets/ holds it
    warm = tmp_path / "warm"
    pipe = load_pipeline(run_tiny(warm, "objective=fm", f"init_from={bundle}", *STEPS))
    assert _first_loss(warm) < 0.9 * _first_loss(out)
    assert _arch(pipe.predictor) == _arch(load_pipeline(bundle).predictor)


def test_a_warm_start_begins_exactly_at_the_init_weights(fm_run, ntm_run):
    from ntm_core.objectives import build_objective

    for run, objective, attr in ((fm_run, "fm", "predictor"), (ntm_run, "ntm", "ntm")):
        cfg = tiny_config("unused", f"objective={objective}", f"init_from={run[1]}")
        built = getattr(build_objective(cfg, text_dim=384), attr).state_dict()
        init = load_pipeline(run[1])
        want = init.predictor.state_dict() if objective == "fm" else {
            **{f"transporter.{k}": v for k, v in init.transporter.state_dict().items()},
            **{f"predictor.{k}": v for k, v in init.predictor.state_dict().items()}}
        assert built.keys() == want.keys() and all(torch.equal(built[k], want[k]) for k in want)


def test_ntm_goes_on_from_an_ntm(ntm_run, tmp_path):
    out, folder = ntm_run
    warm = tmp_path / "warm"
    pipe = load_pipeline(run_tiny(warm, "objective=ntm", f"init_from={folder}", *STEPS))
    assert _first_loss(warm) < 0.9 * _first_loss(out)
    assert _arch(pipe.transporter) == _arch(load_pipeline(folder).transporter)


def test_warm_starts_that_cannot_work_are_clear_errors(fm_run, ntm_run, tmp_path):
    """Another kind of model, an architecture the config contradicts, another prompt length: refused before
    anything is written."""
    for objective, init, match in (("fm", ntm_run[1], "needs a flow-matching pipeline"),
                                   ("ntm", fm_run[1], "needs an NTM pipeline"),
                                   ("gauss", ntm_run[1], "cannot go on from an NTM with a transporter")):
        with pytest.raises(ValueError, match=match):
            run_tiny(tmp_path / objective, f"objective={objective}", f"init_from={init}", *STEPS)
    with pytest.raises(ValueError, match="width: 64 in the config, 32 in init_from"):
        run_tiny(tmp_path / "w", "objective=fm", f"init_from={fm_run[1]}", "model.predictor.width=64", *STEPS)
    with pytest.raises(ValueError, match="t_min"):
        run_tiny(tmp_path / "t", "objective=ntm", f"init_from={ntm_run[1]}", "model.schedule.t_min=0.1", *STEPS)
    with pytest.raises(ValueError, match="max_length"):
        run_tiny(tmp_path / "m", "objective=fm", f"init_from={fm_run[1]}", "text.max_length=8", *STEPS)
    assert not any((tmp_path / d / "pipeline").exists() for d in ("fm", "ntm", "gauss", "w", "t", "m"))


def test_a_bundle_carries_its_lineage_and_the_model_card_sums_it(fm_run, tmp_path):
    """fm → NTM finetuned from it, exported: training/ holds the finetune's records and training/init/ the FM's;
    the model card's table reads both stages and their total; a bundle exported again keeps them."""
    from analysis.model_card import training_table
    from ntm_core.export import export_pipeline
    from ntm_core.runs import RunFolder, lineage

    fm_out, fm_folder = fm_run
    ft = tmp_path / "ft"
    bundle = export_pipeline(run_tiny(ft, "objective=fm_to_ntm", f"init_from={fm_folder}", *STEPS),
                             str(tmp_path / "bundle"))
    assert [r.config()["objective"] for r in lineage(bundle)] == ["fm_to_ntm", "fm"]
    again = export_pipeline(bundle, str(tmp_path / "again"))
    table = training_table(again)
    fm_status, ft_status = RunFolder(str(fm_out)).status(), RunFolder(str(ft)).status()
    assert list(table["objective"][:2]) == ["fm", "fm_to_ntm"] and table["stage"].iloc[-1] == "total"
    assert list(table["samples seen"]) == [fm_status["samples"], ft_status["samples"],
                                           fm_status["samples"] + ft_status["samples"]]
    assert table["minutes"].iloc[-1] == pytest.approx(table["minutes"].iloc[0] + table["minutes"].iloc[1])
    assert (table["precision"][:2] == "no").all()
    assert load_pipeline(again).__class__ is NTMPipeline


def test_denoiser_targets_lie_on_the_samplers_grid():
    """With sample_shift ≠ shift the learned denoiser must imitate the score step the sampler takes: targets from
    trajectories on the sampling grid. Recomputed here from the definitions; on the trajectory grid it differs."""
    from ntm_core.denoiser import Denoiser
    from ntm_core.objectives import DenoiserObjective
    from ntm_core.trajectory import TrajectorySchedule, sample_trajectory

    from .conftest import small_ntm

    ntm = small_ntm(text=False)
    ntm.schedule = TrajectorySchedule(t_min=0.05, shift=1.0, sample_shift=3.0)
    den = Denoiser(sample_size=8, in_channels=3, patch_size=2, width=32, depth=1, heads=4).double()
    x0 = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    loss, _ = DenoiserObjective(ntm, den)(x0, None, 2, torch.Generator().manual_seed(1))

    def expected(grid):
        states = sample_trajectory(x0, grid, torch.Generator().manual_seed(1))
        target = ntm.denoise_with_score(states, grid, None)
        with torch.no_grad():
            u0, _ = ntm.transporter(states[:, 0], grid[0], None)
        return (den(u0, None) - target).pow(2).mean()

    assert torch.allclose(loss, expected(ntm.schedule.sampling_grid(2, dtype=torch.float64)), rtol=1e-10)
    assert not torch.allclose(loss, expected(ntm.schedule.grid(2, dtype=torch.float64)), rtol=1e-3)


def test_train_shifts_train_on_each_grid(tmp_path):
    """train_shifts: each step's grid is the schedule's pick for that step's key (so a resume picks the same), the
    NLL objective uses it, and the exported model keeps its own grid for likelihoods."""
    from ntm_core.batches import generator
    from ntm_core.objectives import NTMObjective
    from ntm_core.trajectory import TrajectorySchedule, sample_trajectory

    from .conftest import small_ntm

    folder = run_tiny(tmp_path, "objective=ntm", *STEPS, "model.schedule.train_num_steps=[2,4]",
                      "model.schedule.train_shifts=[1.0,3.0]")
    pipe = load_pipeline(folder)
    assert list(pipe.scheduler.config.train_shifts) == [1.0, 3.0] and pipe.scheduler.config.shift == 1.0
    rows, seed = metrics(tmp_path), tiny_config(tmp_path)["seed"]
    keys = [generator(seed, r["step"] - 1, 7).initial_seed() for r in rows]
    assert [(r["num_steps"], r["shift"]) for r in rows] == [
        (pipe.scheduler.train_num_steps_for(k), pipe.scheduler.train_shift_for(k)) for k in keys]
    assert {r["shift"] for r in rows} == {1.0, 3.0}

    ntm = small_ntm(text=False)  # the objective's loss is the NLL on the batch's grid
    ntm.schedule = TrajectorySchedule(t_min=0.05, shift=1.0, train_shifts=[1.0, 3.0])
    x0 = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    loss, _ = NTMObjective(ntm)(x0, None, 2, torch.Generator().manual_seed(1), 0.0, 3.0)
    grid = ntm.schedule.grid(2, torch.float64, shift=3.0)
    nll = ntm.trajectory_nll(sample_trajectory(x0, grid, torch.Generator().manual_seed(1)), grid, None)
    assert torch.allclose(loss, nll.total.mean() / (nll.dim * 3), rtol=1e-10)
    assert not torch.allclose(loss, NTMObjective(ntm)(x0, None, 2, torch.Generator().manual_seed(1))[0], rtol=1e-3)



def test_lineage_follows_runs_into_a_bundle_and_stops_at_a_bundles_own_init_from(tmp_path):
    """A trainer's run: its config's init_from, run after run, and into a bundle's nested records; a bundle's own
    init_from (a path on the machine that trained it) is never followed, even where it resolves here."""
    import yaml

    from ntm_core.runs import lineage

    def record(folder, objective, init_from=None):
        folder.mkdir(parents=True, exist_ok=True)
        cfg = {"objective": objective, **({"init_from": str(init_from)} if init_from else {})}
        (folder / "config.yaml").write_text(yaml.safe_dump(cfg))

    stray = tmp_path / "stray"  # resolves here, but is not what the bundle was trained from
    record(stray, "fm")
    (stray / "pipeline").mkdir()
    bundle = tmp_path / "bundle"
    record(bundle / "training", "fm_to_ntm", init_from=stray / "pipeline")
    record(bundle / "training" / "init", "fm", init_from="/elsewhere/fm/pipeline")
    (bundle / "model_index.json").write_text("{}")
    record(tmp_path / "ntm", "ntm", init_from=bundle)
    record(tmp_path / "den", "denoiser", init_from=tmp_path / "ntm" / "pipeline")

    objectives = lambda p: [r.config()["objective"] for r in lineage(str(p))]  # noqa: E731
    assert objectives(tmp_path / "den" / "pipeline") == ["denoiser", "ntm", "fm_to_ntm", "fm"]
    assert objectives(bundle) == ["fm_to_ntm", "fm"]
    (bundle / "training" / "init" / "config.yaml").unlink()  # a bundle exported without its init's records
    assert objectives(bundle) == ["fm_to_ntm"]
