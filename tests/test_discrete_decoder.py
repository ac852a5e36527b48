"""The 8-bit bound of a t_min > 0 model through a discrete decoder (ntm_core.discrete_decoder).

The decoder must be a distribution over the pixel values and its fit must find a known table; on a 1-D discrete
toy (D = 1, 16 pixel values, K = 1) the reported bound must equal the bound's expectation computed by quadrature
from the definitions, which must lie above the true −log P(x) = −log ∫ p(τ)·P(x | τ) dτ; the true P(x) summed
over the 16 values must be 1."""
import math

import pytest
import torch

from ntm_core.discrete_decoder import DiscreteDecoder, NoEightBitBound, eight_bit_bound, pixel_levels
from ntm_core.trajectory import LOG_2PI, importance_weighted, kernel

from .conftest import small_ntm


def _values(levels: int) -> torch.Tensor:
    return torch.arange(levels, dtype=torch.float64) * (2.0 / (levels - 1)) - 1.0


def _random_decoder(bins: int, levels: int, seed: int) -> DiscreteDecoder:
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 50, (bins, levels), generator=g).double() * (torch.rand(bins, levels, generator=g) < 0.3)
    return DiscreteDecoder(counts=counts.tolist())


def test_decoder_sums_to_one_over_the_pixel_values():
    dec = _random_decoder(8, 256, 0)
    g = torch.Generator().manual_seed(1)
    means = torch.cat([torch.rand(200, generator=g, dtype=torch.float64) * 6 - 3,
                       torch.tensor([-1.1, 1.1, 0.0, -1.0, 1.0], dtype=torch.float64)])
    x = _values(256)[None].expand(len(means), -1)  # every pixel value for every mean
    total = dec.pixel_log_prob(x, means[:, None].expand_as(x)).exp().sum(1)
    assert torch.allclose(total, torch.ones_like(total), atol=1e-12, rtol=0), (total.min(), total.max())
    assert torch.equal(pixel_levels(_values(256)), torch.arange(256))


def test_fit_finds_a_known_table():
    g = torch.Generator().manual_seed(1)
    bins, levels, n = 4, 256, 400_000
    table = torch.distributions.Dirichlet(torch.full((levels,), 0.3)).sample((bins,))
    which = torch.randint(0, bins, (n,), generator=g)
    mean = -1.1 + (which.double() + 0.5) * 2.2 / bins  # bin centres
    k = torch.multinomial(table[which], 1, generator=g).squeeze(1)
    x = k.double() * 2 / (levels - 1) - 1
    dec = DiscreteDecoder.fit(x, mean, bins=bins)
    assert (dec.log_table().exp() - table.double()).abs().max() < 0.01
    assert dec.fitted_on["pixels"] == n and sum(map(sum, dec.counts)) == n


def test_save_load_and_refusals(tmp_path):
    dec = _random_decoder(3, 16, 4)
    dec.fitted_on = {"images": 5}
    dec.save(str(tmp_path))
    assert DiscreteDecoder.load(str(tmp_path)) == dec
    assert DiscreteDecoder.load(str(tmp_path / "nowhere")) is None
    (tmp_path / "discrete_decoder.json").write_text("{not json")
    assert DiscreteDecoder.load(str(tmp_path)) is None
    (tmp_path / "discrete_decoder.json").write_text('{"counts": [[1, -2], [0, 3]]}')  # a negative count
    assert DiscreteDecoder.load(str(tmp_path)) is None
    with pytest.raises(ValueError, match="8-bit images"):  # a float image, not 8-bit pixels
        eight_bit_bound(small_ntm(), torch.full((1, 3, 8, 8), 0.3, dtype=torch.float64), _random_decoder(3, 256, 0))
    with pytest.raises(NoEightBitBound, match="no discrete decoder"):  # t_min > 0 needs one
        eight_bit_bound(small_ntm(), torch.zeros(1, 3, 8, 8, dtype=torch.float64), None)
    with pytest.raises(NoEightBitBound, match="t_min = 0, no dequantization"):  # a continuous start has no 8-bit bound
        eight_bit_bound(small_ntm(t_min=0.0, min_sigma=0.1), torch.zeros(1, 3, 8, 8, dtype=torch.float64), dec)


