"""Model folders are config.json + safetensors (no pickles) and load with no network access."""
import json
import os
import subprocess
import sys

import torch

from ntm_core.model import NTM

from .conftest import random_text, small_ntm


def test_roundtrip_offline(tmp_path):
    model = small_ntm(markov=True, t_min=0.07).float()
    model.save_pretrained(str(tmp_path))
    files = sorted(os.path.relpath(os.path.join(d, f), tmp_path) for d, _, fs in os.walk(tmp_path) for f in fs)
    assert "transporter/diffusion_pytorch_model.safetensors" in files
    assert "predictor/diffusion_pytorch_model.safetensors" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl"))]
    assert json.load(open(tmp_path / "predictor" / "config.json"))["markov"] is True
    assert json.load(open(tmp_path / "scheduler" / "scheduler_config.json"))["t_min"] == 0.07

    # load in a fresh interpreter with the hub switched off, and compare outputs
    code = (
        "import torch, sys; from ntm_core.model import NTM; m = NTM.from_pretrained(sys.argv[1]);"
        "x = torch.linspace(-1, 1, 2*3*8*8).reshape(2, 3, 8, 8);"
        "print(repr(m.nll(x, num_steps=3, generator=torch.Generator().manual_seed(0)).total.tolist()))"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=os.getcwd())
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    x = torch.linspace(-1, 1, 2 * 3 * 8 * 8).reshape(2, 3, 8, 8)
    expected = model.nll(x, num_steps=3, generator=torch.Generator().manual_seed(0)).total.tolist()
    assert eval(out.stdout.strip()) == expected
    loaded = NTM.from_pretrained(str(tmp_path))
    assert loaded.schedule.config.t_min == 0.07 and loaded.predictor.config.markov is True
    text = random_text(2)
    assert torch.allclose(loaded.double().nll(x.double(), text, 3, torch.Generator().manual_seed(0)).total,
                          model.double().nll(x.double(), text, 3, torch.Generator().manual_seed(0)).total)


def test_mismatched_components_rejected():
    import pytest

    a, b = small_ntm(sample_size=8), small_ntm(sample_size=4)
    with pytest.raises(ValueError, match="state shape"):
        NTM(a.transporter, b.predictor, a.schedule)
