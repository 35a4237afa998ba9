"""``meddx serve RUN``: the diagnosis API (FastAPI) and the radiologist's web viewer at ``/``.

Endpoints (all under ``/v1`` need the ``X-API-Key`` header except ``/v1/health``):

* ``POST /v1/predict`` (multipart field ``file``: PNG, JPEG, TIFF, BMP, DICOM or NIfTI) ->
  label, probabilities, calibrated confidence, uncertainty and refer flag, URLs of the
  heatmap, overlay, display pixels (and mask for segmenters), model version;
* ``GET /v1/results/{id}/{heatmap.png|overlay.png|mask.png|pixels}``: the artefacts of a
  recent prediction (kept in memory, the last ``keep_results``);
* ``GET /v1/model``: the model card (data, metrics with 95 % CIs, calibration, triage rule,
  intended use, limits); ``GET /v1/health``; ``GET /openapi.json``.

Safety: the key is compared in constant time (``hmac.compare_digest``); uploads over
``max_upload_bytes`` get 413 before their body is read (uploads must declare their
length); images over ``max_pixels`` get 413 from the readers' header check; anything
that cannot be decoded is a 4xx whose message names the upload, never the server's
temp path. Responses and logs never carry DICOM patient identifiers: the readers keep
none, the window presets are read from four named tags only, and the log line holds
the request id, status, size and latency.
"""


import contextlib
import hashlib
import hmac
import re
import io
import json
import logging
import os
import secrets
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from meddx.errors import MeddxError, RunError
from meddx.evaluation._checks import json_ready

log = logging.getLogger("meddx.server")
VIEWER_DIR = Path(__file__).with_name("viewer")
DEFAULT_MAX_UPLOAD = 64 * 2**20
DEFAULT_MAX_PIXELS = 64 * 2**20
SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".nii", ".nii.gz")
# Common CT windows (centre, width) in HU, offered beside a file's own DICOM presets.
CT_PRESETS = [("brain", 40, 80), ("subdural", 75, 215), ("lung", -600, 1500), ("mediastinum", 50, 350),
              ("abdomen", 40, 400), ("liver", 60, 160), ("bone", 400, 1800)]


# the words a window's explanation (a free-text tag) is shown with; any other word could be anything a
# site typed there, a name included, so that preset is shown as "DICOM window N"
WINDOW_WORDS = frozenset("""window level preset default standard user auto automatic wide narrow full dynamic range
    brain head neck stroke subdural posterior fossa temporal bone bones spine skull sinus sinuses orbit orbits ear
    lung lungs chest thorax mediastinum mediastinal pleura abdomen abdominal liver kidney kidneys renal pancreas
    pelvis soft tissue tissues fat vessel vessels vascular angio cta contrast enhanced sharp smooth low high mid
    algo ct mr mri pet us cr dx mg xa hu w l c ww wl wc of and for""".split())


def _window_name(text: str) -> str | None:
    """``text`` if every word of it is a window word (digits aside), else None."""
    import re

    words = [w for w in re.split(r"[^a-z]+", text.lower()) if w]
    return text[:40] if words and all(w in WINDOW_WORDS for w in words) else None


def dicom_window_presets(path: Path) -> tuple[list[dict], str | None]:
    """(centre, width) presets stored in a DICOM file, and its modality. Reads four tags only."""
    try:
        import pydicom

        ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True,
                             specific_tags=["WindowCenter", "WindowWidth", "WindowCenterWidthExplanation",
                                            "Modality"])
    except Exception:  # the pixel reader already accepted the file; presets are optional
        return [], None

    def as_list(v):
        if v is None:
            return []
        try:
            return [float(x) for x in v] if not isinstance(v, (int, float, str)) and hasattr(v, "__iter__") \
                else [float(v)]
        except (TypeError, ValueError):
            return []

    centres, widths = as_list(ds.get("WindowCenter")), as_list(ds.get("WindowWidth"))
    names = ds.get("WindowCenterWidthExplanation")
    names = [str(n) for n in names] if names is not None and not isinstance(names, str) and \
        hasattr(names, "__iter__") else ([str(names)] if names else [])
    out = []
    for i, (c, w) in enumerate(zip(centres, widths)):
        if w > 0:
            label = (_window_name(names[i]) if i < len(names) and names[i] else None) or f"DICOM window {i + 1}"
            out.append({"name": label, "center": c, "width": w})
    modality = ds.get("Modality")
    return out, (str(modality)[:16] if modality else None)


