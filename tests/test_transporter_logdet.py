"""The transporter's log|det ∂u/∂x| equals log|det| of the brute-force autograd Jacobian (float64)."""
import pytest
import torch
from torch.autograd.functional import jacobian

from ntm_core.transporter import Transporter

from .conftest import TEXT_DIM, perturb_, random_text


@pytest.mark.parametrize("blocks", [1, 3])
def test_logdet_equals_bruteforce_jacobian(blocks):
    torch.manual_seed(0)
    T = perturb_(Transporter(sample_size=4, in_channels=2, patch_size=2, num_blocks=blocks, layers_per_block=2,
                             width=32, heads=4, text_dim=TEXT_DIM, text_cross_attention=True).double(), 0.1)
    text = random_text(2)
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    _, logdet = T(x, torch.tensor([0.3, 0.9], dtype=torch.float64), text)
    for i in range(2):
        one_text = type(text)(text.tokens[i : i + 1], text.mask[i : i + 1], text.pooled[i : i + 1])
        f = lambda xi: T(xi.reshape(1, 2, 4, 4), 0.3 if i == 0 else 0.9, one_text)[0].reshape(-1)  # noqa: E731
        J = jacobian(f, x[i].reshape(-1))
        sign, brute = torch.linalg.slogdet(J)
        assert sign.item() == 1.0
        assert abs(brute.item()) > 0.5, "the Jacobian must be far from volume-preserving for the test to bite"
        assert logdet[i].item() == pytest.approx(brute.item(), abs=1e-9)
