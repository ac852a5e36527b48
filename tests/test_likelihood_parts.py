"""The per-step likelihood decomposition adds up to the exact trajectory NLL (for one trajectory and for the
batch mean that analysis.likelihood_parts reports): TrajectoryNLL.parts_bits_per_dim."""
import math

import torch

from ntm_core.trajectory import sample_trajectory

from .conftest import random_text, small_ntm

PARTS = ["base ½‖z‖²", "Σ log σ", "−log|det J_T|", "const"]


def test_parts_add_up_to_the_trajectory_nll_and_the_mean_table_is_the_mean():
    model = small_ntm(std=0.2)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 3, 8, 8, generator=g, dtype=torch.float64)
    grid = model.schedule.grid(4, dtype=torch.float64)
    nll = model.trajectory_nll(sample_trajectory(x0, grid, g), grid, random_text(3))
    to_bits = 1 / (nll.dim * math.log(2))
    tables = [nll.parts_bits_per_dim(i) for i in range(3)]
    for i, table in enumerate(tables):
        steps = table[table["step"] != "prior"]
        assert torch.allclose(torch.tensor(steps[PARTS].sum(axis=1).to_numpy()), torch.tensor(steps["step total"].to_numpy()))
        assert math.isclose(table["step total"].sum(), nll.total[i].item() * to_bits, rel_tol=1e-9)
        assert (steps["−log|det J_T|"].abs() > 0).all()  # a non-identity transporter really contributes
    mean = nll.parts_bits_per_dim(None)
    for col in PARTS[:-1] + ["step total"]:
        expected = sum(t[col].to_numpy() for t in tables) / 3
        assert torch.allclose(torch.tensor(mean[col].to_numpy(dtype=float)), torch.tensor(expected, dtype=torch.float64),
                              equal_nan=True)
