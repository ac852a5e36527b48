"""The app's controls say what runs: per-model control state, pickers filtered by what a tab needs, a prompt outside
a model's vocabulary noted, the final step checked against the model, and output files pruned. Reads the bundled
models' folders (no weights are loaded)."""
import json
import os
import shutil
import time

import pandas as pd
import pytest
from PIL import Image

from app.generate import FINAL, controls, problems
from app.registry import Registry
from app.widgets import OutputFiles, slug


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    r = Registry()
    needed = {"ntm-shapes32", "fm-shapes32", "ntm-mnist28", "gauss-shapes32"}
    if not needed <= set(r.choices()):
        pytest.skip("the bundled models are not in assets/")
    # no bundled model has a learned denoiser until the default's is trained: a copy of the default's configs whose
    # model_index names one stands in for such a model (configs only; no weights are read here)
    with_denoiser = tmp_path_factory.mktemp("models") / "ntm-with-denoiser"
    shutil.copytree(r.folder("ntm-shapes32"), with_denoiser, ignore=shutil.ignore_patterns("*.safetensors"))
    index = json.loads((with_denoiser / "model_index.json").read_text())
    index["denoiser"] = ["ntm_core.denoiser", "Denoiser"]
    (with_denoiser / "model_index.json").write_text(json.dumps(index))
    env = pytest.MonkeyPatch()
    env.setenv("NTM_STUDIO_MODELS", str(with_denoiser))
    yield r
    env.undo()


def test_pickers_list_only_models_that_can_do_the_job(registry):
    ntm = registry.choices("ntm")
    assert "fm-shapes32" in registry.choices() and "fm-shapes32" not in ntm and "ntm-mnist28" in ntm
    with_denoiser = registry.choices("denoiser")
    assert with_denoiser == ["ntm-with-denoiser"], "only an NTM whose model_index names a denoiser"
    info = registry.info("gauss-shapes32")
    assert info.is_ntm and info.gaussian_only and not registry.info("ntm-shapes32").gaussian_only


def test_controls_follow_the_model(registry):
    final, temperature, steps, examples, guidance, candidates = controls(registry, "fm-shapes32")
    assert guidance["value"] == 3.0, "no sampling_defaults.json: the default guidance"
    assert candidates["interactive"] is False and candidates["value"] == 1, "no exact likelihood to rank by"
    assert final["interactive"] is False and temperature["interactive"] is False, "flow matching ignores both"
    assert "no final step" in final["info"] and steps["maximum"] == 50
    final, temperature, steps, examples, guidance, candidates = controls(registry, "ntm-mnist28")
    assert candidates["interactive"] is True and "most likely" in candidates["info"]
    assert guidance["value"] == 8.0 and "measured" in guidance["info"], "its folder's measured best"
    assert [v for _, v in final["choices"]] == ["score", "none"], "no learned denoiser: not offered"
    assert final["value"] == "score" and temperature["interactive"] is True and steps["maximum"] == 4
    assert steps["info"] == "NTM steps: trained at K = 1, 2, 4 (other K: exact, but steps it never trained at)"
    assert all("handwritten digit" in s[0] for s in examples["samples"]), "the examples follow the model"
    final, _, steps, *_, candidates = controls(registry, "ntm-shapes32")
    assert candidates["value"] == 4 and "measured best" in candidates["info"], "its sampling_defaults.json"
    assert [v for _, v in final["choices"]] == ["score", "none"] and final["value"] == "score"
    assert "finetune step 0" in steps["info"], "the default has not trained at any K yet: it is its FM model"
    final, *_ = controls(registry, "ntm-with-denoiser")
    assert final["choices"] == FINAL and final["value"] == "learned"


def test_a_prompt_outside_the_vocabulary_gets_a_note(registry):
    mnist = registry.info("ntm-mnist28")
    assert mnist.unknown_words("a red circle") == ["red", "circle"]
    note = mnist.vocabulary_note("a red circle")
    assert "'red', 'circle'" in note and "a handwritten digit" in note
    assert mnist.vocabulary_note("a handwritten digit three") == ""
    assert registry.info("ntm-shapes32").unknown_words("A picture of two RED squares, left of a cyan circle") == []


