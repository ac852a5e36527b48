"""The app's API through gradio_client, against the app launched on 127.0.0.1: generate (image returned, seed
reproducible), likelihood of an uploaded PNG, a corrupt upload giving a clear error, and the Train tab's switch
(off here: NTM_STUDIO_ENABLE_TRAINING=0)."""
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

from .browser_helpers import AppServer, make_models

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from gradio_client import Client

    root = tmp_path_factory.mktemp("client")
    models = make_models(str(root))
    _write_reference(models)
    srv = AppServer(models, str(root), {"NTM_STUDIO_ENABLE_TRAINING": "0"})
    c = Client(srv.url, verbose=False)
    c.runs_root = str(root)  # NTM_STUDIO_RUNS of the server
    yield c
    srv.stop()


def _write_reference(folder):
    """The in-distribution reference and the discrete decoder the app reads (analysis.likelihood_reference,
    analysis.eight_bit)."""
    from analysis.eight_bit import fit_decoder, images
    from analysis.likelihood_reference import write_reference
    from ntm_core.pipeline import load_pipeline

    pipe = load_pipeline(folder)
    write_reference(folder, pipe, "shapes", 48, 4, 0)
    x, prompts, _ = images("shapes", "train", 8, pipe.sample_shape[1], 3, "", 0)
    fit_decoder(pipe, x, prompts, 4, 0, 8).save(folder)


def _generate(client, seed, final="learned", count=2, candidates=1):
    return client.predict("a red circle", "testmodel", 4, 3.0, 1.0, seed, False, count, final, candidates,
                          api_name="/generate")


def _path(item):
    path = item["image"] if isinstance(item, dict) else item[0]
    return path["path"] if isinstance(path, dict) else path


def _pixels(item):
    return np.asarray(Image.open(_path(item)).convert("RGB"))


def test_generate_returns_images_and_is_seed_reproducible(client):
    gallery, info, seed = _generate(client, 7)
    assert len(gallery) == 2 and seed == 7 and "2 image(s)" in info
    captions = [item["caption"] for item in gallery]
    # log p(τ), after the evaluator's verdict on "a red circle" (a prompt of the shapes grammar)
    assert all(re.fullmatch(r"[✓✗] τ: -?\d+\.\d{3} bits/dim · seed \d+", c) for c in captions), captions
    assert f"The evaluator accepts {sum(c.startswith('✓') for c in captions)} of 2" in info, info
    assert "Under each image, τ: −log₂ p(τ)" in info
    assert "t = 1 → 0.762 → 0.525 → 0.287 → 0.05." in info, info  # the sampler's steps (t_min 0.05, no shift)
    again, _, _ = _generate(client, 7)
    other, _, _ = _generate(client, 8)
    assert np.array_equal(_pixels(gallery[0]), _pixels(again[0]))
    assert np.array_equal(_pixels(gallery[1]), _pixels(other[0])), "image i uses seed + i"
    assert not np.array_equal(_pixels(gallery[0]), _pixels(other[0]))
    assert _pixels(gallery[0]).shape[:2] == (16, 16), "served at the tiny model's resolution (the page enlarges it)"
    name = os.path.basename(_path(gallery[1]))
    assert name == "a-red-circle-seed8.png", "downloads are PNGs named with the prompt and the seed"


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
    bpd = [row[rank["headers"].index("bound bits/dim on x_t0")] for row in rank["data"]]
    assert bpd == sorted(bpd) and all(np.isfinite(bpd))
    assert rank["data"][0][2] == "most likely"
    assert all(row[2] in ("less likely", "tie with the best (within noise)") for row in rank["data"][1:])
    assert "In-distribution check" in note and any(w in note for w in ("typical", "unusual"))
    import re

    eight = re.search(r"8-bit bound\*\* under \*[^*]+\*: \*\*([0-9.]+) bits/dim\*\*, importance-weighted over 3 "
                      r"forward trajectories \(their mean ([0-9.]+) ± ([0-9.]+)\)", note)
    assert eight, note
    weighted, mean, se = map(float, eight.groups())
    assert 0 < weighted <= mean and se > 0, note  # −log₂ P(x) ≥ 0 for a discrete x; Jensen
    terms = re.search(r"bound on x_t0 (-?[0-9.]+) \+ noise term ([0-9.]+) \+ decoder ([0-9.]+)", note)
    assert terms and sum(map(float, terms.groups())) == pytest.approx(mean, abs=2e-3), note  # the parts of that mean
    assert [row[0] for row in parts["data"]][-1] == "prior" and len(parts["data"]) == 5
    import pandas as pd

    df = pd.read_csv(csv if isinstance(csv, str) else csv["path"])
    assert len(df) == 3 * 3 and {"item", "trajectory", "bound bits/dim on x_t0"} <= set(df.columns)


