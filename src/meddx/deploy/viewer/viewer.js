// meddx viewer: plain JavaScript, no libraries, no network beyond this server.
// Flow: the file goes to POST /v1/predict; the display pixels (float32), the heatmap and the
// mask come back from /v1/results/<id>/...; window/level is applied here, on the canvas.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { pixels: null, meta: null, heat: null, mask: null, result: null };

function apiKey() { return $("apikey").value.trim(); }

function setStatus(text, error = false) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("error", error);
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {}, { "X-API-Key": apiKey() });
  const r = await fetch(path, Object.assign({}, options, { headers }));
  if (!r.ok) {
    let detail = r.statusText;
    try { detail = (await r.json()).detail || detail; } catch (e) { /* not JSON */ }
    if (typeof detail !== "string") detail = JSON.stringify(detail);
    throw new Error(`${r.status}: ${detail}`);
  }
  return r;
}

function loadImage(blob) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("could not decode an overlay image"));
    img.src = URL.createObjectURL(blob);
  });
}

// ---- window / level --------------------------------------------------------------------
function presets(meta) {
  const out = [{ name: "Auto (1st-99th percentile)", center: (meta.p01 + meta.p99) / 2, width: Math.max(meta.p99 - meta.p01, 1e-6) },
               { name: "Full range", center: (meta.min + meta.max) / 2, width: Math.max(meta.max - meta.min, 1e-6) }];
  for (const p of meta.window_presets || []) out.push(p);
  return out;
}

function setupWindow(meta) {
  const sel = $("preset");
  sel.innerHTML = "";
  presets(meta).forEach((p, i) => {
    const o = document.createElement("option");
    o.value = String(i);
    o.textContent = `${p.name} (C ${fmt(p.center)}, W ${fmt(p.width)})`;
    sel.appendChild(o);
  });
  const span = Math.max(meta.max - meta.min, 1e-6);
  const wc = $("wc"), ww = $("ww");
  wc.min = meta.min - span; wc.max = meta.max + span; wc.step = span / 500;
  ww.min = span / 500; ww.max = span * 2; ww.step = span / 500;
  // a DICOM file's own first preset is what its author meant to be seen; else the percentile window
  const initial = (meta.window_presets && meta.window_presets.length) ? 2 : 0;
  sel.value = String(initial);
  applyPreset();
}

function applyPreset() {
  const p = presets(state.meta)[Number($("preset").value)];
  $("wc").value = p.center; $("ww").value = p.width;
  drawImage();
}

function fmt(v) { return Math.abs(v) >= 100 ? v.toFixed(0) : Number(v).toPrecision(3); }

function drawImage() {
  const meta = state.meta, px = state.pixels;
  if (!meta || !px) return;
  const c = Number($("wc").value), w = Math.max(Number($("ww").value), 1e-9);
  $("wcv").textContent = fmt(c); $("wwv").textContent = fmt(w);
  const W = meta.width, H = meta.height, C = meta.channels, n = W * H;
  const cv = $("image");
  cv.width = W; cv.height = H;
  const ctx = cv.getContext("2d");
  const out = ctx.createImageData(W, H);
  const lo = c - w / 2;
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < 3; k++) {
      const v = px[(C === 3 ? k : 0) * n + i];
      out.data[4 * i + k] = Math.max(0, Math.min(255, ((v - lo) / w) * 255));
    }
    out.data[4 * i + 3] = 255;
  }
  ctx.putImageData(out, 0, 0);
}

function drawOverlay(canvasId, img, alpha, show) {
  const cv = $(canvasId);
  const meta = state.meta;
  cv.width = meta.width; cv.height = meta.height;
  const ctx = cv.getContext("2d");
  ctx.clearRect(0, 0, cv.width, cv.height);
  cv.dataset.drawn = "false";
  if (!img || !show) return;
  ctx.globalAlpha = alpha;
  ctx.drawImage(img, 0, 0, cv.width, cv.height);
  cv.dataset.drawn = "true";
}

function drawOverlays() {
  drawOverlay("heatmap", state.heat, Number($("heatalpha").value), $("showheat").checked);
  drawOverlay("mask", state.mask, 1.0, $("showmask").checked);
}

// ---- results ---------------------------------------------------------------------------
function showResult(r) {
  $("result").hidden = false;
  $("label").textContent = r.label;
  $("confidence").textContent = r.confidence != null ? `${(100 * r.confidence).toFixed(1)} %` : "";
  const refer = $("refer");
  refer.className = "badge " + (r.refer === true ? "refer" : r.refer === false ? "keep" : "na");
  refer.textContent = r.refer === true ? "Refer to an expert (uncertain)"
    : r.refer === false ? "Within the confident range" : "No refer rule for this model";
  const tbody = $("probs").querySelector("tbody");
  tbody.innerHTML = "";
  const probs = r.calibrated_probabilities || r.probabilities || {};
  // segmenters send no calibrated probabilities: theirs are each class's mean probability over its region
  $("probhead").textContent = r.calibrated_probabilities ? "calibrated probability"
    : r.segmentation ? "mean probability in its region" : "probability (uncalibrated)";
  for (const [name, p] of Object.entries(probs)) {
    const tr = document.createElement("tr");
    const a = document.createElement("td"); a.textContent = name;
    const b = document.createElement("td"); b.className = "num"; b.textContent = Number(p).toFixed(3);
    tr.append(a, b); tbody.appendChild(tr);
  }
  const u = r.uncertainty;
  $("uncertainty").textContent = u ? `Uncertainty (${u.method}): ${Number(u.score).toPrecision(3)}; refer above `
    + `${u.threshold == null ? "n/a" : Number(u.threshold).toPrecision(3)} (refers ${u.refer_fraction == null ? "?" : (100 * u.refer_fraction).toFixed(0)} % of validation cases)` : "";
  const e = r.explanation;
  $("explanation").textContent = e ? `Heatmap: ${e.method} for class '${e.class}'.` : "No heatmap.";
  $("version").textContent = `Model ${r.model_version}`;
  $("maskrow").hidden = !r.urls.mask;
}