class ResultStore:
    """The artefacts of the last ``size`` predictions, in memory (thread-safe LRU)."""

    def __init__(self, size: int = 64):
        self.size = int(size)
        self._d: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, item: dict) -> str:
        rid = secrets.token_urlsafe(12)
        with self._lock:
            self._d[rid] = item
            while len(self._d) > self.size:
                self._d.popitem(last=False)
        return rid

    def get(self, rid: str) -> dict | None:
        with self._lock:
            item = self._d.get(rid)
            if item is not None:
                self._d.move_to_end(rid)
            return item


class ModelService:
    """A loaded run: model, calibration, triage rule, explainer and model card."""

    def __init__(self, run_dir: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, explain_method: str = "gradcam"):
        from meddx.explain.cam import Explainer
        from meddx.training.run import load_run, require_finished

        self.run_dir = Path(run_dir)
        # an unfinished run has no validation threshold, calibration or triage rule: refuse to show its
        # answers to readers as if it were finished
        require_finished(self.run_dir, "served")
        self.plan, self.model = load_run(self.run_dir)
        self.task = self.plan.task
        if self.task == "detect":
            raise RunError("meddx serve serves classification and segmentation runs", path=self.run_dir,
                           fix="serve a run trained with --task classify or --task segment")
        self.explainer = Explainer(self.model)
        self.explain_method = self._one_method(explain_method)  # a wrong --explain-method is refused at start
        self.max_pixels = int(max_pixels)
        self.names = (list(self.plan.segment.label_names) if self.task == "segment"
                      else list(self.plan.data.class_names))
        self.temperature = self._json("calibration.json").get("temperature", 1.0)
        self.triage = self._json("triage.json")
        # binary classifiers: the validation threshold and the class it is about, read once
        self.thresholds = self._json("thresholds.json") if self.task == "classify" and len(self.names) == 2 else {}
        from meddx.evaluation.thresholds import stored_positive

        self.positive = stored_positive(self.names, self.thresholds, self.plan.evaluate.positive_class)
        self.members = [self.model]
        if self.task == "classify" and self.triage.get("method_used") == "ensemble":
            from meddx.evaluation.uncertainty import load_ensemble

            self.members += load_ensemble(self.plan, self.plan.evaluate.ensemble_runs, base=str(self.run_dir.parent))
        self._sample_lock = threading.Lock()  # MC dropout flips the shared model's dropout layers
        ckpt = self.run_dir / "checkpoints" / "best.pt"
        digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()[:12]
        self.version = f"{self.run_dir.name}@{digest}"
        self.card = json_ready(self._model_card())

    def _json(self, name: str) -> dict:
        p = self.run_dir / name
        try:
            return json.loads(p.read_text()) if p.exists() else {}
        except (OSError, ValueError):
            raise RunError(f"{name} is unreadable", path=p, fix="re-run `meddx evaluate RUN`") from None

    def _model_card(self) -> dict:
        m = self._json("metrics.json")
        info = self._json("run.json")
        card: dict[str, Any] = {
            "model_version": self.version, "task": self.task, "model": self.plan.model.name,
            "classes": self.names,
            "input": {"spatial_dims": self.plan.data.spatial_dims, "size": self.plan.data.input_size,
                      "channels": self.plan.data.channels, "intensity": self.plan.data.intensity},
            "data": {"dataset": m.get("dataset"), "n_test": m.get("n_test"), "split": self.plan.data.split,
                     "data_hash": (info.get("data_hash") or "")[:16] or None},
            "trained": {"seed": self.plan.seed, "finished": info.get("finished"),
                        "versions": info.get("versions")},
            "intended_use": ("Research and decision support only. Every output needs review by a qualified "
                             "clinician; meddx does not diagnose."),
            "limits": [
                "Validated only on the test split named under data; other scanners, sites, populations or "
                "protocols may perform worse.",
                "Inputs are resized to the training size; other modalities or views are out of scope.",
                "Heatmaps show where the model's evidence is, not where the disease is.",
            ],
        }
        if self.task == "classify":
            ops = m.get("operating_points") or {}
            first = next(iter(ops.values()), {}) if ops else {}
            card["metrics"] = {"operating_point": next(iter(ops), None), "overall": first.get("overall"),
                               "per_class": first.get("per_class")}
            card["calibration"] = self._json("calibration.json") or None
            t = dict(self.triage) if self.triage else None
            if t:
                t.pop("accuracy_coverage_test", None)
            card["triage"] = t
        else:
            card["metrics"] = m.get("summary")
        md = self.run_dir / "model_card.md"
        card["model_card_markdown"] = md.read_text() if md.exists() else None
        return card

    # -- prediction ----------------------------------------------------------------------
    def _one_method(self, method: str) -> str:
        """The heatmap method: one, since a response holds one heatmap (``all`` or a list would have been
        cut to its first method without a word)."""
        from meddx.explain.run_explain import resolve_methods

        methods = resolve_methods(method, self.explainer.segmenter)
        if len(methods) != 1:
            raise MeddxError(f"explanation method '{method}' names {len(methods)} methods; a response holds one "
                             "heatmap", fix=f"name one of: {', '.join(resolve_methods('all', self.explainer.segmenter))}")
        return methods[0]

    def predict(self, path: Path, want_explanation: bool = True, method: str | None = None) -> dict:
        from meddx.explain.run_explain import explain_image, model_input, native_shape
        from meddx.io import read_image

        img = read_image(path, max_pixels=self.max_pixels)
        where = "the uploaded file"
        x = model_input(self.plan, img, where)
        out: dict[str, Any] = {"task": self.task, "model_version": self.version}
        heat = None
        meth = None
        if want_explanation:  # a wrong method is refused before any inference
            meth = self._one_method(method or self.explain_method)
        if self.task == "classify":
            seg, mask = self._classify(x), None
        else:
            seg, mask = self._segment(img)
        if meth is not None:
            # a segmenter's heatmap is about the region it reports (the largest in the image's own geometry,
            # after post-processing), not whatever region is largest in the resized model input
            target = seg["label_index"] if self.task == "segment" and seg["label_index"] > 0 else None
            e = explain_image(self.plan, self.explainer, img, where, meth, class_idx=target)
            heat = e.heatmap
            out["explanation"] = {"method": meth, "class": e.class_name, "layer": e.layer}
        out.update(seg)
        shape = native_shape(self.plan, img)
        z = None
        if len(shape) == 3:
            if heat is not None:
                z = int(np.argmax(heat.reshape(heat.shape[0], -1).sum(1)))
            elif mask is not None and mask.any():
                z = int(np.argmax((mask > 0).reshape(mask.shape[0], -1).sum(1)))
            else:
                z = shape[0] // 2
        pix = np.asarray(img.array, dtype=np.float32).reshape((img.array.shape[0],) + shape)
        if z is not None:
            pix = pix[:, z]
        if pix.shape[0] not in (1, 3):
            pix = pix[:1]
        out["image"] = {"width": int(pix.shape[2]), "height": int(pix.shape[1]), "channels": int(pix.shape[0]),
                        "spatial_shape": list(shape), "slice": z, "min": float(pix.min()), "max": float(pix.max()),
                        "p01": float(np.percentile(pix, 1)), "p99": float(np.percentile(pix, 99)),
                        "format": img.meta.get("format"), "modality": None, "window_presets": []}
        if img.meta.get("format") == "dicom":
            presets, modality = dicom_window_presets(path)
            out["image"]["window_presets"] = presets + ([{"name": f"CT {n}", "center": c, "width": w}
                                                         for n, c, w in CT_PRESETS] if modality == "CT" else [])
            out["image"]["modality"] = modality
        item = {"pixels": np.ascontiguousarray(pix), "heatmap": None if heat is None else
                (heat[z] if z is not None else heat), "mask": None if mask is None else (mask[z] if z is not None
                                                                                       else mask),
                "title": out.get("label", ""), "created": time.time()}
        out["_item"] = item
        return out

    def _classify(self, x: torch.Tensor) -> dict:
        from meddx.evaluation.calibration import apply_temperature
        from meddx.evaluation.metrics import predict_labels
        from meddx.evaluation.uncertainty import refer, uncertainty_scores
        from meddx.training.engine import predict_proba

        p = predict_proba(self.model, x, 1, torch.device("cpu"), self.plan.evaluate.tta_flip_axes)
        pc = apply_temperature(p, self.temperature)
        pos = self.positive
        k = int(predict_labels(p, positive=pos)[0])  # argmax, or 0.5 on p(positive), as evaluated
        res = {"label": self.names[k], "label_index": k,
               "probabilities": {n: round(float(v), 6) for n, v in zip(self.names, p[0])},
               "calibrated_probabilities": {n: round(float(v), 6) for n, v in zip(self.names, pc[0])},
               "confidence": round(float(pc[0].max()), 6), "temperature": round(float(self.temperature), 6)}
        method = self.triage.get("method_used") or "confidence"
        lock = self._sample_lock if method == "mc_dropout" else contextlib.nullcontext()
        with lock:
            score, used, why = uncertainty_scores(self.plan, self.members, x, pc, method=method, seed=0)
        thr = self.triage.get("threshold")
        res["uncertainty"] = {"method": used, "score": round(float(score[0]), 6),
                              "threshold": thr, "refer_fraction": self.triage.get("refer_fraction"),
                              "note": why}
        res["refer"] = bool(refer(score, thr)[0]) if thr is not None else None
        t = self.thresholds.get("threshold")
        if t is not None:
            res["label_at_threshold"] = self.names[int(predict_labels(p, t, pos)[0])]
            res["threshold"] = round(float(t), 6)
        return res

    def _segment(self, img) -> tuple[dict, np.ndarray]:
        from meddx.evaluation.seg_infer import predict_case
        from meddx.transforms.postprocess import postprocess

        sg = self.plan.segment
        lab, probs = predict_case(self.model, self.plan, img, "the uploaded file", with_probs=True)
        lab = postprocess(lab, sg.postprocess, len(sg.label_values), sg.min_size)
        probs = probs.astype(np.float32)
        counts = {n: int((lab == c).sum()) for c, n in enumerate(self.names)}
        fg = {n: v for n, v in list(counts.items())[1:]}
        label = max(fg, key=fg.get) if fg and max(fg.values()) > 0 else self.names[0]
        mean_p = {}
        for c, n in enumerate(self.names):
            m = lab == c
            mean_p[n] = round(float(probs[c][m].mean()), 6) if m.any() else 0.0
        vox = float(np.prod(img.spacing)) if img.spacing is not None and len(img.spacing) == lab.ndim else None
        res = {"label": label, "label_index": self.names.index(label), "probabilities": mean_p,
               "calibrated_probabilities": None, "confidence": mean_p[label],
               "segmentation": {n: {"pixels": v, ("volume_mm3" if lab.ndim == 3 else "area_mm2"):
                                    (round(v * vox, 3) if vox is not None else None)} for n, v in fg.items()},
               "uncertainty": None, "refer": None}
        return res, lab


