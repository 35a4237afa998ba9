"""The web viewer end to end in a real headless Chromium (Debian's, driven by Playwright), against a live server."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from meddx_testutils import REPO, data_dir
from trained_runs import API_KEY, busi_image

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "tests" / "artifacts"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def page():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="meddx-chromium-")
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, viewport={"width": 1280, "height": 860},
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"])
        try:
            pg = ctx.new_page()
            # offline: any request that leaves the server under test fails the test
            outside = []
            pg.on("request", lambda r: outside.append(r.url) if not r.url.startswith(("http://127.0.0.1", "blob:",
                                                                                        "data:")) else None)
            pg.outside = outside
            pg.failed = []   # every answer of 400 or more from the server, e.g. a missing favicon
            pg.on("response", lambda r: pg.failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            yield pg
        finally:
            ctx.close()
            shutil.rmtree(profile, ignore_errors=True)


def _canvas_alpha_share(pg, cid: str) -> float:
    return pg.evaluate("""(id) => { const c = document.getElementById(id);
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
        return n / (c.width * c.height); }""", cid)


def _set_range(pg, cid: str, value: float) -> None:
    pg.evaluate("([id, v]) => { const e = document.getElementById(id); e.value = String(v); "
                "e.dispatchEvent(new Event('input')); }", [cid, value])


def _open_viewer(pg, live_server) -> None:
    pg.goto(live_server + "/")
    assert pg.title() == "meddx viewer"
    pg.fill("#apikey", API_KEY)
    pg.dispatch_event("#apikey", "change")


def test_viewer_upload_shows_label_overlay_and_card(page, live_server):
    pg = page
    _open_viewer(pg, live_server)
    pg.wait_for_function("document.getElementById('card').textContent.includes('Intended use')", timeout=60_000)
    img = busi_image("malignant", 5)
    pg.set_input_files("#file", str(img))
    pg.wait_for_selector("body[data-state=done]", timeout=120_000)
    label = pg.inner_text("#label")
    assert label in ("benign", "malignant", "normal")
    assert pg.inner_text("#refer") in ("Refer to an expert (uncertain)", "Within the confident range")
    assert pg.get_attribute("#heatmap", "data-drawn") == "true"
    assert _canvas_alpha_share(pg, "heatmap") > 0.5  # the heatmap layer covers the image
    w, h = pg.evaluate("[document.getElementById('image').width, document.getElementById('image').height]")
    from PIL import Image

    assert (w, h) == Image.open(img).size
    before = pg.evaluate("document.getElementById('image').getContext('2d').getImageData(0,0,1,1).data[0]")
    pg.select_option("#preset", "1")  # full range: the image is redrawn with another window
    _set_range(pg, "heatalpha", 0)
    assert "Test metrics" in pg.text_content("#card")  # inside a closed <details>: not rendered text
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    _set_range(pg, "heatalpha", 0.5)
    pg.evaluate("document.getElementById('cardbox').open = true")
    pg.screenshot(path=str(ARTIFACTS / "viewer.png"), full_page=True)
    assert (ARTIFACTS / "viewer.png").stat().st_size > 10_000
    assert before is not None
    assert not pg.outside, f"the viewer fetched outside the server: {pg.outside}"
    assert not pg.failed, f"the viewer asked for what the server does not have: {pg.failed}"


def test_viewer_dicom_window_presets_and_bad_file(page, live_server, tmp_path):
    pg = page
    if not pg.url.startswith(live_server):  # run on its own, not after the test above
        _open_viewer(pg, live_server)
    f = data_dir() / "dicom" / "tcia_brain_tumor_progression_PGBM-001" / "35623-FLAIRreg-79237" / "000012.dcm"
    pg.set_input_files("#file", str(f))
    pg.wait_for_function("document.getElementById('status').textContent.startsWith('Done: 000012.dcm')",
                         timeout=120_000)
    options = pg.eval_on_selector_all("#preset option", "els => els.map(e => e.textContent)")
    assert any(o.startswith("Auto") for o in options) and len(options) >= 3  # plus the file's own window
    assert pg.input_value("#preset") == "2"  # the DICOM's own window is applied first
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    pg.set_input_files("#file", str(bad))
    pg.wait_for_selector("body[data-state=error]", timeout=60_000)
    msg = pg.inner_text("#status")
    assert "broken.png" in msg and "422" in msg