def test_the_final_step_is_checked_against_the_model(registry):
    args = dict(prompt="a handwritten digit one", steps=4, guidance=3.0, temperature=1.0, seed=0, randomize=False,
                count=1)
    def final_problem(model, final):
        return problems(registry, args["prompt"], model, args["steps"], args["guidance"], args["temperature"],
                        args["seed"], args["randomize"], args["count"], final)[8]  # the inputs' order
    assert "no learned denoiser" in final_problem("ntm-mnist28", "learned")
    assert "no learned denoiser" in final_problem("ntm-shapes32", "learned")
    assert final_problem("ntm-mnist28", "score") is None and final_problem("ntm-with-denoiser", "learned") is None
    assert "learned, score or none" in final_problem("ntm-with-denoiser", "learned denoiser (fast)")
    fm = problems(registry, "a red circle", "fm-shapes32", 50, 3.0, 1.0, 0, False, 1, "none")
    assert fm == [None] * 10, "flow matching takes up to 50 Euler steps"


def test_output_files_are_named_and_pruned(tmp_path):
    files = OutputFiles(str(tmp_path / "out"), max_age=60)
    old = files.csv(pd.DataFrame({"a": [1]}), "likelihood upload")
    assert os.path.basename(old) == "likelihood-upload.csv"
    kept = files.png(files.new_folder(keep=True), Image.new("RGB", (4, 4)), "example")
    for path in (old, kept):
        os.utime(os.path.dirname(path), (time.time() - 120, time.time() - 120))
    files.new_folder()
    assert not os.path.exists(old), "folders older than max_age are removed when the next one is made"
    assert os.path.exists(kept), "a kept folder (files handed out again, e.g. the example grid) is never pruned"
    assert slug("A Red circle, seed 7!") == "a-red-circle-seed-7" and slug("???") == "image"


def test_a_folders_guidance_default_is_read_and_checked(tmp_path):
    from app.registry import DEFAULT_GUIDANCE, SAMPLING_DEFAULTS, default_guidance

    assert default_guidance(str(tmp_path)) == DEFAULT_GUIDANCE  # no file
    for text, expected in (('{"guidance_scale": 5}', 5.0), ('{"guidance_scale": 50}', DEFAULT_GUIDANCE),
                           ('{"guidance_scale": "8"}', DEFAULT_GUIDANCE),
                           ('{"guidance_scale": true}', DEFAULT_GUIDANCE),
                           ("{not json", DEFAULT_GUIDANCE), ("[8]", DEFAULT_GUIDANCE)):
        (tmp_path / SAMPLING_DEFAULTS).write_text(text)
        assert default_guidance(str(tmp_path)) == expected, text


def test_a_folders_candidates_default_is_read_and_checked(tmp_path):
    from app.registry import SAMPLING_DEFAULTS, model_info

    shutil.copytree(Registry().folder("ntm-mnist28"), tmp_path / "m", ignore=shutil.ignore_patterns("*.safetensors"))
    for text, expected in (('{"num_candidates": 4}', 4), ('{"num_candidates": 2.5}', 1), ('{"num_candidates": 9}', 1),
                           ('{"num_candidates": "4"}', 1), ('{"guidance_scale": 5}', 1)):
        (tmp_path / "m" / SAMPLING_DEFAULTS).write_text(text)
        assert model_info("m", str(tmp_path / "m")).num_candidates == expected, text


def test_compare_offers_beside_a_model_only_other_models_of_its_data(registry):
    from app.compare import baseline_choices, baseline_update

    shapes = baseline_choices(registry, "ntm-shapes32")
    assert {"fm-shapes32", "gauss-shapes32"} <= set(shapes)
    assert "ntm-shapes32" not in shapes and "ntm-mnist28" not in shapes  # not itself; a digit model draws no shapes
    digits = baseline_choices(registry, "ntm-mnist28")
    assert "ntm-mnist28" not in digits and not {"fm-shapes32", "gauss-shapes32", "ntm-shapes32"} & set(digits)
    update = baseline_update(registry, "ntm-mnist28", ["fm-shapes32"])
    labels = [c[0] if isinstance(c, tuple) else c for c in update.choices]
    assert update.value == [] and labels == digits  # a tick that is no longer offered is dropped
    assert baseline_update(registry, "gauss-shapes32", ["fm-shapes32", "gauss-shapes32"]).value == ["fm-shapes32"]