def test_the_dequantized_configuration_is_the_same_formula():
    """t_0 = 0 with dequantized pixels: the bound is the trajectory's own data_bits_per_dim, no decoder term, the
    middle term −log₂ of the bin width (7 bits/dim for 256 levels in [−1, 1]); the decoder is ignored."""
    model = small_ntm(t_min=0.0, min_sigma=0.1, dequantize_levels=256)
    x = (torch.arange(2 * 3 * 8 * 8).reshape(2, 3, 8, 8) % 256).double() / 127.5 - 1
    b = eight_bit_bound(model, x, _random_decoder(3, 256, 0), num_steps=2, generator=torch.Generator().manual_seed(5))
    nll = model.nll(x, None, 2, torch.Generator().manual_seed(5))
    assert b.dequantized and b.start == pytest.approx(7.0) and (b.decoder == 0).all()
    assert torch.allclose(b.bits_per_dim, nll.data_bits_per_dim.double(), rtol=0, atol=1e-9)
    assert b.describe().startswith("dequantized trajectory")
    with pytest.raises(ValueError, match="8-bit images"):
        eight_bit_bound(model, x + 1e-2, None)


LEVELS, T0 = 16, 0.3


def _quadrature(model, decoder):
    """For x = value: (true −log P(x), the bound's three expectations under q) in nats, by the midpoint rule over
    (y = x_{t_0}, x_1). The model's terms are computed once on the grid; the value enters through q and the decoder."""
    grid = model.schedule.grid(1, dtype=torch.float64)
    n, lo, hi = 500, -6.0, 6.0
    pts = lo + (torch.arange(n, dtype=torch.float64) + 0.5) * (hi - lo) / n
    area = ((hi - lo) / n) ** 2
    yy, xx = torch.meshgrid(pts, pts, indexing="ij")
    states = torch.stack([yy.flatten(), xx.flatten()], 1).reshape(-1, 2, 1, 1, 1)
    with torch.no_grad():
        total = torch.cat([model.trajectory_nll(s, grid).total for s in states.split(50_000)])
    mean = torch.cat([model.denoise_with_score(s, grid) for s in states.split(50_000)])
    # q(y | x) = N(α_0 x, σ_0²) and q(x_1 | y) = the Markov kernel, written out here from their definitions
    y, x1 = states[:, 0].flatten(), states[:, 1].flatten()
    a1, v1 = kernel(grid[1], grid[0])
    log_q_x1 = -0.5 * (x1 - a1 * y) ** 2 / v1 - 0.5 * (torch.log(v1) + LOG_2PI)

    def at(value: float) -> tuple[float, dict]:
        log_dec = decoder.log_prob(torch.full_like(mean, value), mean)
        true = -torch.logsumexp(-total + log_dec, 0).item() - math.log(area)
        log_q_y = -0.5 * (y - (1 - T0) * value) ** 2 / T0**2 - 0.5 * (math.log(T0**2) + LOG_2PI)
        weight = torch.exp(log_q_y + log_q_x1)
        weight = weight / weight.sum()
        parts = {"x_t0": total + log_q_x1, "noise": log_q_y, "decoder": -log_dec}
        return true, {k: (weight * v).sum().item() for k, v in parts.items()}

    return at


