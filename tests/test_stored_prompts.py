"""Training where the text encoder cannot go: the encoder's embeddings of a dataset's fixed prompts, stored once
(`python -m ntm_core.text`), stand in for it — exactly, so a run trained on them is the run trained with it."""
import json
import os

import numpy as np
import pytest
import torch

from ntm_core.config import load_config
from ntm_core.text import StoredPrompts, dataset_prompts, get_text_encoder, main, training_encoder

from .train_helpers import metrics, run_tiny


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("prompts") / "mnist.safetensors")
    main(["--dataset", "mnist", "--out", path, "--max-length", "16"])
    return StoredPrompts(path)


def test_stored_prompts_embed_as_the_encoder_does(stored):
    encoder = get_text_encoder(None, 16)
    prompts = [dataset_prompts("mnist")[7], "", dataset_prompts("mnist")[3] + "  "]
    got, ref = stored.encode(prompts), encoder.encode(prompts)
    assert torch.equal(got.mask, ref.mask) and got.tokens.shape == ref.tokens.shape
    assert torch.allclose(got.tokens, ref.tokens, atol=1e-6) and torch.allclose(got.pooled, ref.pooled, atol=1e-6)
    assert not got.mask[1].any() and got.pooled[1].abs().sum() == 0  # "" is the null prompt
    assert len(stored.prompts) == 10 and stored.dim == encoder.dim
    with pytest.raises(KeyError, match="no embedding of"):
        stored.encode(["a red circle"])
    with pytest.raises(ValueError, match="max_length 16"):
        training_encoder({"embeddings": stored.path, "max_length": 32})


def _idx(path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        f.write(bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape))
        f.write(array.astype(np.uint8).tobytes())


def test_a_run_on_stored_prompts_is_the_run_with_the_encoder(tmp_path, stored):
    root = tmp_path / "digits"
    os.makedirs(root)
    rng = np.random.default_rng(0)
    _idx(root / "train-images-idx3-ubyte", rng.integers(0, 256, (24, 28, 28)))
    _idx(root / "train-labels-idx1-ubyte", np.arange(24) % 10)
    data = ["data.kind=mnist", f"data.root={root}", "data.channels=3", "train.steps=3", "train.num_workers=0"]
    run_tiny(tmp_path / "live", *data)
    folder = run_tiny(tmp_path / "stored", *data, f"text.embeddings={stored.path}")
    live, ours = metrics(tmp_path / "live"), metrics(tmp_path / "stored")
    assert [m["step"] for m in ours] == [1, 2, 3]
    for a, b in zip(live, ours):
        assert abs(a["loss"] - b["loss"]) < 1e-7 * max(1.0, abs(a["loss"])), (a["loss"], b["loss"])
    with open(os.path.join(folder, "model_index.json")) as f:
        assert json.load(f)["text_encoder_path"] == "minilm"  # served by the encoder afterwards
    assert load_config(None, [f"text.embeddings={stored.path}"])["text"]["encoder"] == "minilm"
