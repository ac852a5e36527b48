"""The Likelihood tab in plain words: a ranking calls ties within noise, an upload gets a verdict against the
model's in-distribution histogram."""
import numpy as np
import torch

from app.likelihood import rank_candidates, verdict


def test_verdict_against_the_reference():
    ref = np.random.default_rng(0).normal(0.6, 0.05, 2000).tolist()
    pct, words = verdict(0.6, ref)
    assert 40 < pct < 60 and "typical" in words
    pct, words = verdict(6.69, ref)
    assert pct == 100 and "unusual for this model" in words
    pct, words = verdict(0.2, ref)
    assert pct == 0 and "unusually likely" in words


def test_ranking_calls_ties_and_wins():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(16, generator=g) * 0.013  # trajectory noise, shared by every prompt
    scores = torch.stack([
        0.600 + base + 0.002 * torch.randn(16, generator=g),  # a red circle
        0.602 + base + 0.002 * torch.randn(16, generator=g),  # a red square: 0.002 apart, inside the noise
        0.700 + base + 0.002 * torch.randn(16, generator=g),  # two green triangles: far behind
    ])
    rank = rank_candidates(scores, ["a red circle", "a red square", "two green triangles"])
    assert rank["prompt"].tolist()[-1] == "two green triangles"
    # every bits/dim column names its density (here the bound on the noised image x_t0)
    assert all("x_t0" in c for c in rank.columns if "bits/dim" in c) and "bound bits/dim on x_t0" in rank
    verdicts = dict(zip(rank["prompt"], rank["verdict"]))
    assert verdicts["two green triangles"] == "less likely"
    second = rank.iloc[1]
    assert second["verdict"].startswith("tie") or second["Δ vs best"] > 2 * second["Δ std error"]
    # a 0.002 bits/dim gap measured with 2 noisy trajectories, no pairing benefit: a tie
    noisy = torch.tensor([[0.600, 0.630], [0.612, 0.622]])
    assert rank_candidates(noisy, ["a", "b"]).iloc[1]["verdict"].startswith("tie")
    one = rank_candidates(scores[:, :1], ["a", "b", "c"])
    assert one.iloc[1]["verdict"].startswith("can't tell")


def test_the_ranking_figure_shows_what_the_verdicts_are_drawn_from():
    """The plot draws each prompt's paired difference to the best with ±TIE_SE standard-error bars, so a bar that
    crosses 0 is exactly a 'tie' verdict (each prompt's own spread, mostly the shared trajectories', would hide it)."""
    from app.figures import ranking_figure
    from app.likelihood import TIE_SE

    g = torch.Generator().manual_seed(1)
    base = torch.randn(8, generator=g) * 0.05
    scores = torch.stack([0.5 + base, 0.52 + base + 0.002 * torch.randn(8, generator=g), 0.5005 + base + 0.01 *
                          torch.randn(8, generator=g)])
    rank = rank_candidates(scores, ["a", "b", "c"])
    fig = ranking_figure(rank, "prompt", "Δ vs best", "t", error="Δ std error", error_scale=TIE_SE)
    points = fig.data[0]
    assert list(points.y) == rank.sort_values("Δ vs best")["prompt"].tolist() and points.x[0] == 0
    for prompt, x, bar in zip(points.y, points.x, points.error_x.array):
        verdict = rank.set_index("prompt").loc[prompt, "verdict"]
        if verdict != "most likely":
            assert (x - bar <= 0) == verdict.startswith("tie"), (prompt, x, bar, verdict)
    assert {v.split()[0] for v in rank["verdict"]} == {"most", "less", "tie"}  # both kinds are drawn here


def test_real_renders_draw_the_prompt_and_only_where_a_renderer_can():
    from ntm_core.data.shapes_eval import check
    from app.likelihood import real_renders
    from ntm_core.data.shapes import spec_of_caption
    from ntm_core.images import to_uint8

    prompt = "a blue triangle above a green triangle"
    real = real_renders("shapes", prompt, 3, (3, 32, 32), seed=5)
    assert real.shape == (3, 3, 32, 32) and real.min() >= -1 and real.max() <= 1
    assert all(check(spec_of_caption(prompt), im) for im in to_uint8(real))  # each is what the prompt says
    assert torch.equal(real, real_renders("shapes", prompt, 3, (3, 32, 32), seed=5))  # the seed decides them
    assert not torch.equal(real, real_renders("shapes", prompt, 3, (3, 32, 32), seed=6))
    assert real_renders("mnist", "a handwritten digit seven", 2, (1, 28, 28), 0) is None  # no renderer there
    assert real_renders("shapes", "a photo of a dog", 2, (3, 32, 32), 0) is None  # outside the grammar
    assert real_renders("shapes", prompt, 0, (3, 32, 32), 0) is None


def test_the_8bit_bounds_in_chunks_keep_each_image_in_its_column(monkeypatch):
    """eight_bit_bounds runs its gradient pass in chunks of EIGHT_BIT_CHUNK rows (memory); chunks that cut across
    the [trajectories × images] rows must still put every value under its own image: a noise image reads far above
    two clean renders in every trajectory."""
    import app.likelihood as lk
    from ntm_core.images import from_uint8
    from ntm_core.pipeline import load_pipeline

    folder = "assets/ntm-shapes32"
    pipe = load_pipeline(folder)
    prompt = "a red circle"
    clean = lk.real_renders("shapes", prompt, 2, pipe.sample_shape, seed=0)
    noise = from_uint8(np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8))
    x = torch.cat([clean[:1], noise, clean[1:]])
    monkeypatch.setattr(lk, "EIGHT_BIT_CHUNK", 2)  # 3 trajectories × 3 images = 9 rows in chunks of 2
    values, weighted, how = lk.eight_bit_bounds(pipe, x, prompt, 4, 3, 0, folder)
    assert values.shape == (3, 3) and "decoder" in how
    assert (values.argmax(1) == 1).all() and (values[:, 1] > values[:, [0, 2]].max(1).values + 1).all(), values
    # each image's trajectories combined, in its own column: never above their mean, never below the best one
    assert weighted.shape == (3,) and weighted.argmax() == 1
    assert (weighted <= values.mean(0) + 1e-9).all() and (weighted >= values.min(0).values - 1e-9).all()
