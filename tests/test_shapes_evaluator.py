"""The GenEval-like evaluator: 1.00 on held-out real dataset images, near 0 on noise, and it catches mistakes —
including blobs and patch fragments that are the right colour but no shape the dataset draws."""
import numpy as np
import torch

from ntm_core.data.shapes_eval import FIT_IOU, check, colours_match, detect_objects, score, shape_fit
from ntm_core.images import to_uint8
from ntm_core.data.shapes import COLORS, ShapesDataset, Spec, render, shape_mask


def test_scores_real_held_out_images_1():
    ds = ShapesDataset("test", seed=11)
    items = [ds[i] for i in range(500)]
    table = score([it["image"] for it in items], [it["spec"] for it in items])
    assert (table["score"] == 1.0).all() and (table["colour_match"] == 1.0).all(), table
    assert (table["shape_fit"] >= 0.94).all(), table
    # every drawn shape fits its ideal one well clear of the threshold (889 shapes here; the worst at 0.94)
    assert min(o["fit"] for it in items for o in detect_objects(it["image"])) >= FIT_IOU + 0.1


def test_scores_noise_near_zero():
    rng = np.random.default_rng(0)
    ds = ShapesDataset("test", seed=11)
    specs = [ds[i]["spec"] for i in range(200)]
    noise = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in specs]
    on_noise = score(noise, specs).loc["overall"]
    assert on_noise["score"] <= 0.02 and on_noise["colour_match"] <= 0.02
    black = [np.zeros((32, 32, 3), np.uint8) for _ in specs]
    on_black = score(black, specs).loc["overall"]
    assert on_black["score"] == 0.0 and on_black["colour_match"] == 0.0 and on_black["shape_fit"] == 0.0
    assert on_noise["shape_fit"] < 0.3


def test_colour_match_ignores_kind_and_count_but_not_colour():
    rng = np.random.default_rng(3)
    red_circle = Spec("single_object", (("red", "circle"),))
    img, _ = render(Spec("counting", (("red", "square"),), count=2), rng)
    assert colours_match(red_circle, img) and not check(red_circle, img)
    img, _ = render(Spec("two_object", (("red", "circle"), ("blue", "circle"))), rng)
    assert not colours_match(red_circle, img)


def test_rejects_images_of_another_prompt():
    rng = np.random.default_rng(1)
    red_circle = Spec("single_object", (("red", "circle"),))
    for wrong in [Spec("single_object", (("blue", "circle"),)), Spec("single_object", (("red", "square"),)),
                  Spec("counting", (("red", "circle"),), count=2)]:
        img, _ = render(wrong, rng)
        assert not check(red_circle, img)
    left = Spec("position", (("red", "circle"), ("blue", "square")), relation="left of")
    right = Spec("position", (("red", "circle"), ("blue", "square")), relation="right of")
    img, _ = render(left, rng)
    assert check(left, img) and not check(right, img)


def _painted(mask, colour):
    img = np.zeros((32, 32, 3), np.uint8)
    img[mask] = COLORS[colour]
    return img


def test_rejects_right_coloured_things_that_are_no_drawn_shape():
    """What the first bundled models drew and the earlier kind-by-fill rule accepted: a small round blob as "a
    circle", a staircase of 4×4 patch blocks as "a triangle", and a shape far larger than any the dataset draws."""
    stair = np.zeros((32, 32), bool)
    stair[8:12, 16:20] = stair[12:16, 12:24] = True
    for colour, kind, mask in [("yellow", "circle", shape_mask("circle", 6, 16, 16, 32, 32)),
                               ("red", "triangle", stair), ("blue", "square", shape_mask("square", 22, 16, 16, 32, 32))]:
        spec = Spec("single_object", ((colour, kind),))
        assert colours_match(spec, _painted(mask, colour)) and not check(spec, _painted(mask, colour))
        assert [o["kind"] for o in detect_objects(_painted(mask, colour))] == ["unrecognised"]
        drawn = _painted(shape_mask(kind, 11, 15.3, 16.7, 32, 32), colour)  # the same prompt, drawn as rendered
        assert check(spec, drawn)
        # the graded diagnostic orders them the same way: each refused thing reads below the drawn shape
        assert shape_fit(detect_objects(_painted(mask, colour))) < 0.9 <= shape_fit(detect_objects(drawn))


