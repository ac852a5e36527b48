"""inverse ∘ forward = identity for the transporter, through the KV-cached and the naive inverse."""
import pytest
import torch

from ntm_core.layers import patchify, unpatchify
from ntm_core.transporter import Transporter

from .conftest import TEXT_DIM, perturb_, random_text


def _transporter(cross: bool, blocks: int = 3) -> Transporter:
    torch.manual_seed(0)
    t = Transporter(sample_size=8, in_channels=3, patch_size=2, num_blocks=blocks, layers_per_block=2, width=32,
                    heads=4, text_dim=TEXT_DIM, text_cross_attention=cross).double()
    return perturb_(t, 0.1)


@pytest.mark.parametrize("cross", [False, True])
@pytest.mark.parametrize("use_cache", [True, False])
def test_inverse_of_forward_is_identity(cross, use_cache):
    T = _transporter(cross)
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    tau = torch.tensor([0.05, 0.5, 1.0], dtype=torch.float64)
    text = random_text(3)
    u, logdet = T(x, tau, text)
    assert (u - x).abs().max() > 0.1 and logdet.abs().min() > 0.1, "weights must make f_T far from the identity"
    back, logdet_back = T.inverse(u, tau, text, use_cache=use_cache, return_logdet=True)
    assert torch.allclose(back, x, atol=1e-6, rtol=0)
    # the inverse's log-det is the forward's log|det ∂u/∂x| at the recovered x (what sampling's log p uses)
    assert torch.allclose(logdet_back, logdet, atol=1e-8, rtol=0)
    # and forward ∘ inverse = identity
    v = torch.randn_like(x)
    assert torch.allclose(T(T.inverse(v, tau, text, use_cache=use_cache), tau, text)[0], v, atol=1e-6, rtol=0)


def test_cached_and_naive_inverse_agree():
    T = _transporter(True)
    u = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    text = random_text(2)
    assert torch.allclose(T.inverse(u, 0.3, text, use_cache=True), T.inverse(u, 0.3, text, use_cache=False),
                          atol=1e-10, rtol=0)


def test_identity_at_initialisation_and_without_blocks():
    x = torch.randn(2, 3, 8, 8)
    for t in (Transporter(sample_size=8, patch_size=2, width=32, heads=4),
              Transporter(sample_size=8, patch_size=2, num_blocks=0)):
        u, logdet = t(x, 0.5)
        assert torch.equal(u, x) and torch.equal(logdet, torch.zeros(2))


def test_transport_depends_on_time_and_text():
    T = _transporter(True)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    text = random_text(2)
    assert not torch.allclose(T(x, 0.2, text)[0], T(x, 0.8, text)[0])
    assert not torch.allclose(T(x, 0.2, text)[0], T(x, 0.2, text.null())[0])
    assert torch.allclose(T(x, 0.2, None)[0], T(x, 0.2, text.null())[0]), "no text must equal the null prompt"


def test_patchify_roundtrip_and_raster_order():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float64).reshape(2, 3, 4, 6)
    tok = patchify(x, 2)
    assert tok.shape == (2, 6, 12)
    assert torch.equal(tok[0, 1], x[0, :, 0:2, 2:4].reshape(-1))  # patch (row 0, col 1), features (C, p, p)
    assert torch.equal(tok[1, 3], x[1, :, 2:4, 0:2].reshape(-1))  # patch (row 1, col 0)
    assert torch.equal(unpatchify(tok, 2, 3, 4, 6), x)


def test_bad_patch_size_raises():
    with pytest.raises(ValueError, match="divisible"):
        Transporter(sample_size=10, patch_size=4)