def test_likelihood_of_generated_images_names_each_density(client):
    import pandas as pd

    gallery, _, _, summary, csv = client.predict("a red circle", "testmodel", 4, 2, 3, 0, 0,
                                                 api_name="/likelihood_generated")
    assert len(gallery) == 2
    df = pd.read_csv(csv if isinstance(csv, str) else csv["path"])
    assert len(df) == 2 * 3 and list(df["trajectory"]) == [1, 1, 2, 2, 3, 3]
    eight = df["8-bit bound bits/dim"]  # through the model's discrete decoder (t_min > 0)
    assert eight.notna().all() and (eight > 0).all(), df  # −log₂ P(x) ≥ 0 for a discrete x
    assert (eight != df["bound bits/dim on x_t0"]).all()
    assert summary["headers"] == ["item", "bits/dim (trajectory)", "bound bits/dim on x_t0", "8-bit bound bits/dim"]
    for row in summary["data"]:
        mine = df[df["item"] == row[0]]
        traj = mine["bits/dim (trajectory)"]
        assert row[1] == f"{traj.mean():.3f} ± {traj.std():.3f}"  # mean ± std of its trajectories
        # the 8-bit bound: −log₂ of the mean of the trajectories' weights 2^(−D·b), never above their mean (Jensen)
        b, d = mine["8-bit bound bits/dim"], 3 * 16 * 16  # D of the tiny test model (ntm_core/configs/tiny.yaml)
        assert float(row[3]) == pytest.approx(-np.log2(np.mean(np.exp2(-d * (b - b.min())))) / d + b.min(), abs=1e-3)
        assert float(row[3]) <= b.mean() + 1e-3


def test_corrupt_upload_is_a_clear_error(client, tmp_path):
    from gradio_client import handle_file

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png")
    with pytest.raises(Exception, match="cannot read image"):
        client.predict(handle_file(str(bad)), "a red circle", "testmodel", 4, 2, 0, api_name="/likelihood")


def test_empty_prompt_is_a_clear_error(client):
    with pytest.raises(Exception, match="prompt: write a prompt"):
        client.predict("  ", "testmodel", 4, 3.0, 1.0, 1, False, 1, "none", api_name="/generate")


def test_train_endpoint_is_gone_when_training_is_off(client):
    names = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert "/generate" in names and "/likelihood" in names and "/train" not in names


def test_compare_reports_speed_and_pixel_distance(client):
    gallery, table, note, seed = client.predict("a red circle", "testmodel", 4, 3.0, 3, False, [],
                                                api_name="/compare")
    methods = [row[0] for row in table["data"]]
    assert methods == ["NTM + score denoising", "NTM + learned denoiser"] and len(gallery) == 2
    assert "faster than score denoising" in note and "PSNR" in note and seed == 3
    # a shapes prompt: each method's image gets the evaluator's verdict, in the table and as the caption's mark
    assert table["headers"] == ["method", "seconds", "img/s", "evaluator"]
    assert [row[3][0] for row in table["data"]] == [item["caption"][0] for item in gallery]
    assert all(row[3][0] in "✓✗" and len(row[3]) > 2 for row in table["data"]), table["data"]
    # an NTM without a learned denoiser (the run the test model was distilled from): score vs. no final step
    gallery, table, note, _ = client.predict("a red circle", "trained: ntm", 2, 3.0, 3, False, [], api_name="/compare")
    assert [row[0] for row in table["data"]] == ["NTM + score denoising", "NTM, no final step (x at t_min)"]
    assert "has no learned denoiser" in note and "PSNR" in note and len(gallery) == 2
    _, table, _, _ = client.predict("a cat", "trained: ntm", 2, 3.0, 3, False, [], api_name="/compare")
    assert table["headers"] == ["method", "seconds", "img/s"], "text outside the grammar: nothing to check"


def test_latents_show_every_step(client):
    note, *galleries, heat, hist, stats, seed = client.predict("a red circle", "testmodel", 3, 3.0, 1, False,
                                                               api_name="/latents")
    assert note == "", "a trained transporter moves u: no identity note"
    assert [len(g) for g in galleries] == [4] * 5, "one column per state (K + 1), μ, σ, z under the state they make"
    assert all(g[0]["caption"] == "t=1: prior N(0, I)" for g in galleries[2:]), "the prior column has no μ, σ, z"
    assert len(stats["data"]) == 3 and seed == 1


def test_nan_over_raw_http_is_refused(client):
    """JSON clients other than gradio_client can send NaN (Python's json reads it); the validator refuses it with
    HTTP 422 before anything runs."""
    import httpx

    for body in ('["a red circle", "testmodel", 4, NaN, 1.0, 1, false, 1, "learned", 1]',
                 '["a red circle", "testmodel", 4, 3.0, NaN, 1, false, 1, "learned", 1]',
                 '["a red circle", "testmodel", 4, 3.0, Infinity, 1, false, 1, "learned", 1]',
                 '["a red circle", "testmodel", 4, 3.0, 1.0, 1, false, 1, "learned", NaN]'):
        r = httpx.post(client.src.rstrip("/") + "/gradio_api/call/generate", content='{"data": ' + body + "}",
                       headers={"content-type": "application/json"}, timeout=30)
        # NaN passes the slider's own range check (every comparison is false): our validator answers 422;
        # ±Infinity is caught by the slider first (400). Either way nothing is queued.
        assert r.status_code in (400, 422) and "event_id" not in r.text, (r.status_code, r.text)
        assert "must be between" in r.text or "maximum value" in r.text


