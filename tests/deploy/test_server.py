"""The diagnosis API: key, predictions, artefacts, model card, limits, bad uploads, identifiers, concurrency."""

from __future__ import annotations

import io
import json
import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from meddx_testutils import data_dir
from trained_runs import API_KEY, busi_image

pytestmark = pytest.mark.slow
KEY = {"X-API-Key": API_KEY}
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def client(busi):
    from fastapi.testclient import TestClient

    from meddx.deploy.server import create_app

    return TestClient(create_app(busi, api_key=API_KEY))


def post(client, path, name=None, content=None, headers=KEY, **params):
    data = content if content is not None else path.read_bytes()
    return client.post("/v1/predict", files={"file": (name or path.name, data)}, headers=headers, params=params)


def test_key_is_required_and_health_is_open(client):
    img = busi_image()
    assert post(client, img, headers={}).status_code == 401
    r = post(client, img, headers={"X-API-Key": API_KEY + "x"})
    assert r.status_code == 401 and "X-API-Key" in r.json()["detail"]
    assert client.get("/v1/model").status_code == 401
    h = client.get("/v1/health")
    assert h.status_code == 200 and h.json()["status"] == "ok" and "@" in h.json()["model_version"]


def test_predict_png_returns_calibrated_confidence_uncertainty_and_urls(client, busi):
    r = post(client, busi_image("benign", 2))
    assert r.status_code == 200, r.text
    out = r.json()
    cal = json.loads((busi / "calibration.json").read_text())
    tri = json.loads((busi / "triage.json").read_text())
    assert out["label"] in ("benign", "malignant", "normal")
    assert sum(out["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    assert out["confidence"] == pytest.approx(max(out["calibrated_probabilities"].values()), abs=1e-6)
    assert out["temperature"] == pytest.approx(cal["temperature"], abs=1e-6)
    u = out["uncertainty"]
    assert u["method"] == tri["method_used"] and u["threshold"] == tri["threshold"]
    assert out["refer"] == (u["score"] > u["threshold"])
    assert out["model_version"].startswith("busi_run@") and out["explanation"]["method"] == "gradcam"
    for what in ("heatmap", "overlay"):
        g = client.get(out["urls"][what], headers=KEY)
        assert g.status_code == 200 and g.content.startswith(PNG)
    assert out["heatmap_url"] == out["urls"]["heatmap"] and out["overlay_url"] == out["urls"]["overlay"]
    px = client.get(out["urls"]["pixels"], headers=KEY)
    im = out["image"]
    assert len(px.content) == 4 * im["width"] * im["height"] * im["channels"]
    assert client.get(out["urls"]["pixels"]).status_code == 401
    assert client.get("/v1/results/nope/pixels", headers=KEY).status_code == 404


def test_model_card(client, busi):
    c = client.get("/v1/model", headers=KEY).json()
    assert c["classes"] == ["benign", "malignant", "normal"] and c["data"]["n_test"] > 0
    acc = c["metrics"]["overall"]["accuracy"]
    assert acc["ci_low"] <= acc["value"] <= acc["ci_high"]
    assert "clinician" in c["intended_use"] and len(c["limits"]) >= 2
    assert c["calibration"]["temperature"] == json.loads((busi / "calibration.json").read_text())["temperature"]
    assert c["triage"]["threshold"] is not None


def test_openapi_schema_documents_the_api(client):
    s = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/health", "/v1/model"} <= set(s["paths"])
    assert any(v.get("name") == "X-API-Key" for v in s["components"]["securitySchemes"].values())
    assert client.get("/").status_code == 200 and "meddx viewer" in client.get("/").text


def test_the_viewer_has_an_icon_where_browsers_look(client):
    assert 'rel="icon" href="/viewer/icon.svg"' in client.get("/").text
    for url in ("/viewer/icon.svg", "/favicon.ico"):
        r = client.get(url)
        assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml") and b"<svg" in r.content


def test_dicom_keeps_window_presets_and_no_identifiers(client, caplog):
    import pydicom

    caplog.set_level(logging.INFO, logger="meddx.server")
    f = data_dir() / "dicom" / "tcia_brain_tumor_progression_PGBM-001" / "11-T1post-80644" / "000010.dcm"
    r = post(client, f, name="PGBM-001_000010.dcm")
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["image"]["format"] == "dicom" and out["image"]["modality"] == "MR"
    assert {"name": "Algo1", "center": 589.0, "width": 1225.0} in out["image"]["window_presets"]
    ds = pydicom.dcmread(str(f), stop_before_pixels=True)
    ct = data_dir() / "dicom" / "pydicom_data_selection" / "693_UNCR.dcm"
    r2 = post(client, ct)
    assert r2.status_code == 200 and any(p["name"] == "CT lung" for p in r2.json()["image"]["window_presets"])
    ds2 = pydicom.dcmread(str(ct), stop_before_pixels=True)
    ids = [str(d.get(t)) for d in (ds, ds2) for t in ("PatientName", "PatientID") if str(d.get(t) or "")]
    assert ids
    for text in (r.text, r2.text, caplog.text):
        assert not any(i in text for i in ids)


def _png_header_only(w, h):
    import struct
    import zlib

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return PNG + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


@pytest.mark.parametrize("name,content,status,needle", [
    ("empty.png", b"", 400, "empty"),
    # past Pillow's own bomb limit: was 422 with Pillow's words, though it is over the server's pixel limit
    ("huge.png", _png_header_only(60000, 60000), 413, "over this server's limit"),
    ("trunc.png", PNG + b"\0" * 30, 422, "uploaded file"),
    ("notes.png", b"hello, this is not an image at all" * 10, 422, "uploaded file"),
    ("x.dcm", b"\0" * 128 + b"DICM" + b"\x02\x00" * 20, 422, "uploaded file"),
])
def test_bad_uploads_are_4xx_with_a_clear_message(client, name, content, status, needle):
    r = post(client, None, name=name, content=content)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert needle in detail and "/tmp" not in detail and "meddx-upload" not in detail


def test_a_malformed_request_is_one_line_without_echoing_the_upload(client, caplog):
    """A file part without a file name reaches FastAPI as a text field, and its default 422 echoed the
    input: the whole DICOM, patient name and ID included."""
    import pydicom

    caplog.set_level(logging.INFO, logger="meddx.server")
    f = data_dir() / "dicom" / "pydicom_data_selection" / "693_UNCR.dcm"
    ds = pydicom.dcmread(str(f), stop_before_pixels=True)
    ids = [str(ds.get(t)) for t in ("PatientName", "PatientID") if str(ds.get(t) or "")]
    assert ids
    r = client.post("/v1/predict", headers=KEY, files={"file": ("", f.read_bytes(), "application/dicom")})
    assert r.status_code == 422 and isinstance(r.json()["detail"], str), r.text
    assert "file name" in r.json()["detail"] and len(r.text) < 1000
    assert not any(i in r.text or i in caplog.text for i in ids)
    r = client.post("/v1/predict", headers=KEY, params={"explain": "maybe"}, files={"file": (f.name, b"x")})
    assert r.status_code == 422 and "explain" in r.json()["detail"]


def test_codec_nan_and_wrong_dimensionality_are_422(client, tmp_path):
    import nibabel as nib

    jls = data_dir() / "dicom" / "pydicom_data_selection" / "JPEG-LL.dcm"
    r = post(client, jls)
    assert r.status_code == 422 and "pip install" in r.json()["detail"]
    a = np.ones((16, 16, 8), np.float32)
    a[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(a, np.eye(4)), str(tmp_path / "nan.nii.gz"))
    r = post(client, tmp_path / "nan.nii.gz")
    assert r.status_code == 422 and "NaN" in r.json()["detail"]
    nib.save(nib.Nifti1Image(np.random.rand(16, 16, 8).astype(np.float32), np.eye(4)), str(tmp_path / "v.nii.gz"))
    r = post(client, tmp_path / "v.nii.gz")
    assert r.status_code == 422 and "spatial dimensions" in r.json()["detail"]


def test_size_and_pixel_limits_are_413(busi):
    from fastapi.testclient import TestClient

    from meddx.deploy.server import create_app

    small = TestClient(create_app(busi, api_key=API_KEY, max_upload_bytes=10_000, max_pixels=100_000))
    img = busi_image()  # ~500x500 RGB, > 10 kB
    r = post(small, img)
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (400, 300)).save(buf, format="PNG")  # tiny file, 120000 pixels
    r = post(small, None, name="big.png", content=buf.getvalue())
    assert r.status_code == 413, r.text


def test_no_key_configured_refuses_to_start(busi, monkeypatch):
    from meddx.deploy.server import create_app
    from meddx.errors import MeddxError

    monkeypatch.delenv("MEDDX_API_KEY", raising=False)
    with pytest.raises(MeddxError, match="no API key"):
        create_app(busi)


def test_concurrent_requests_are_safe(client):
    img = busi_image("normal", 4).read_bytes()

    def one(_):
        r = client.post("/v1/predict", files={"file": ("n.png", img)}, headers=KEY)
        return r.status_code, r.json().get("probabilities"), r.json().get("uncertainty", {}).get("score")

    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(one, range(16)))
    assert all(s == 200 for s, _, _ in results)
    assert all(p == results[0][1] and u == results[0][2] for _, p, u in results)


