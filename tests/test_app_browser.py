"""The app in a real browser: headless Chromium (Debian's package) driven by Playwright — type a prompt, click
Generate, wait for the gallery; open the Likelihood tab, upload an image, rank prompts. Screenshots are kept
in $NTM_SCREENSHOTS (default: the test's temp folder)."""
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from .browser_helpers import CHROMIUM, CHROMIUM_ARGS, AppServer, make_models

PROMPT = "#gen-prompt input, #gen-prompt textarea"
pytestmark = [
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed (.ci/run installs it)"),
    pytest.mark.slow,
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    srv = AppServer(make_models(str(root)), str(root))
    yield srv
    srv.stop()


# the upload's note holds a new ranking: not the one before, and no longer under the running event's overlay (its
# timer "1.6s" and progress "… - 10.0%" come first in the text)
RANKED_ANEW = ("t => { const n = document.querySelector('#lik-note').innerText.trim();"
               " return n !== t.trim() && /^(Most likely|No clear winner)/.test(n); }")


def test_generate_and_upload_in_chromium(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    shots = os.environ.get("NTM_SCREENSHOTS", str(tmp_path))
    os.makedirs(shots, exist_ok=True)
    png = tmp_path / "upload.png"
    arr = np.zeros((64, 48, 3), np.uint8)
    arr[10:30, 10:30] = (255, 0, 0)
    Image.fromarray(arr).save(png)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(server.url, wait_until="networkidle")
        page.locator(PROMPT).fill("a red circle to the left of a blue square")
        page.locator("#gen-button").click()
        page.get_by_text("image(s) in").first.wait_for(timeout=90_000)
        assert page.locator("#gen-gallery img").count() >= 1
        page.screenshot(path=os.path.join(shots, "generate.png"), full_page=True)

        page.get_by_role("tab", name="Likelihood").click()
        page.get_by_role("tab", name="An uploaded image").click()
        page.locator("#lik-seen img").first.wait_for(timeout=90_000)  # it opens on the example upload's ranking
        example_note = page.locator("#lik-note").inner_text()
        page.locator("#lik-upload button[aria-label=Clear]").click()  # the example out, the user's image in
        page.locator("#lik-upload input[type=file]").set_input_files(str(png))  # ranked on upload, no click
        page.wait_for_function(RANKED_ANEW, arg=example_note, timeout=90_000)
        page.get_by_text("Ranking (zero-shot classification)").first.wait_for(timeout=30_000)
        # plotly is bundled: no CDN (the other sub-tab's charts are in the page too, hidden)
        page.locator(".js-plotly-plot .main-svg").filter(visible=True).first.wait_for(timeout=30_000)
        assert page.locator(".js-plotly-plot").filter(visible=True).count() >= 2, "the ranking and per-step charts"
        page.wait_for_timeout(500)
        page.screenshot(path=os.path.join(shots, "likelihood.png"), full_page=True)
        # an example upload, clicked, comes with its prompts and is ranked at once
        own_note = page.locator("#lik-note").inner_text()
        page.get_by_text("mnist-digit.png").first.click()
        page.wait_for_function(RANKED_ANEW, arg=own_note, timeout=90_000)
        assert "handwritten digit" in page.locator("#lik-note").inner_text()
        browser.close()


def _browser(p):
    return p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@pytest.mark.parametrize("size", [(1280, 800), (390, 844)])
def test_run_is_above_the_fold_and_examples_render_on_load(server, size, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = _browser(p)
        page = browser.new_page(viewport={"width": size[0], "height": size[1]})
        page.goto(server.url, wait_until="networkidle")
        run = page.locator("#gen-button").bounding_box()
        prompt = page.locator(PROMPT).first.bounding_box()
        assert run["y"] + run["height"] <= size[1] and run["x"] + run["width"] <= size[0], run
        assert abs((prompt["y"] + prompt["height"] / 2) - (run["y"] + run["height"] / 2)) < 25, "prompt and Run: one row"
        # before any click: the model's example grid
        page.locator("#gen-gallery img").first.wait_for(timeout=120_000)
        assert page.locator("#gen-gallery img").count() >= 4
        assert page.get_by_text("example ·").count() >= 1
        assert page.locator("#gen-examples").is_visible()
        assert not page.get_by_text("Guidance scale").first.is_visible(), "advanced settings start closed"
        page.screenshot(path=os.path.join(os.environ.get("NTM_SCREENSHOTS", str(tmp_path)), f"landing-{size[0]}.png"))
        browser.close()


def test_enter_runs_and_an_error_badges_nothing_else(server):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = _browser(p)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(server.url, wait_until="networkidle")
        page.locator("#gen-gallery img").first.wait_for(timeout=120_000)
        page.locator(PROMPT).first.fill("two green triangles")
        page.locator(PROMPT).first.press("Enter")
        page.get_by_text("image(s) in").first.wait_for(timeout=90_000)
        assert page.get_by_text("seed ").count() >= 1, "the Enter key ran a generation"
        shown = page.locator("#gen-gallery img").count()
        # an empty prompt: the message sits on the prompt; the gallery, note and seed keep their values, unbadged
        page.locator(PROMPT).first.fill("")
        page.locator("#gen-button").click()
        page.get_by_text("write a prompt").first.wait_for(timeout=30_000)
        page.wait_for_timeout(1000)
        assert page.get_by_text("Error", exact=True).count() == 0, "no Error badge on any output"
        assert page.locator("#gen-gallery img").count() == shown and page.get_by_text("image(s) in").first.is_visible()
        browser.close()


def test_a_model_exported_while_the_page_is_open_joins_the_pickers(server):
    """A job that finishes while a user has the page open: its model is in Generate's picker once the user changes
    tabs, without a reload."""
    sync_api = pytest.importorskip("playwright.sync_api")
    label = "trained: late-job"
    with sync_api.sync_playwright() as p:
        browser = _browser(p)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(server.url, wait_until="networkidle")
        picker = page.get_by_label("Model", exact=True).first
        picker.click()
        page.get_by_role("option", name="trained: ntm", exact=True).wait_for(timeout=10_000)
        assert page.get_by_role("option", name=label, exact=True).count() == 0
        page.keyboard.press("Escape")
        # what a finishing job leaves: its run folder with an exported pipeline
        shutil.copytree(os.path.join(server.runs, "ntm", "pipeline"), os.path.join(server.runs, "late-job", "pipeline"))
        try:
            page.get_by_role("tab", name="Train").click()  # where the user watched the job
            page.get_by_role("tab", name="Generate").click()
            page.wait_for_timeout(1500)
            picker.click()
            page.get_by_role("option", name=label, exact=True).wait_for(timeout=10_000)
        finally:
            shutil.rmtree(os.path.join(server.runs, "late-job"))
        browser.close()


def test_compare_latents_and_likelihood_open_on_a_result(server):
    """Opening Compare, Latents or Likelihood (each of its two parts; the upload part on its loaded example) runs it
    once with the tab's defaults: a visitor sees what it shows before they click; a second visit keeps what is
    shown."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = _browser(p)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(server.url, wait_until="networkidle")
        for tab, shown in (("Latents", "#lat-gallery img"), ("Compare", "#cmp-gallery img"),
                           ("Likelihood", "#likg-gallery img"), ("An uploaded image", "#lik-seen img")):
            assert page.locator(shown).count() == 0
            page.get_by_role("tab", name=tab).click()
            page.locator(shown).first.wait_for(timeout=60_000)
        page.get_by_role("tab", name="Latents").click()
        page.wait_for_timeout(2000)
        assert page.locator("#lat-gallery img").count() > 0, "a second visit keeps the result"
        assert page.locator(".js-plotly-plot").count() >= 2, "with its plots"
        browser.close()