@pytest.mark.parametrize("field,args", [
    ("seed", dict(seed=2**64)), ("seed", dict(seed=-1)),
    ("final", dict(final="learned denoiser (fast)")), ("steps", dict(steps=9)), ("count", dict(count=500)),
    ("model", dict(model="../../etc")), ("prompt", dict(prompt="circle " * 200)),
])
def test_bad_numbers_and_labels_are_refused_before_running(client, field, args):
    """Refused before anything runs: by the event's validator (a message naming the input), or for values outside a
    slider's range / a radio's choices by gradio's own check first (HTTP 400). A seed ≥ 2⁶⁴ used to overflow."""
    kw = dict(prompt="a red circle", model="testmodel", steps=4, guidance=3.0, temperature=1.0, seed=1,
              randomize=False, count=1, final="learned")
    kw.update(args)
    with pytest.raises(Exception, match=f"failed validation:\n- {field}: |400 Bad Request"):
        client.predict(*kw.values(), api_name="/generate")


def test_final_step_takes_the_values_the_api_lists(client):
    info = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/generate"]
    final = next(p for p in info["parameters"] if p["parameter_name"] == "final")
    assert set(final["type"]["enum"]) == {"learned", "score", "none"}
    for mode in ("score", "none"):
        gallery, note, _ = _generate(client, 3, final=mode, count=1)
        assert len(gallery) == 1 and f"final step: {mode}" in note


def test_compare_runs_each_extra_model_once_and_caps_them(client):
    gallery, table, _, _ = client.predict("a red circle", "testmodel", 2, 3.0, 3, False, ["testmodel"] * 300,
                                          api_name="/compare")
    assert len(table["data"]) == 3 and len(gallery) == 3, "300 repeats of one model run it once"


def test_a_model_trained_after_start_is_accepted(client, tmp_path):
    """The pickers list models at page load; the API takes any label the registry knows now (never a path)."""
    import shutil

    runs = client.runs_root
    shutil.copytree(os.path.join(runs, "testmodel", "pipeline"), os.path.join(runs, "late-job", "pipeline"))
    try:
        gallery, note, _ = client.predict("a red circle", "trained: late-job", 1, 3.0, 1.0, 1, False, 1, "learned",
                                          api_name="/generate")
        assert len(gallery) == 1 and "trained: late-job" in note
    finally:
        shutil.rmtree(os.path.join(runs, "late-job"))


def test_generate_keeps_the_most_likely_of_candidates(client):
    """Candidates per image (the last input): the note and every caption say so, and the image is the pipeline's
    num_candidates pick for its seed."""
    gallery, note, _ = _generate(client, 5, "none", 1, 3)
    assert "best of 3" in gallery[0]["caption"] and "Best of 3" in note
    plain, note1, _ = _generate(client, 5, "none", 1)
    assert "best of" not in plain[0]["caption"] and "Best of" not in note1
    from ntm_core.pipeline import load_pipeline

    pipe = load_pipeline(os.path.join(client.runs_root, "testmodel", "pipeline"))
    want = pipe("a red circle", num_inference_steps=4, guidance_scale=3.0, denoise="none", num_candidates=3,
                generator=[torch.Generator().manual_seed(5)], output_type="np").images[0]
    assert np.abs(_pixels(gallery[0]).astype(int) - np.round(want * 255).astype(int)).max() <= 1
    with pytest.raises(Exception, match="candidates: Candidates must be between 1 and 8|400 Bad Request"):
        _generate(client, 5, "none", 1, 9)


def test_likelihood_of_generated_images_beside_real_renders(client):
    """Real renders of the prompt (the training data's renderer) are scored beside the samples, labelled as such."""
    import pandas as pd

    gallery, _, _, summary, csv = client.predict("a red circle", "testmodel", 4, 2, 2, 0, 1,
                                                 api_name="/likelihood_generated")
    assert [item["caption"] for item in gallery] == ["image 1", "image 2", "real render 1"]
    df = pd.read_csv(csv if isinstance(csv, str) else csv["path"])
    assert sorted(set(df["item"])) == ["image 1", "image 2", "real render 1"] and len(df) == 3 * 2
    assert [row[0] for row in summary["data"]] == ["image 1", "image 2", "real render 1"]
    # a prompt the renderer cannot read gets none (and no error)
    gallery, *_ = client.predict("a photo of a dog", "testmodel", 4, 1, 1, 0, 2, api_name="/likelihood_generated")
    assert len(gallery) == 1