def test_detects_kinds_colours_and_counts():
    rng = np.random.default_rng(2)
    for kind in ("circle", "square", "triangle"):
        for n in (1, 2, 3):
            img, placed = render(Spec("counting", (("yellow", kind),), count=n), rng)
            found = detect_objects(img)
            assert [(o["colour"], o["kind"]) for o in found] == [("yellow", kind)] * n
    assert to_uint8(np.full((3, 4, 4), 1.0, np.float32)).max() == 255


def test_score_model_pairs_each_image_with_its_own_prompt():
    """A 'model' that draws exactly what each caption asks scores 1.0 through score_model (in batches that do not
    divide the prompt count); the same model drawing the *next* prompt's picture, far lower."""
    import torch

    from analysis.score_model import score_model
    from ntm_core.data.shapes import Spec, eval_prompts, from_uint8

    prompts = eval_prompts(4)
    spec_of = {p["caption"]: Spec.from_dict(p["spec"]) for p in prompts}
    assert len(spec_of) == len(prompts)  # each caption names one spec

    class Drawer:
        def __init__(self, shift):
            self.shift, self.calls = shift, []

        def __call__(self, captions, num_inference_steps, guidance_scale, generator, output_type, **options):
            self.calls.append((len(captions), num_inference_steps, options))
            keys = list(spec_of)
            pick = [keys[(keys.index(c) + self.shift) % len(keys)] for c in captions]
            imgs = [from_uint8(render(spec_of[c], np.random.default_rng(i))[0]) for i, c in enumerate(pick)]
            return type("Out", (), {"images": torch.stack(imgs)})()

    right = Drawer(0)
    table = score_model(right, 4, {"denoise": "score"}, per_category=4, batch=7)
    assert table.loc["overall", "score"] == 1.0 and table.loc["overall", "n"] == len(prompts)
    assert [c[0] for c in right.calls] == [7] * (len(prompts) // 7) + [len(prompts) % 7]
    assert all(c[1:] == (4, {"denoise": "score"}) for c in right.calls)
    assert score_model(Drawer(1), 4, per_category=4, batch=7).loc["overall", "score"] < 0.5


def test_score_model_cli_passes_numeric_options_as_numbers(monkeypatch, tmp_path):
    """`--option temperature=0.5 denoise=score` reaches the pipeline as 0.5 (a number, as a sampler multiplies by
    it) and "score" (a word); the table is written."""
    import torch

    import analysis.score_model as sm
    from ntm_core.data.shapes import Spec, eval_prompts, from_uint8

    spec_of = {p["caption"]: Spec.from_dict(p["spec"]) for p in eval_prompts(1, categories=["single_object"])}
    seen = []

    class Drawer:
        def to(self, device):
            return self

        def __call__(self, captions, num_inference_steps, guidance_scale, generator, output_type, **options):
            seen.append(options)
            imgs = [from_uint8(render(spec_of[c], np.random.default_rng(0))[0]) for c in captions]
            return type("Out", (), {"images": torch.stack(imgs)})()

    monkeypatch.setattr(sm, "load_pipeline", lambda path: Drawer())
    sm.main(["some-model", "--steps", "4", "--option", "temperature=0.5", "denoise=score", "--per-category", "1",
             "--categories", "single_object", "--out", str(tmp_path / "s")])
    assert seen and all(o == {"temperature": 0.5, "denoise": "score"} for o in seen)
    assert isinstance(seen[0]["temperature"], float) and (tmp_path / "s.json").exists()


def test_reading_says_in_words_what_the_check_decided():
    from ntm_core.data.shapes_eval import reading
    from ntm_core.data.shapes import spec_of_caption

    rng = np.random.default_rng(3)
    left = spec_of_caption("a red circle to the left of a blue square")
    img, _ = render(left, rng)
    assert reading(left, img) == (True, "a red circle and a blue square, the red circle left of the blue square")
    right = spec_of_caption("a red circle to the right of a blue square")
    ok, words = reading(right, img)  # the same image against the opposite relation: rejected, with the reason
    assert not ok and words.endswith("the red circle left of the blue square")
    three = spec_of_caption("three green triangles")
    img, _ = render(three, rng)
    assert reading(three, img) == (True, "three green triangles")
    circle = spec_of_caption("a red circle")
    big = np.zeros((32, 32, 3), np.uint8)
    big[shape_mask("circle", 20, 16, 16, 32, 32)] = COLORS["red"]
    assert reading(circle, big) == (False, "a red shape of 20 px (the data's are 8–14)")
    smear = np.zeros((32, 32, 3), np.uint8)
    smear[8:20, 8:11] = COLORS["red"]  # 12 px tall, 3 wide: a drawn size, but no circle, square or triangle
    assert reading(circle, smear) == (False, "a red blob")
    assert reading(circle, np.zeros((32, 32, 3), np.uint8)) == (False, "no shape")
    assert reading(circle, torch.zeros(3, 32, 32) - 1.0) == (False, "no shape")  # model scaling too


def test_failures_name_the_first_reason_and_the_table_adds_up_to_the_score():
    from ntm_core.data.shapes_eval import failure, failure_table, per_image
    from ntm_core.data.shapes import spec_of_caption

    rng = np.random.default_rng(4)
    left = spec_of_caption("a red circle to the left of a blue square")
    img, _ = render(left, rng)
    swapped_spec = spec_of_caption("a red circle to the right of a blue square")
    assert failure(left, detect_objects(img)) is None
    assert failure(swapped_spec, detect_objects(img)) == "relation"
    two, _ = render(spec_of_caption("two red circles"), rng)
    assert failure(spec_of_caption("three red circles"), detect_objects(two)) == "count"
    assert failure(spec_of_caption("two blue circles"), detect_objects(two)) == "colour or kind"
    smear = np.zeros((32, 32, 3), np.uint8)
    smear[8:20, 8:11] = COLORS["red"]
    assert failure(spec_of_caption("a red circle"), detect_objects(smear)) == "unrecognised shape"
    assert failure(spec_of_caption("a red circle"), []) == "no shape"
    images = [img, img, two, smear]
    specs = [left, swapped_spec, spec_of_caption("two red circles"), spec_of_caption("a red circle")]
    rows = per_image(images, specs)
    assert rows["correct"].tolist() == [True, False, True, False]
    assert rows["failure"].fillna("passes").tolist() == ["passes", "relation", "passes", "unrecognised shape"]
    table = failure_table(rows)
    assert np.allclose(table.sum(axis=1), 1.0)
    assert np.allclose(table["passes"], score(images, specs)["score"].reindex(table.index)), table


def test_relation_table_tells_the_axis_from_the_side():
    """Renders of position specs: every relation drawn as asked. Mirrored left–right, the same renders keep their
    axis and lose their side on the horizontal relations only; the vertical ones stay right."""
    from ntm_core.data.shapes_eval import per_image, relation_table

    rng = np.random.default_rng(0)
    specs = [Spec("position", (("red", "circle"), ("blue", "square")), relation=r)
             for r in ("left of", "right of", "above", "below") for _ in range(4)]
    images = [render(s, rng)[0] for s in specs]
    table = relation_table(per_image(images, specs))
    assert table.loc["overall", "images"] == 16 and table.loc["overall", "axis right"] == 1.0
    assert table.loc["overall", "side right, axis right"] == 1.0 and table.loc["left of", "drawn left of"] == 1.0
    mirrored = relation_table(per_image([np.ascontiguousarray(im[:, ::-1]) for im in images], specs))
    assert mirrored.loc["overall", "axis right"] == 1.0 and mirrored.loc["overall", "side right, axis right"] == 0.5
    assert mirrored.loc["left of", "drawn right of"] == 1.0 and mirrored.loc["above", "drawn above"] == 1.0
    one_missing = per_image([np.zeros((32, 32, 3), np.uint8)] + images[1:], specs)
    assert relation_table(one_missing).loc["overall", "images"] == 15, "an image without both objects is left out"