def test_latents_say_when_the_transporter_is_still_the_identity(registry):
    """The bundled default is NTM at step 0 of its finetune (f_T = identity), gauss-shapes32 has no transporter: the
    Latents tab says so instead of showing an unexplained zero displacement; a moved f_T gets no note."""
    import torch

    from app.latents import inspect_latents, transporter_note

    note, *_ = inspect_latents(registry, "a red circle", "ntm-shapes32", 2, 3.0, 0, False)
    assert "still the identity" in note
    note, *_ = inspect_latents(registry, "a red circle", "gauss-shapes32", 2, 3.0, 0, False)
    assert "Gaussian-only ablation" in note
    pipe = registry.get_ntm("ntm-shapes32")
    out = pipe("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0), denoise="none",
               return_trajectory=True)
    out.trajectory.u = out.trajectory.u + 1e-3  # what a finetuned transporter's displacement looks like
    assert transporter_note(pipe, out.trajectory) == ""


def test_the_k_slider_says_which_lengths_the_model_trained_at(registry):
    """ntm-mnist28 trained at K = 1, 2, 4 (its zero-shot accuracy falls from 0.60 at K = 4 to 0.27 at K = 8); the
    default is still its flow-matching model (step 0), any K; a flow-matching model has no K."""
    from app.likelihood import k_slider
    from app.registry import trajectory_lengths

    assert k_slider(registry, "ntm-mnist28").info.startswith("trained at K = 1, 2, 4 (")
    assert "finetune step 0" in k_slider(registry, "ntm-shapes32").info
    assert trajectory_lengths(registry.folder("fm-shapes32")) == ""
    assert k_slider(registry, "no-such-model").info == ""


def test_a_denoiser_run_reports_the_lengths_of_its_ntm(tmp_path):
    """A denoiser's run points (init_from) to the NTM it was distilled from, whose training says what K it saw."""
    import json

    import yaml

    from app.registry import trajectory_lengths

    ntm = tmp_path / "ntm"
    (ntm / "pipeline" / "scheduler").mkdir(parents=True)
    (ntm / "pipeline" / "scheduler" / "scheduler_config.json").write_text(json.dumps({"train_num_steps": [2, 4]}))
    (ntm / "config.yaml").write_text(yaml.safe_dump({"objective": "ntm"}))
    (ntm / "status.json").write_text(json.dumps({"objective": "ntm", "step": 100}))
    den = tmp_path / "den"
    (den / "pipeline" / "scheduler").mkdir(parents=True)
    (den / "pipeline" / "scheduler" / "scheduler_config.json").write_text(json.dumps({"train_num_steps": [2, 4]}))
    (den / "config.yaml").write_text(yaml.safe_dump({"objective": "denoiser", "init_from": str(ntm / "pipeline")}))
    (den / "status.json").write_text(json.dumps({"objective": "denoiser", "step": 50}))
    assert trajectory_lengths(str(den / "pipeline")).startswith("trained at K = 2, 4 (")
    (ntm / "status.json").write_text(json.dumps({"objective": "fm_to_ntm", "step": 0}))
    assert "step 0" in trajectory_lengths(str(den / "pipeline"))


def test_likelihood_prompts_outside_a_models_words_get_the_note(registry):
    """The Likelihood tab's prompt and candidate lines get Generate's note on words the model never saw."""
    from app.widgets import vocabulary_note

    shapes_lines = "a yellow circle and a yellow triangle\na red square"
    note = vocabulary_note(registry, shapes_lines, "ntm-mnist28", scoring=True)
    assert note["visible"] and "'yellow'" in note["value"] and "'square'" in note["value"]
    assert "a likelihood under such a prompt does not measure" in note["value"]
    assert "will draw" in vocabulary_note(registry, shapes_lines, "ntm-mnist28")["value"]
    assert vocabulary_note(registry, shapes_lines, "ntm-shapes32")["visible"] is False
    assert vocabulary_note(registry, "a handwritten digit seven\na handwritten digit one", "ntm-mnist28")[
        "visible"] is False
    assert vocabulary_note(registry, "a red circle", "no-such-model")["visible"] is False


