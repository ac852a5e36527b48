"""Every shipped training config builds its networks and gives a finite loss on a batch of its image shape — a
config for the next GPU session that fails there costs a device call; here it costs a second."""
import glob
import os

import pytest
import torch

from ntm_core.config import load_config
from ntm_core.objectives import build_objective

CONFIGS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "ntm_core", "configs", "*.yaml")))


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_builds_and_gives_a_finite_loss(path):
    cfg = load_config(path)
    if cfg["init_from"]:
        pytest.skip("starts from a trained pipeline")
    torch.manual_seed(0)
    objective = build_objective(cfg, text_dim=384)
    d = cfg["data"]
    x0 = torch.rand(2, d["channels"], d["image_size"], d["image_size"]) * 2 - 1
    k = max(cfg["model"]["schedule"]["train_num_steps"])
    loss, _ = objective(x0, None, k, torch.Generator().manual_seed(0))
    assert loss.dim() == 0 and torch.isfinite(loss)
    # the exported pipeline samples on the config's time grid: an FM folder carries the shift in its scheduler
    pipe = objective.pipeline()
    assert pipe.scheduler.config.shift == cfg["model"]["schedule"].get("shift", 1.0)
