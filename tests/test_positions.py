"""The networks' position embeddings: every patch token gets its own position, neighbours look alike, and the
bundles trained with random tables still load."""
import pytest
import torch

from ntm_core.denoiser import Denoiser
from ntm_core.layers import Patches, position_table
from ntm_core.predictor import Predictor


@pytest.mark.parametrize("size,patch,width", [(32, 4, 160), (32, 2, 192), ((8, 16), 4, 32), (16, 4, 30)])
def test_sincos_table_gives_each_token_its_place(size, patch, width):
    patches = Patches(size, 3, patch)
    table = position_table(patches, width).detach()[0]
    assert table.shape == (patches.num_tokens, width)
    cols = patches.width // patch
    row, col = torch.arange(len(table)) // cols, torch.arange(len(table)) % cols
    # distinct positions at the scale of the content (LayerNorm'd tokens have norm √width), not 2 % of it
    assert torch.cdist(table, table).add(torch.eye(len(table)) * 1e9).min() > 0.5
    assert table.norm(dim=-1).mean() > 0.3 * width**0.5
    # in patchify's raster order: each token's most similar other token is a grid neighbour
    cos = torch.nn.functional.normalize(table, dim=-1) @ torch.nn.functional.normalize(table, dim=-1).T
    nearest = cos.fill_diagonal_(-2).argmax(1)
    assert ((row - row[nearest]).abs() + (col - col[nearest]).abs()).max() == 1


def test_random_tables_are_what_old_bundles_hold_and_still_load(tmp_path):
    old = Predictor(sample_size=16, patch_size=4, width=32, depth=1, heads=4, pos_init="random")
    assert old.pos.std() < 0.05  # the earlier init: 0.02·N(0, 1)
    old.save_pretrained(tmp_path / "p")
    loaded = Predictor.from_pretrained(tmp_path / "p")
    assert torch.equal(loaded.pos, old.pos)
    new = Predictor(sample_size=16, patch_size=4, width=32, depth=1, heads=4)
    assert new.pos.requires_grad and new.pos.std() > 0.5  # sin-cos by default, trainable
    assert torch.equal(Denoiser(sample_size=16, patch_size=4, width=32, depth=1).pos, new.pos)
    with pytest.raises(ValueError, match="position init"):
        Predictor(sample_size=16, patch_size=4, width=32, depth=1, heads=4, pos_init="learned")
