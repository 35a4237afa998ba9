"""One self-contained HTML evaluation report.

Plots are embedded as base64 PNG data URIs and the CSS is inline, so the file can be
mailed or archived on its own and opened offline. It is written atomically: a failed
render leaves neither a half-written report nor a temp file behind.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from meddx.errors import MeddxError
from meddx.evaluation._checks import atomic_open
from meddx.evaluation.thresholds import stored_positive

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:70em;
color:#222;line-height:1.4;padding:0 1em}
h1{font-size:1.6em;border-bottom:2px solid #4c78a8;padding-bottom:.2em}
h2{font-size:1.3em;margin-top:1.8em;border-bottom:1px solid #ccc}
h3{font-size:1.05em;margin-bottom:.3em}
table{border-collapse:collapse;margin:.4em 0 1em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;overflow-wrap:break-word}
th{background:#f0f3f7}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap;overflow-wrap:normal}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}
figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.9em;color:#555;text-align:center}
.note{color:#555;font-size:.92em}
"""

_OVERALL_LABELS = {
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "auc_macro": "AUC (macro, one-vs-rest)",
    "f1_macro": "F1 (macro)",
    "sensitivity_macro": "Sensitivity (macro)",
    "specificity_macro": "Specificity (macro)",
    "ppv_macro": "PPV (macro)",
    "npv_macro": "NPV (macro)",
    "ece": "ECE (top-label, {bins} bins)",
    "sensitivity": "Sensitivity (positive class: {pos})",
    "specificity": "Specificity (positive class: {pos})",
    "ppv": "PPV (positive class: {pos})",
    "npv": "NPV (positive class: {pos})",
    "f1": "F1 (positive class: {pos})",
    "auc": "AUC (positive class: {pos})",
}
_PER_CLASS_COLUMNS = ("sensitivity", "specificity", "ppv", "npv", "f1", "auc")


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def format_value(x) -> str:
    """A number with 3 decimals; ``"n/a"`` for None or NaN (undefined, e.g. HD95 when no case has both
    masks non-empty, or AP of a finding without reference boxes)."""
    return "n/a" if x is None or not np.isfinite(float(x)) else f"{float(x):.3f}"


def format_metric(m: Mapping | None) -> str:
    """``"value [ci_low, ci_high]"`` with 3 decimals; ``"n/a"`` for None or NaN; the number of
    bootstrap resamples when some were dropped (a class absent from them)."""
    f = format_value
    if not m:
        return "n/a"
    text = f"{f(m.get('value'))} [{f(m.get('ci_low'))}, {f(m.get('ci_high'))}]"
    if m.get("ci_method") == "wilson":  # a proportion over few cases, or at 0 or 1
        text += " (Wilson)"
    elif m.get("ci_resamples") is not None:  # a rare class was absent from the other resamples
        text += f" (CI of {m['ci_resamples']} resamples)"
    return text


def _table(header: Sequence, rows: Iterable[Sequence], numeric: Sequence[bool] | None = None) -> str:
    """The columns ``numeric`` marks (by default all but the first) are right-aligned numbers; the
    others are text that wraps."""
    out = ["<table><thead><tr>", *(f"<th>{_e(h)}</th>" for h in header), "</tr></thead><tbody>"]
    for row in rows:
        out.append("<tr>")
        for i, cell in enumerate(row):
            num = i >= 1 if numeric is None else i < len(numeric) and numeric[i]
            cls = ' class="num"' if num else ""
            out.append(f"<td{cls}>{_e(cell)}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _how_to_read(metrics: Mapping[str, Mapping]) -> str:
    boot = next((m.get("bootstrap") for m in metrics.values() if m.get("bootstrap")), None) or {}
    level = 100 * float(boot.get("ci_level", 0.95))
    n_boot = boot.get("n_boot")
    resamples = f" ({_e(n_boot)} resamples)" if n_boot else ""
    bins = next((m["ece_bins"] for m in metrics.values() if m.get("ece_bins")), 15)
    items = [
        f"Brackets are {level:g}% confidence intervals: percentile bootstrap over test cases"
        f"{resamples}, except for a proportion (accuracy, sensitivity, specificity, PPV, NPV) over fewer "
        "than 20 cases or at 0 or 1, marked (Wilson), whose interval is the Wilson score interval "
        "(there the bootstrap collapses to a point). They show sampling uncertainty of the test set "
        "only, not of training.",
        "A threshold operating point was chosen on the validation split, never the test split, "
        "and then applied unchanged to the test cases. The default operating point (argmax; 0.5 for "
        "binary tasks) involves no choice.",
        "ECE (expected calibration error) is top-label: cases are binned by their largest class "
        f"probability into {int(bins)} equal-width bins, and the count-weighted gap between accuracy and "
        "mean confidence is averaged. 0 is perfect calibration. ECE is biased upwards on small test "
        "sets, and so is its interval.",
        "Macro averages run over the classes for which a metric is defined; balanced accuracy is "
        "the mean per-class sensitivity. \"n/a\" marks a value that is undefined (for example PPV "
        "when nothing is predicted positive, or AUC when only one class is present); an interval reads "
        "[n/a, n/a] when the bootstrap over fewer than 20 cases collapses to a point (F1, AUC, ECE or a "
        "macro average of one or two cases).",
        "Confusion matrices: rows are the true class, columns the predicted class.",
    ]
    return "<h2>How to read this</h2><ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def _metrics_section(label: str, m: Mapping) -> str:
    names = list(m.get("class_names") or [])
    op = m.get("operating_point") or {}
    rule = op.get("rule", "?")
    thr = op.get("threshold")
    # binary metrics and thresholds are about the positive class (class 1 in files written before it was named)
    pos = names[stored_positive(names, op)] if len(names) == 2 else "class 1"
    if thr is None:
        op_text = "argmax: the most probable class"
    else:  # the heading says where it came from (0.5, or chosen on validation)
        op_text = ("" if rule == "threshold" else f"rule: {rule}, ") + f"threshold {float(thr):.4g} on p({pos})"
    parts = [
        f"<h2>Operating point: {_e(label)}</h2>",
        f'<p class="note">{_e(op_text)}; n = {_e(m.get("n", "?"))} cases, '
        f'{_e(m.get("n_classes", len(names)))} classes.</p>',
        "<h3>Overall</h3>",
    ]
    overall = m.get("overall") or {}
    keys = [k for k in _OVERALL_LABELS if k in overall] + [k for k in overall if k not in _OVERALL_LABELS]
    parts.append(_table(
        ["metric", f"value [{_level(m):g}% CI]"],
        ([_OVERALL_LABELS.get(k, k).format(bins=m.get("ece_bins", 15), pos=pos), format_metric(overall[k])]
         for k in keys),
    ))
    per_class = m.get("per_class") or {}
    if per_class:
        parts.append("<h3>Per class (one vs rest)</h3>")
        header = ["class", "sensitivity", "specificity", "PPV", "NPV", "F1", "AUC", "support"]
        rows = ([name, *(format_metric(v.get(c)) for c in _PER_CLASS_COLUMNS), v.get("support", "")]
                for name, v in per_class.items())
        parts.append(_table(header, rows))
    cm = m.get("confusion_matrix")
    if cm:
        cm_names = names if len(names) == len(cm) else [str(i) for i in range(len(cm))]
        parts.append("<h3>Confusion matrix (rows true, columns predicted)</h3>")
        parts.append(_table(["true \\ predicted", *cm_names],
                            ([cm_names[i], *row] for i, row in enumerate(cm))))
    return "".join(parts)


def _level(m: Mapping) -> float:
    return 100 * float((m.get("bootstrap") or {}).get("ci_level", 0.95))


def _plot_figure(name: str, png: bytes) -> str:
    if not isinstance(png, (bytes, bytearray)) or not bytes(png[:8]) == PNG_SIGNATURE:
        raise MeddxError(f"plot {name!r} is not PNG bytes", fix="pass the bytes a plot_* function returns")
    data = base64.b64encode(bytes(png)).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_e(name)}">'
            f"<figcaption>{_e(name)}</figcaption></figure>")