def test_generate_checks_shapes_prompts_with_the_evaluator():
    """Under each image of a shapes prompt: ✓/✗ from the evaluator, and the note counts them and says what it found;
    other datasets' prompts and text outside the grammar are not checked (no mark, and the note says why)."""
    import numpy as np
    from PIL import Image

    from app.generate import evaluator_note, evaluator_readings, mark
    from ntm_core.data.shapes import render, spec_of_caption

    prompt = "a red circle to the left of a blue square"
    spec, rng = spec_of_caption(prompt), np.random.default_rng(0)
    good = Image.fromarray(render(spec, rng)[0])
    swapped = Image.fromarray(render(spec_of_caption("a blue square to the left of a red circle"), rng)[0])
    checks = evaluator_readings("shapes", [prompt] * 3, [good, swapped, Image.new("RGB", (32, 32))])
    assert [c[0] for c in checks] == [True, False, False]
    assert [mark(c) for c in checks] == ["✓ ", "✗ ", "✗ "]
    note = evaluator_note(checks, ["seed 5", "seed 6", "seed 7"], "shapes")
    assert "The evaluator accepts 1 of 3" in note
    assert "seed 6: a red circle and a blue square, the red circle right of the blue square" in note
    assert "seed 7: no shape" in note and "seed 5" not in note
    assert evaluator_readings("mnist", ["a handwritten digit 7"], [good]) == [None] and mark(None) == ""
    assert evaluator_readings("shapes", ["a cat on a mat"], [good]) == [None]
    assert "not checked" in evaluator_note([None], ["seed 0"], "shapes")
    assert evaluator_note([None], ["seed 0"], "mnist") == ""


def test_candidates_are_checked_against_the_model(registry):
    def candidates_problem(model, candidates, steps=4):
        return problems(registry, "a red circle", model, steps, 3.0, 1.0, 0, False, 1, "none", candidates)[-1]
    assert candidates_problem("ntm-shapes32", 4) is None and candidates_problem("fm-shapes32", 1, 50) is None
    assert candidates_problem("fm-shapes32", 4, 50) is None, "ignored, as its temperature (the slider is disabled)"
    assert "between 1 and 8" in candidates_problem("ntm-shapes32", 9)
    assert "whole number" in candidates_problem("ntm-shapes32", 2.5)


def test_the_example_grid_outlives_the_pruning_of_output_files(registry, tmp_path):
    """The grid every visitor's page opens on is drawn once per model and handed out for the server's lifetime. Its
    PNGs must outlive the hourly pruning of output files: gradio re-copies a served file from its source once its
    own copy is deleted, and a pruned source showed as eight broken images on the landing page (seen in Chromium)."""
    from app.generate import ExampleGrid

    files = OutputFiles(str(tmp_path / "out"), max_age=60)
    grid = ExampleGrid(registry, files)
    items, note = grid("fm-shapes32")
    paths = [path for path, _ in items]
    assert len(paths) == 8 and "evaluator" in note
    for path in paths:
        os.utime(os.path.dirname(path), (time.time() - 120, time.time() - 120))
    files.new_folder()  # the next user's output prunes what is older than max_age
    assert all(os.path.exists(p) for p in paths)
    assert grid("fm-shapes32")[0] == items, "drawn once, the same files handed out again"


def test_loaded_pipelines_stay_bounded_and_a_re_export_replaces_its_model(tmp_path, monkeypatch):
    """A server whose users train job after job keeps at most MAX_LOADED pipelines (the least recently used go), and
    a folder exported again is loaded afresh, its old pipeline dropped rather than kept beside it."""
    import app.registry as registry_module

    folders = {}
    for i in range(Registry.MAX_LOADED + 3):
        folder = tmp_path / f"m{i}"
        folder.mkdir()
        (folder / "model_index.json").write_text("{}")
        folders[f"m{i}"] = str(folder)
    loads = []

    class Fake:
        def to(self, device):
            return self

    def fake_load(folder):
        loads.append(os.path.basename(folder))
        return Fake()

    monkeypatch.setattr(registry_module, "load_pipeline", fake_load)
    monkeypatch.setattr(Registry, "folder", lambda self, label: folders.get(label))
    r = Registry()
    first = r.get("m0")
    for i in range(1, Registry.MAX_LOADED):
        r.get(f"m{i}")
    assert r.get("m0") is first and loads.count("m0") == 1, "kept while within the bound"
    for i in range(Registry.MAX_LOADED, Registry.MAX_LOADED + 3):
        r.get(f"m{i}")
    assert len(r._loaded) == Registry.MAX_LOADED
    assert r.get("m0") is first, "m0 was used recently: m1–m3 went instead"
    r.get("m1")
    assert loads.count("m1") == 2, "an evicted model is loaded again when asked for"
    index = os.path.join(folders["m0"], "model_index.json")
    os.utime(index, (time.time() + 10, time.time() + 10))  # exported again
    assert r.get("m0") is not first
    assert len(r._loaded) == Registry.MAX_LOADED and all(p is not first for _, p in r._loaded.values()), \
        "the re-export replaced the old pipeline rather than being kept beside it"
