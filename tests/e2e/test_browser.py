"""The app in a real browser: Debian's Chromium driven by Playwright, as a user would use it.

Starts the app with the README's command on a free localhost port with a fresh workspace, imports a
zip of hymenoptera photos, trains (reloading the page mid-run), reads Results and predicts. Fails on
any Python exception shown in the page and on JavaScript console errors. Screenshots of every page
visited go to artifacts/screenshots/ in the working tree.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from benchmarks.load_predict import CHROMIUM_ARGS as BROWSER_ARGS
from benchmarks.load_predict import app_server

from ..factories import HYMENOPTERA, REPO, hymenoptera_photos, zip_folder
from . import CHROMIUM, require_chromium

pytestmark = pytest.mark.browser

SHOTS = REPO / "artifacts" / "screenshots"
# Streamlit probes /<page>/_stcore/{health,host-config} before the root ones when a sub-page URL is
# loaded directly (a reload); those 404s are its known behaviour (streamlit/streamlit#7074), nothing else is.
STREAMLIT_DEEP_LINK_PROBE = re.compile(
    r"status of 404 .* at http://127\.0\.0\.1:\d+/[\w-]+/_stcore/(health|host-config)$"
)

require_chromium()
playwright = pytest.importorskip("playwright.sync_api")


@pytest.fixture
def app_url(tmp_path, keras_home_copy):
    env = {
        **os.environ,
        "TL_HOME": str(tmp_path / "workspace"),
        "KERAS_HOME": str(keras_home_copy),
        "TL_WORKER_IDLE_EXIT": "20",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    env.pop("TL_PASSWORD", None)
    with app_server(env, tmp_path / "app.log") as (url, _):  # README's app command on a free loopback port
        yield url
    worker = tmp_path / "workspace" / "worker.pid"
    if worker.exists():
        try:
            os.kill(int(worker.read_text()), 9)
        except OSError:
            pass


@pytest.fixture
def small_zip(tmp_path) -> Path:
    photos = hymenoptera_photos(tmp_path / "photos", {"train": 15}, splits=("train",))
    return zip_folder(photos / "train", tmp_path / "ants_bees.zip", prefix="ants_bees/")


def test_user_flow_in_chromium(app_url, small_zip):
    SHOTS.mkdir(parents=True, exist_ok=True)
    console_errors, page_errors = [], []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 2000})
        page.on(
            "console",
            lambda msg: (
                console_errors.append(f"{msg.text} at {msg.location.get('url')}") if msg.type == "error" else None
            ),
        )
        page.on("pageerror", lambda err: page_errors.append(str(err)))

        def visit(link: str, ready_text: str, shot: str):
            if link == "":
                page.goto(app_url)
            else:  # through the navigation bar, as a user would
                page.get_by_role("link", name=link, exact=True).click()
            page.get_by_text(ready_text).first.wait_for(timeout=60_000)
            settle(shot)

        def settle(shot: str):
            page.wait_for_timeout(1500)
            assert page.locator('[data-testid="stException"]').count() == 0, page.locator(
                '[data-testid="stException"]'
            ).first.inner_text()
            page.screenshot(path=str(SHOTS / f"{shot}.png"), full_page=True)

        visit("", "Next step", "01-home-empty")

        visit("Data", "Add a dataset", "02-data")
        page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(str(small_zip))
        page.get_by_label("Dataset name").first.fill("ants_bees")
        page.get_by_label("Dataset name").first.press("Enter")
        page.get_by_role("button", name="Import zip").click()
        page.get_by_text("Imported 'ants_bees': 30 images in 2 classes").wait_for(timeout=60_000)
        settle("03-data-imported")

        visit("Train", "Start training", "04-train")
        size = page.get_by_role("spinbutton", name="Input size (px)")  # its help button shares the label
        size.fill("96")
        size.press("Enter")
        page.wait_for_timeout(1500)
        epochs = page.get_by_role("spinbutton", name="Epochs", exact=True)
        epochs.fill("4")
        epochs.press("Enter")
        page.wait_for_timeout(1000)
        page.get_by_role("button", name="Start training").click()
        page.get_by_text("Jobs").first.wait_for()
        # the job's id lands in the URL when the page has queued it (the sidebar's "No training job running."
        # matches /running/ before that, so wait for the URL, not for the word)
        page.wait_for_url(re.compile(r"[?&]run="), timeout=60_000)
        page.locator("text=/— (running|queued)/").first.wait_for(timeout=60_000)
        settle("05-train-running")
        page.reload()  # a refresh mid-run still shows the job
        page.locator("text=/running|Finished/").first.wait_for(timeout=60_000)
        settle("06-train-after-reload")
        page.get_by_text("Finished: validation accuracy").wait_for(timeout=300_000)
        settle("07-train-finished")

        visit("Results", "Validation accuracy", "08-results")
        assert page.locator(".js-plotly-plot").count() >= 1
        page.get_by_role("tab", name="Confusion matrix").click()
        page.wait_for_timeout(1500)
        heatmap = page.locator(".js-plotly-plot").filter(has_text="predicted")
        assert heatmap.count() >= 1
        assert "ants" in heatmap.first.inner_text() and "bees" in heatmap.first.inner_text()
        settle("09-results-confusion")

        visit("Predict", "Upload one or more images", "10-predict")
        sample = sorted((HYMENOPTERA / "val" / "bees").glob("*.jpg"))[0]
        page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(str(sample))
        page.get_by_text("Download predictions (CSV)").wait_for(timeout=60_000)
        settle("11-predict-result")
        assert page.locator("text=/ants|bees/").count() > 0
        browser.close()
    print(f"\nscreenshots: {SHOTS}")
    assert not page_errors, page_errors
    assert not [e for e in console_errors if not STREAMLIT_DEEP_LINK_PROBE.search(e)], console_errors
