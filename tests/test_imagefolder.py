"""A user's image folder: metadata.jsonl or sidecar captions; corrupt files are reported and skipped."""
import json

import numpy as np
import pytest
from PIL import Image

from ntm_core.data.imagefolder import ImageFolderDataset
from ntm_core.images import load as load_image


def _img(path, size=(40, 24), colour=(255, 0, 0)):
    Image.fromarray(np.full(size[::-1] + (3,), colour, np.uint8)).save(path)


def test_metadata_jsonl_with_a_corrupt_file(tmp_path):
    _img(tmp_path / "a.png")
    _img(tmp_path / "b.jpg", colour=(0, 0, 255))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    rows = [{"file_name": "a.png", "text": "a red thing"}, {"file_name": "b.jpg", "text": "a blue thing"},
            {"file_name": "broken.png", "text": "never loads"}, {"file_name": "missing.png", "text": "gone"}]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    ds = ImageFolderDataset(str(tmp_path), image_size=16)
    assert len(ds) == 2 and [ds[i]["caption"] for i in range(2)] == ["a red thing", "a blue thing"]
    assert ds[0]["image"].shape == (3, 16, 16)
    assert abs(ds[0]["image"][0].mean().item() - 1.0) < 1e-6 and ds[0]["image"][2].max().item() == -1.0
    skipped = dict(ds.skipped)
    assert set(skipped) == {"broken.png", "missing.png", "metadata.jsonl:5"}
    assert "cannot read image" in skipped["broken.png"]


def test_sidecar_captions(tmp_path):
    (tmp_path / "sub").mkdir()
    _img(tmp_path / "sub" / "x.png")
    (tmp_path / "sub" / "x.txt").write_text("  a red square \n")
    _img(tmp_path / "nocaption.png")
    ds = ImageFolderDataset(str(tmp_path), image_size=8, channels=1)
    assert len(ds) == 1 and ds[0]["caption"] == "a red square" and ds[0]["image"].shape == (1, 8, 8)
    assert ds.skipped[0][0] == "nocaption.png"


def test_empty_or_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        ImageFolderDataset(str(tmp_path / "nope"))
    (tmp_path / "junk.png").write_bytes(b"junk")
    (tmp_path / "junk.txt").write_text("x")
    with pytest.raises(ValueError, match="no readable"):
        ImageFolderDataset(str(tmp_path))


def test_load_image_center_crops_any_aspect(tmp_path):
    arr = np.zeros((20, 60, 3), np.uint8)
    arr[:, 20:40] = 255  # a white band in the middle third
    Image.fromarray(arr).save(tmp_path / "wide.png")
    x = load_image(str(tmp_path / "wide.png"), 20)
    assert x.shape == (3, 20, 20) and x.mean().item() > 0.9, "the centre crop keeps the white band"


def test_file_names_outside_the_folder_are_never_opened(tmp_path):
    """metadata.jsonl naming ../ or absolute paths (or a link out) is skipped with one reason for all of them, so
    the training log cannot tell which server files exist."""
    root = tmp_path / "data"
    root.mkdir()
    _img(root / "a.png")
    _img(tmp_path / "secret.png")  # exists, readable, outside
    (root / "link.png").symlink_to(tmp_path / "secret.png")
    rows = [{"file_name": "a.png", "text": "inside"}, {"file_name": "../secret.png", "text": "x"},
            {"file_name": str(tmp_path / "secret.png"), "text": "x"}, {"file_name": "../nothere.png", "text": "x"},
            {"file_name": "link.png", "text": "x"}]
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    ds = ImageFolderDataset(str(root), image_size=8)
    assert len(ds) == 1 and ds[0]["caption"] == "inside"
    reasons = {r for _, r in ds.skipped}
    assert len(ds.skipped) == 4 and len(reasons) == 1 and "outside the dataset folder" in reasons.pop()


def test_sixteen_bit_and_oversized_images(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 64), (64, 1)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    x = load_image(str(tmp_path / "g16.png"), 64, channels=1)
    assert abs(x.mean().item()) < 0.02 and x.min().item() < -0.95 and x.max().item() > 0.95, "scaled, not clipped"
    # a tiny file that declares 13000 × 13000: refused from its header, before any decoding
    big = tmp_path / "bomb.png"
    Image.new("1", (13000, 13000)).save(big)
    assert big.stat().st_size < 200_000
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match="too large") as e:
        load_image(str(big), 32)
    assert str(tmp_path) not in str(e.value), "the message names the file, not the server's folder"
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000, "not decoded (< 100 MB)"