def test_bound_on_a_one_dim_discrete_toy():
    model = small_ntm(sample_size=1, in_channels=1, patch_size=1, num_blocks=2, text=False, t_min=T0, std=0.05,
                      seed=2)
    decoder = _random_decoder(5, LEVELS, 3)
    values = _values(LEVELS)
    quadrature = _quadrature(model, decoder)
    trues = []
    for k in range(LEVELS):
        true, expected = quadrature(values[k].item())
        trues.append(true)
        if k in (0, 4, 9, 15):
            x = torch.full((20_000, 1, 1, 1), values[k].item(), dtype=torch.float64)
            b = eight_bit_bound(model, x, decoder, num_steps=1, generator=torch.Generator().manual_seed(k))
            assert b.start * math.log(2) == pytest.approx(expected["noise"], abs=1e-6)
            assert "noise term" in b.describe() and not b.dequantized
            for name in ("x_t0", "decoder"):
                nats = getattr(b, name) * math.log(2)
                mean, err = nats.mean().item(), nats.std().item() / math.sqrt(len(nats))
                assert abs(mean - expected[name]) < 4 * err, (k, name, mean, expected[name], err)
            total = b.bits_per_dim * math.log(2)
            reported, err = total.mean().item(), total.std().item() / math.sqrt(len(total))
            assert abs(reported - sum(expected.values())) < 4 * err, (k, reported, expected, err)
            assert true <= sum(expected.values()) and true <= reported, (k, true, expected, reported)
            print(f"x={values[k]:+.3f}: −log P {true:.4f}, E[bound] {sum(expected.values()):.4f}, reported "
                  f"{reported:.4f} nats")
    mass = sum(math.exp(-t) for t in trues)
    assert abs(mass - 1.0) < 1e-3, mass  # the model with its decoder is a distribution over the 16 values


def test_importance_weighting_tightens_the_bound_toward_the_true_probability():
    """Each drawn trajectory's sample_bits_per_dim is −log₂ of its weight p(τ)·P(x | τ) / q(τ | x), written out here
    from the definitions with q(x_{t_0} | x) at the drawn x_{t_0}; its mean is the bound's expectation (quadrature);
    importance weighting M of them (trajectory.importance_weighted) reads lower as M grows, stays above the true
    −log P(x), and at M = 16 has closed most of the single trajectory's gap (1-D discrete toy)."""
    model = small_ntm(sample_size=1, in_channels=1, patch_size=1, num_blocks=2, text=False, t_min=T0, std=0.05,
                      seed=2)
    decoder = _random_decoder(5, LEVELS, 3)
    values = _values(LEVELS)
    quadrature = _quadrature(model, decoder)
    m, n = 16, 1000
    for k in (4, 9, 15):
        true, expected = quadrature(values[k].item())
        x = torch.full((m * n, 1, 1, 1), values[k].item(), dtype=torch.float64)
        b = eight_bit_bound(model, x, decoder, num_steps=1, generator=torch.Generator().manual_seed(k))
        states, grid = model.forward_trajectory(x, 1, torch.Generator().manual_seed(k))  # the same draw
        y, x1 = states[:, 0].flatten(), states[:, 1].flatten()
        a1, v1 = kernel(grid[1], grid[0])
        with torch.no_grad():
            log_p = -model.trajectory_nll(states, grid).total
        log_q = (-0.5 * (y - (1 - T0) * values[k]) ** 2 / T0**2 - 0.5 * (math.log(T0**2) + LOG_2PI)
                 - 0.5 * (x1 - a1 * y) ** 2 / v1 - 0.5 * (torch.log(v1) + LOG_2PI))
        log_w = log_p + decoder.log_prob(x, b.mean) - log_q
        assert torch.allclose(b.sample_bits_per_dim * math.log(2), -log_w, rtol=0, atol=1e-8)
        s = b.sample_bits_per_dim.reshape(m, n)
        nats = s * math.log(2)
        assert abs(nats.mean().item() - sum(expected.values())) < 4 * nats.std().item() / math.sqrt(m * n)
        iw = {j: importance_weighted(s[:j], 1, dim=0) * math.log(2) for j in (1, 4, 16)}
        mean = {j: v.mean().item() for j, v in iw.items()}
        err = iw[16].std().item() / math.sqrt(n)
        assert mean[16] < mean[4] < mean[1], (k, mean)
        assert mean[16] > true - 4 * err, (k, mean[16], true)
        assert mean[16] - true < 0.5 * (sum(expected.values()) - true), (k, mean, true, expected)
        print(f"x={values[k]:+.3f}: −log P {true:.3f}, one trajectory {mean[1]:.3f}, importance-weighted 4 / 16 "
              f"{mean[4]:.3f} / {mean[16]:.3f} nats")