def _heatmap_png(h: np.ndarray) -> bytes:
    from meddx.explain.run_explain import heatmap_rgba_png

    return heatmap_rgba_png(h)


def _mask_png(mask: np.ndarray) -> bytes:
    """Label map -> RGBA PNG: each foreground class its own colour at 50 % opacity, background clear."""
    from matplotlib import colormaps
    from PIL import Image

    colours = colormaps["tab10"](np.arange(10))
    rgba = np.zeros(mask.shape + (4,), np.float32)
    for c in range(1, int(mask.max(initial=0)) + 1):
        rgba[mask == c] = (*colours[(c - 1) % 10][:3], 0.5)
    buf = io.BytesIO()
    Image.fromarray((rgba * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _overlay_png(item: dict) -> bytes:
    """Image with heatmap (and mask outline) as one PNG, for clients without a canvas."""
    from meddx.evaluation.plots import _figure, _finish

    pix = item["pixels"]
    lo, hi = np.percentile(pix, [1, 99])
    a = np.clip((pix - lo) / (hi - lo + 1e-8), 0, 1)
    a = np.moveaxis(a, 0, -1) if a.shape[0] == 3 else a[0]
    fig = _figure((4.6, 4.0))
    ax = fig.subplots()
    ax.imshow(a, cmap="gray" if a.ndim == 2 else None, interpolation="nearest")
    if item["heatmap"] is not None:
        ax.imshow(item["heatmap"], cmap="jet", alpha=0.45, vmin=0, vmax=1, interpolation="bilinear")
    if item["mask"] is not None and item["mask"].any():
        ax.contour(item["mask"] > 0, levels=[0.5], colors=["#d62728"], linewidths=1.0)
    ax.set_axis_off()
    ax.set_title(str(item.get("title", "")), fontsize=8)
    return _finish(fig, None)


def create_app(run_dir: str | Path, *, api_key: str | None = None, max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
               max_pixels: int = DEFAULT_MAX_PIXELS, keep_results: int = 64, explain_method: str = "gradcam"):
    """Build the FastAPI app for one run.

    Args:
        run_dir: a finished classification or segmentation run.
        api_key: the key clients send in ``X-API-Key`` (default: ``$MEDDX_API_KEY``); required.
        max_upload_bytes: larger uploads get 413.
        max_pixels: images decoding to more voxels x channels get 413.
        keep_results: how many predictions' artefacts stay available under ``/v1/results``.
        explain_method: heatmap method: gradcam, gradcampp or occlusion.

    Raises:
        MeddxError: no API key, or the run cannot be loaded.
    """
    from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.security import APIKeyHeader
    from fastapi.staticfiles import StaticFiles

    key = api_key if api_key is not None else os.environ.get("MEDDX_API_KEY")
    if not key:
        raise MeddxError("no API key", fix="start with --api-key KEY or set MEDDX_API_KEY")
    if len(key) < 8:
        raise MeddxError("the API key is shorter than 8 characters", fix="use a longer, random key")
    svc = ModelService(run_dir, max_pixels=max_pixels, explain_method=explain_method)
    store = ResultStore(keep_results)
    key_b = key.encode()
    header = APIKeyHeader(name="X-API-Key", auto_error=False,
                          description="The key the server was started with (--api-key or MEDDX_API_KEY).")

    def require_key(supplied: Optional[str] = Depends(header)) -> None:
        if not supplied or not hmac.compare_digest(supplied.encode(), key_b):
            raise HTTPException(status_code=401, detail="missing or wrong API key: send it in the X-API-Key header",
                                headers={"WWW-Authenticate": "X-API-Key"})

    app = FastAPI(title="meddx diagnosis API", version="1", docs_url=None, redoc_url=None,
                  description="Predictions with calibrated confidence, uncertainty, a refer-to-expert flag and "
                              "heatmaps, from one meddx run. Research and decision support only.")
    app.state.service = svc

    @app.middleware("http")
    async def limits_and_log(request: Request, call_next):
        t0 = time.perf_counter()
        rid = secrets.token_hex(4)
        if request.method == "POST":
            length = request.headers.get("content-length")
            if length is None:
                return JSONResponse({"detail": "the upload must declare its size (Content-Length)"}, status_code=411)
            try:
                n = int(length)
            except ValueError:
                return JSONResponse({"detail": "invalid Content-Length"}, status_code=400)
            if n > max_upload_bytes:
                return JSONResponse({"detail": f"upload of {n} bytes is over the limit of {max_upload_bytes} "
                                               "bytes; send a smaller file"}, status_code=413)
        response = await call_next(request)
        # no query strings, file names or header values: only what cannot identify a patient
        log.info("%s %s %s %d %.1f ms", rid, request.method, request.url.path, response.status_code,
                 1000 * (time.perf_counter() - t0))
        return response

    @app.get("/v1/health", summary="Liveness: the model is loaded (no key needed)")
    def health() -> dict:
        return {"status": "ok", "task": svc.task, "model_version": svc.version}

    @app.get("/v1/model", summary="The model card", dependencies=[Depends(require_key)])
    def model_card() -> dict:
        return svc.card

    @app.post("/v1/predict", summary="Predict one image (PNG, JPEG, TIFF, BMP, DICOM, NIfTI)",
              dependencies=[Depends(require_key)])
    def predict(file: UploadFile = File(..., description="The image file"),
                explain: bool = Query(True, description="Also compute the heatmap"),
                method: Optional[str] = Query(None, description="gradcam | gradcampp | occlusion")) -> dict:
        name = (file.filename or "").lower()
        suffix = next((s for s in sorted(SUFFIXES, key=len, reverse=True) if name.endswith(s)), "")
        with tempfile.TemporaryDirectory(prefix="meddx-upload-") as tmp:
            path = Path(tmp) / ("upload" + suffix)
            size = 0
            with open(path, "wb") as f:
                while chunk := file.file.read(2**20):
                    size += len(chunk)
                    if size > max_upload_bytes:
                        raise HTTPException(413, f"upload is over the limit of {max_upload_bytes} bytes")
                    f.write(chunk)
            if size == 0:
                raise HTTPException(400, "the uploaded file is empty: choose an image file")
            try:
                out = svc.predict(path, want_explanation=explain, method=method)
            except MeddxError as e:
                msg = str(e).replace(str(path), "the uploaded file").replace(tmp, "")
                big = re.search(r"would decode to (\d+) (?:pixels|voxels) x channels, above the limit", msg)
                if big:
                    raise HTTPException(413, f"the uploaded image would decode to {big.group(1)} pixels x "
                                             f"channels, over this server's limit of {max_pixels}; send a "
                                             "smaller image") from None
                raise HTTPException(422, msg) from None
            except (ValueError, OSError, RuntimeError, IndexError, TypeError) as e:
                raise HTTPException(422, f"the uploaded file could not be read as an image "
                                         f"({type(e).__name__}); send PNG, JPEG, TIFF, DICOM or NIfTI") from None
        item = out.pop("_item")
        rid = store.put(item)
        base = f"/v1/results/{rid}"
        out["id"] = rid
        out["urls"] = {"pixels": f"{base}/pixels", "overlay": f"{base}/overlay.png",
                       "heatmap": f"{base}/heatmap.png" if item["heatmap"] is not None else None,
                       "mask": f"{base}/mask.png" if item["mask"] is not None else None}
        out["heatmap_url"], out["overlay_url"] = out["urls"]["heatmap"], out["urls"]["overlay"]
        return json_ready(out)

    @app.get("/v1/results/{rid}/{what}", summary="Artefacts of a recent prediction",
             dependencies=[Depends(require_key)])
    def result(rid: str, what: str):
        item = store.get(rid)
        if item is None:
            raise HTTPException(404, "unknown or expired result id: predict again")
        if what == "pixels":
            pix = item["pixels"]
            return Response(pix.astype("<f4").tobytes(), media_type="application/octet-stream",
                            headers={"X-Channels": str(pix.shape[0]), "X-Height": str(pix.shape[1]),
                                     "X-Width": str(pix.shape[2])})
        if what == "heatmap.png" and item["heatmap"] is not None:
            return Response(_heatmap_png(item["heatmap"]), media_type="image/png")
        if what == "mask.png" and item["mask"] is not None:
            return Response(_mask_png(item["mask"]), media_type="image/png")
        if what == "overlay.png":
            return Response(_overlay_png(item), media_type="image/png")
        raise HTTPException(404, f"no '{what}' for this result")

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        # FastAPI's own answer echoes each invalid input: for an upload without a file name (sent as a
        # plain form field) that is the whole file, a DICOM's patient name and ID included
        parts = []
        for e in exc.errors():
            loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
            parts.append(f"{loc}: {e.get('msg', 'invalid')}" if loc else str(e.get("msg", "invalid")))
        fix = ("; send the image as a multipart/form-data file field named 'file', with a file name"
               if any(tuple(e.get("loc", ()))[-1:] == ("file",) for e in exc.errors()) else "")
        return JSONResponse({"detail": "invalid request: " + "; ".join(parts) + fix}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):  # a bug, not the user's fault: say so, log no details
        log.error("internal error on %s: %s", request.url.path, type(exc).__name__)
        return JSONResponse({"detail": "internal server error"}, status_code=500)

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(VIEWER_DIR / "index.html", media_type="text/html")

    @app.get("/favicon.ico", include_in_schema=False)  # clients that ask the site root for an icon
    def favicon():
        return FileResponse(VIEWER_DIR / "icon.svg", media_type="image/svg+xml")

    app.mount("/viewer", StaticFiles(directory=str(VIEWER_DIR)), name="viewer")
    return app


def serve(run_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          max_upload_bytes: int = DEFAULT_MAX_UPLOAD, max_pixels: int = DEFAULT_MAX_PIXELS,
          explain_method: str = "gradcam", log_level: str = "info", banner: str | None = None) -> None:
    """Run the app with uvicorn until interrupted; ``banner`` goes to stderr once the run is loaded and
    the address is free (a user mistake before that is the only line)."""
    import socket
    import sys

    import uvicorn

    app = create_app(run_dir, api_key=api_key, max_upload_bytes=max_upload_bytes, max_pixels=max_pixels,
                     explain_method=explain_method)
    try:  # uvicorn only logs an unknown host or a port in use, and exits 1 or 3
        family, _, _, _, address = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)[0]
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            s.bind(address)
    except OSError as e:
        raise MeddxError(f"cannot listen on {host}:{port} ({e.strerror or e})",
                         fix="choose a free --port, and a --host this machine has (127.0.0.1, or 0.0.0.0 for all)"
                         ) from None
    if banner:
        print(banner, file=sys.stderr, flush=True)
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO), format="%(asctime)s %(message)s")
    # access_log off: uvicorn's access line carries the query string; ours does not
    uvicorn.run(app, host=host, port=int(port), log_level=log_level, access_log=False)
