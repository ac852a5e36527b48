"""Under a bf16 autocast (how GPUs train) the exact parts stay exact: the transporter (log-det, inverse) runs in
the weights' precision, and the density is assembled in float32 from the predictor's bf16 outputs."""
import torch

from .conftest import random_text, small_ntm


def _setup():
    ntm = small_ntm(std=0.1).float()
    text = random_text(4).to(dtype=torch.float32)
    x0 = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    return ntm, text, x0


def test_nll_under_bf16_autocast_keeps_the_transporter_exact():
    ntm, text, x0 = _setup()
    ref = ntm.nll(x0, text, 4, torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = ntm.nll(x0, text, 4, torch.Generator().manual_seed(0))
    assert ref.logdet.abs().min() > 0.05, "weights must make f_T far from the identity"
    assert mixed.total.dtype == torch.float32 and mixed.logdet.dtype == torch.float32
    assert torch.equal(mixed.logdet, ref.logdet), "the transporter must not run in bf16"
    assert torch.isfinite(mixed.total).all()
    rel = ((mixed.total - ref.total).abs() / ref.total.abs()).max()
    assert rel < 2e-2, f"bf16 predictor changed the NLL by {rel:.3%}"


def test_inverse_and_sampling_under_bf16_autocast():
    ntm, text, x0 = _setup()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        u, _ = ntm.transporter(x0, 0.05, text)
        back = ntm.transporter.inverse(u, 0.05, text)
        out = ntm.sample(text=text, num_steps=2, generator=torch.Generator().manual_seed(0))
    assert u.dtype == back.dtype == out.images.dtype == torch.float32
    assert (back - x0).abs().max() < 1e-5
    assert torch.isfinite(out.images).all()


def test_output_heads_run_in_float32_under_autocast():
    """The velocity and log-scale heads stay in float32 (the density divides by σ and exponentiates them): under a
    bf16 autocast their outputs are float32, within bf16's error of the trunk from the float32 network."""
    ntm, text, _ = _setup()
    u = torch.randn(4, 2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    t, s = torch.tensor([1.0, 0.5]), torch.tensor([0.5, 0.05])
    ref = ntm.predictor(u, t, s, text)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = ntm.predictor(u, t, s, text)
    assert all(m.dtype == torch.float32 for m in mixed)
    v_ref, v_mixed = ref[2], mixed[2]
    err = ((v_mixed - v_ref).norm() / v_ref.norm()).item()
    assert err < 2e-2 and v_ref.abs().max() > 0.05, err