async function analyse(file) {
  if (!apiKey()) { setStatus("Enter the API key first.", true); return; }
  setStatus(`Analysing ${file.name} ...`);
  $("result").hidden = true;
  const form = new FormData();
  form.append("file", file, file.name);
  try {
    const r = await (await api("/v1/predict", { method: "POST", body: form })).json();
    state.result = r;
    state.meta = r.image;
    const buf = await (await api(r.urls.pixels)).arrayBuffer();
    state.pixels = new Float32Array(buf);
    state.heat = r.urls.heatmap ? await loadImage(await (await api(r.urls.heatmap)).blob()) : null;
    state.mask = r.urls.mask ? await loadImage(await (await api(r.urls.mask)).blob()) : null;
    $("stage").hidden = false; $("controls").hidden = false;
    setupWindow(r.image);
    drawOverlays();
    showResult(r);
    const slice = r.image.slice == null ? "" : ` (slice ${r.image.slice} of ${r.image.spatial_shape[0]})`;
    setStatus(`Done: ${file.name}${slice}.`);
    document.body.dataset.state = "done";
  } catch (err) {
    document.body.dataset.state = "error";
    setStatus(`Could not analyse ${file.name}: ${err.message}`, true);
  }
}

// ---- model card ------------------------------------------------------------------------
function ci(m) {
  if (!m || m.value == null) return "n/a";
  const f = (x) => Number(x).toFixed(3);
  return m.ci_low != null ? `${f(m.value)} [${f(m.ci_low)}, ${f(m.ci_high)}]` : f(m.value);
}

function addText(parent, tag, text) {
  const el = document.createElement(tag);
  el.textContent = text;
  parent.appendChild(el);
  return el;
}

async function loadCard() {
  if (!apiKey()) return;
  const box = $("card");
  try {
    const c = await (await api("/v1/model")).json();
    box.innerHTML = "";
    addText(box, "p", `${c.model} (${c.task}), version ${c.model_version}; classes: ${c.classes.join(", ")}`);
    addText(box, "h3", "Data");
    addText(box, "p", `${c.data.dataset || "?"}; test cases: ${c.data.n_test ?? "?"}; split: ${c.data.split}`);
    if (c.metrics && c.metrics.overall) {
      addText(box, "h3", `Test metrics (${c.metrics.operating_point}; 95 % bootstrap CI)`);
      const t = document.createElement("table");
      const o = c.metrics.overall;
      for (const [k, label] of [["auc", "AUC"], ["auc_macro", "AUC (macro)"], ["accuracy", "accuracy"],
        ["balanced_accuracy", "balanced accuracy"], ["sensitivity", "sensitivity"], ["specificity", "specificity"],
        ["ece", "ECE"]]) {
        if (!o[k]) continue;
        const tr = document.createElement("tr");
        addText(tr, "td", label); addText(tr, "td", ci(o[k])).className = "num";
        t.appendChild(tr);
      }
      box.appendChild(t);
    }
    if (c.calibration) {
      addText(box, "p", `Calibration: temperature ${Number(c.calibration.temperature).toFixed(3)}; test ECE `
        + `${Number(c.calibration.ece_test_before).toFixed(3)} before, ${Number(c.calibration.ece_test_after).toFixed(3)} after.`);
    }
    if (c.triage && c.triage.threshold != null) {
      addText(box, "p", `Refer rule: ${c.triage.method_used} uncertainty above ${Number(c.triage.threshold).toPrecision(3)} `
        + `(${(100 * c.triage.refer_fraction).toFixed(0)} % of validation cases referred).`);
    }
    addText(box, "h3", "Intended use");
    addText(box, "p", c.intended_use);
    addText(box, "h3", "Limits");
    const ul = document.createElement("ul");
    for (const l of c.limits) addText(ul, "li", l);
    box.appendChild(ul);
  } catch (err) {
    box.textContent = `Model card unavailable: ${err.message}`;
  }
}

// ---- wiring ----------------------------------------------------------------------------
window.addEventListener("DOMContentLoaded", () => {
  const saved = sessionStorage.getItem("meddx-key");
  if (saved) { $("apikey").value = saved; loadCard(); }
  $("apikey").addEventListener("change", () => { sessionStorage.setItem("meddx-key", apiKey()); loadCard(); });
  $("file").addEventListener("change", (e) => { if (e.target.files.length) analyse(e.target.files[0]); });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault(); drop.classList.remove("over");
    if (e.dataTransfer.files.length) analyse(e.dataTransfer.files[0]);
  });
  $("preset").addEventListener("change", applyPreset);
  $("wc").addEventListener("input", drawImage);
  $("ww").addEventListener("input", drawImage);
  $("heatalpha").addEventListener("input", drawOverlays);
  $("showheat").addEventListener("change", drawOverlays);
  $("showmask").addEventListener("change", drawOverlays);
});
