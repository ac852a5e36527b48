"""The app's API through gradio_client, against the app launched on 127.0.0.1: generate (image returned, seed
reproducible), likelihood of an uploaded PNG, a corrupt upload giving a clear error, and the Train tab's switch."""
import numpy as np
import pytest
from PIL import Image

from .browser_helpers import AppServer, make_models

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from gradio_client import Client

    root = tmp_path_factory.mktemp("client")
    models = make_models(str(root))
    _write_reference(models)
    srv = AppServer(models, str(root))
    yield Client(srv.url, verbose=False)
    srv.stop()


def _write_reference(folder):
    """The in-distribution reference the app reads, written by analysis.likelihood_reference."""
    from analysis.likelihood_reference import write_reference
    from ntm_core.pipeline import load_pipeline

    write_reference(folder, load_pipeline(folder), "shapes", 48, 4, 0)


def _generate(client, seed, final="learned denoiser (fast)", count=2):
    return client.predict("a red circle", "testmodel", 4, 3.0, 1.0, seed, False, count, final, api_name="/generate")


def _pixels(item):
    path = item["image"] if isinstance(item, dict) else item[0]
    path = path["path"] if isinstance(path, dict) else path
    return np.asarray(Image.open(path).convert("RGB"))


def test_generate_returns_images_and_is_seed_reproducible(client):
    gallery, info, seed = _generate(client, 7)
    assert len(gallery) == 2 and seed == 7 and "2 image(s)" in info
    captions = [item["caption"] for item in gallery]
    assert all("bits/dim (trajectory)" in c for c in captions), captions  # log p beside each image
    again, _, _ = _generate(client, 7)
    other, _, _ = _generate(client, 8)
    assert np.array_equal(_pixels(gallery[0]), _pixels(again[0]))
    assert np.array_equal(_pixels(gallery[1]), _pixels(other[0])), "image i uses seed + i"
    assert not np.array_equal(_pixels(gallery[0]), _pixels(other[0]))
    assert _pixels(gallery[0]).shape[0] >= 128, "shown enlarged"


def test_likelihood_of_an_uploaded_png(client, tmp_path):
    from gradio_client import handle_file

    arr = np.zeros((50, 70, 3), np.uint8)
    arr[10:30, 20:40] = (0, 0, 255)
    Image.fromarray(arr).save(tmp_path / "up.png")
    seen, note, _, _, _, rank, parts, csv = client.predict(
        handle_file(str(tmp_path / "up.png")), "a blue square\na red circle\nthree green triangles", "testmodel",
        4, 3, 0, api_name="/likelihood")
    prompts = [row[1] for row in rank["data"]]
    assert sorted(prompts) == sorted(["a blue square", "a red circle", "three green triangles"])
    bpd = [row[2] for row in rank["data"]]
    assert bpd == sorted(bpd) and all(np.isfinite(bpd))
    assert rank["data"][0][-1] == "most likely"
    assert all(row[-1] in ("less likely", "tie with the best (within noise)") for row in rank["data"][1:])
    assert "In-distribution check" in note and any(w in note for w in ("typical", "unusual"))
    assert [row[0] for row in parts["data"]][-1] == "prior" and len(parts["data"]) == 5
    import pandas as pd

    df = pd.read_csv(csv if isinstance(csv, str) else csv["path"])
    assert len(df) == 3 * 3 and {"item", "trajectory", "bound bits/dim on x_t0"} <= set(df.columns)


def test_corrupt_upload_is_a_clear_error(client, tmp_path):
    from gradio_client import handle_file

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png")
    with pytest.raises(Exception, match="cannot read image"):
        client.predict(handle_file(str(bad)), "a red circle", "testmodel", 4, 2, 0, api_name="/likelihood")


def test_empty_prompt_is_a_clear_error(client):
    with pytest.raises(Exception, match="empty prompt"):
        client.predict("  ", "testmodel", 4, 3.0, 1.0, 1, False, 1, "none (x at t_min)", api_name="/generate")


def test_train_endpoint_is_off_by_default(client):
    names = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert "/generate" in names and "/likelihood" in names and "/train" not in names


def test_compare_reports_speed_and_pixel_distance(client):
    gallery, table, note, seed = client.predict("a red circle", "testmodel", 4, 3.0, 3, False, [],
                                                api_name="/compare")
    methods = [row[0] for row in table["data"]]
    assert methods == ["NTM + score denoising", "NTM + learned denoiser"] and len(gallery) == 2
    assert "faster than score denoising" in note and "PSNR" in note and seed == 3


def test_latents_show_every_step(client):
    *galleries, heat, hist, stats, seed = client.predict("a red circle", "testmodel", 3, 3.0, 1, False,
                                                         api_name="/latents")
    assert [len(g) for g in galleries] == [4, 4, 3, 3, 3], "x and u: K+1 states; μ, σ, z: K steps"
    assert len(stats["data"]) == 3 and seed == 1