def test_segmenter_returns_a_mask(seg_run):
    from fastapi.testclient import TestClient
    from PIL import Image

    from meddx.deploy.server import create_app

    c = TestClient(create_app(seg_run, api_key=API_KEY))
    img = seg_run.parent / "discs" / "case001.png"
    r = post(c, img)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["refer"] is None and out["segmentation"] and out["urls"]["mask"]
    m = Image.open(io.BytesIO(c.get(out["urls"]["mask"], headers=KEY).content))
    assert m.mode == "RGBA" and m.size == (48, 48)
    assert out["explanation"]["method"] == "gradcam"


def test_live_uvicorn_server(live_server):
    import httpx

    assert httpx.get(live_server + "/v1/health").json()["status"] == "ok"
    img = busi_image()
    r = httpx.post(live_server + "/v1/predict", files={"file": (img.name, img.read_bytes())}, timeout=600)
    assert r.status_code == 401
    r = httpx.post(live_server + "/v1/predict", files={"file": (img.name, img.read_bytes())}, headers=KEY,
                   timeout=600)
    assert r.status_code == 200 and r.json()["label"] in ("benign", "malignant", "normal")


def test_serve_without_key_is_a_one_line_error(busi):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "MEDDX_API_KEY"}
    r = subprocess.run([sys.executable, "-m", "meddx.cli", "serve", str(busi)], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 2 and "no API key" in r.stderr and "Traceback" not in r.stderr


def test_one_heatmap_method_per_request_or_server(client, busi):
    """`method=all` (or a list) was accepted and cut to its first method without a word, at start
    (`--explain-method all`) and per request; a response holds one heatmap."""
    from meddx.deploy.server import create_app
    from meddx.errors import MeddxError

    for m in ("all", "gradcam,occlusion"):
        r = post(client, busi_image(), method=m)
        assert r.status_code == 422 and "a response holds one heatmap" in r.json()["detail"], r.text
        with pytest.raises(MeddxError, match="names 2 methods|names 3 methods"):
            create_app(busi, api_key=API_KEY, explain_method=m)
    r = post(client, busi_image(), method="gradcampp")
    assert r.status_code == 200 and r.json()["explanation"]["method"] == "gradcampp"


def test_window_preset_names_are_shown_only_when_they_are_window_words(tmp_path):
    """A preset's name is a free-text tag (WindowCenterWidthExplanation) that a site may fill with anything,
    a patient's name included; the API echoed it (up to 40 characters)."""
    import warnings

    import pydicom

    from meddx.deploy.server import _window_name, dicom_window_presets

    assert [_window_name(t) for t in ("BRAIN", "Lung window", "WINDOW1", "Algo1", "CT abdomen W400 L40")] == \
        ["BRAIN", "Lung window", "WINDOW1", "Algo1", "CT abdomen W400 L40"]
    assert [_window_name(t) for t in ("Doe^John", "PGBM-001", "Dr Smith lung", "", "1234567")] == [None] * 5
    src = data_dir() / "dicom" / "pydicom_data_selection" / "693_UNCR.dcm"
    ds = pydicom.dcmread(src)
    ds.WindowCenter, ds.WindowWidth = [40, -600], [400, 1500]
    ds.WindowCenterWidthExplanation = ["Doe^John", "LUNG"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(tmp_path / "w.dcm", enforce_file_format=False)
    presets, modality = dicom_window_presets(tmp_path / "w.dcm")
    assert [p["name"] for p in presets] == ["DICOM window 1", "LUNG"] and "Doe" not in str(presets)