def _extra_table(name: str, rows: Sequence[Mapping]) -> str:
    columns: list = []
    for r in rows:
        columns += [c for c in r if c not in columns]

    def cell(v):
        if v is None:
            return "n/a"
        if isinstance(v, float):
            return f"{v:#.4g}"  # four significant digits, trailing zeros kept: a column's numbers line up
        if isinstance(v, Mapping) and "value" in v:
            return format_metric(v)
        return v

    def is_number(v) -> bool:
        return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) or \
            (isinstance(v, Mapping) and "value" in v)

    # a column is right-aligned only when it holds numbers; text (rules, JSON values) is left-aligned and wraps
    numeric = [all(is_number(r.get(c)) for r in rows) and any(r.get(c) is not None for r in rows) for c in columns]
    body = ([cell(r.get(c)) for c in columns] for r in rows)
    return f"<h3>{_e(name)}</h3>" + (_table(columns, body, numeric=numeric) if rows else '<p class="note">(empty)</p>')


def _render(title, summary, metrics, plots, notes, tables) -> Iterator[str]:
    yield ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
           f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>")
    yield f"<h1>{_e(title)}</h1>"
    if summary:
        yield "<h2>Summary</h2>" + _table(["item", "value"], summary.items(), numeric=(False, False))
    yield _how_to_read(metrics)
    for label, m in metrics.items():
        yield _metrics_section(label, m)
    if plots:
        yield "<h2>Plots</h2>"
        for name, png in plots.items():
            yield _plot_figure(name, png)
    if tables:
        yield "<h2>Tables</h2>"
        for name, rows in tables.items():
            yield _extra_table(name, rows)
    if notes:
        yield "<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>"
    yield "</body></html>\n"


def decision_rows(plan) -> list[dict]:
    """The plan's decisions as report rows: field, value, rule, kind and what the rule read."""
    import json

    def short(v, n=120):
        t = v if isinstance(v, str) else json.dumps(v, default=str)
        return t if len(t) <= n else t[: n - 3] + "..."

    return [{"field": d.field, "value": short(d.value), "rule": d.rule, "kind": d.kind, "read": short(d.reads)}
            for d in plan.decisions]


def write_report(
    path: str | Path,
    *,
    title: str,
    summary: dict,
    metrics: dict[str, dict],
    plots: dict[str, bytes],
    notes: Sequence[str] = (),
    tables: dict[str, list[dict]] = (),
) -> Path:
    """Write a self-contained HTML report atomically.

    Args:
        path: destination ``.html`` file.
        title: report title.
        summary: flat key/value facts (dataset, n cases, model, seed, versions, data hash...).
        metrics: operating-point label -> ``classification_metrics()`` dict.
        plots: caption -> PNG bytes (embedded as base64 data URIs).
        notes: free-text remarks.
        tables: caption -> list of row dicts (columns are the union of the keys).

    Returns:
        The path written.
    """
    path = Path(path)
    tables = dict(tables or {})
    with atomic_open(path) as fh:
        for chunk in _render(title, dict(summary or {}), dict(metrics or {}), dict(plots or {}),
                             list(notes or ()), tables):
            fh.write(chunk.encode("utf-8"))
    return path
