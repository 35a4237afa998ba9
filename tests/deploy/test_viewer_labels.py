"""The viewer's result panel against mocked /v1 answers (real headless Chromium, no model, no server):
fast checks of how it labels what the API sent."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from meddx.deploy.server import VIEWER_DIR

CHROMIUM = Path("/usr/bin/chromium")


def _seg_answer() -> dict:
    return {"task": "segment", "model_version": "run@0123456789ab", "label": "lesion", "label_index": 1,
            "probabilities": {"background": 0.9, "lesion": 0.6}, "calibrated_probabilities": None,
            "confidence": 0.6, "segmentation": {"lesion": {"pixels": 4, "area_mm2": None}},
            "uncertainty": None, "refer": None, "explanation": None, "id": "r1",
            "image": {"width": 2, "height": 2, "channels": 1, "spatial_shape": [2, 2], "slice": None, "min": 0.0,
                      "max": 3.0, "p01": 0.0, "p99": 3.0, "format": "png", "modality": None, "window_presets": []},
            "urls": {"pixels": "/v1/results/r1/pixels", "overlay": "/v1/results/r1/overlay.png", "heatmap": None,
                     "mask": None}}


def test_segmenter_probabilities_are_not_called_calibrated(tmp_path):
    """A segmenter's answer has calibrated_probabilities null; the viewer showed its per-region mean
    probabilities under the heading 'calibrated probability'."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing")
    from playwright.sync_api import sync_playwright

    card = {"model": "unet", "task": "segment", "model_version": "run@0123456789ab", "classes": ["background", "lesion"],
            "data": {"dataset": "d", "n_test": 1, "split": "seeded"}, "metrics": None, "intended_use": "x",
            "limits": [], "model_card_markdown": None}
    pixels = struct.pack("<4f", 0.0, 1.0, 2.0, 3.0)

    def handle(route):
        path = route.request.url.split("127.0.0.1:9", 1)[1].split("?")[0]
        if path == "/":
            return route.fulfill(path=str(VIEWER_DIR / "index.html"), content_type="text/html")
        if path.startswith("/viewer/"):
            return route.fulfill(path=str(VIEWER_DIR / path.removeprefix("/viewer/")))
        if path == "/v1/model":
            return route.fulfill(body=json.dumps(card), content_type="application/json")
        if path == "/v1/predict":
            return route.fulfill(body=json.dumps(_seg_answer()), content_type="application/json")
        if path == "/v1/results/r1/pixels":
            return route.fulfill(body=pixels, content_type="application/octet-stream")
        return route.fulfill(status=404, body='{"detail": "Not Found"}', content_type="application/json")

    img = tmp_path / "x.png"
    img.write_bytes(b"\x89PNG\r\n\x1a\n")  # never decoded: the answer is mocked
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            pg = browser.new_page()
            pg.route("http://127.0.0.1:9/**", handle)
            pg.goto("http://127.0.0.1:9/")
            pg.fill("#apikey", "k" * 12)
            pg.dispatch_event("#apikey", "change")
            pg.set_input_files("#file", str(img))
            pg.wait_for_selector("body[data-state=done], body[data-state=error]", timeout=30_000)
            assert pg.get_attribute("body", "data-state") == "done", pg.inner_text("#status")
            head = pg.inner_text("#probs thead")
        finally:
            browser.close()
    assert "calibrated" not in head and "mean probability" in head
