#!/usr/bin/env python
"""Orientation benchmark: what R20 (reorient every volume to the training volumes' orientation) is worth.

Writes benchmarks/results/orientation.md and .json. The first ``--cases`` MSD hippocampus cases
(MEDDX_DATA_DIR/seg/msd_hippocampus_udacity, all stored RAS) are copied twice into a temporary
folder: once as they are, once with every third case, image and label alike, stored PIL
(transposed and mirrored with nibabel's ``as_reoriented``: the same voxels, other axis order and
direction, as a DICOM-derived or re-exported volume may be). Each arm is one ``meddx train
--task segment`` with the same seeded split (70/10/20, seed 0) and training budget:

* ``same``: the untouched copy, default plan;
* ``mixed``: the mixed copy, default plan (R20 turns the PIL cases to RAS);
* ``mixed, R20 off``: ``--set data.orientation=null``, each volume as stored: what meddx did before
  R20 (S7 then trains no flips, as no orientation is shared by 90 % of the volumes).

Reported: test mean Dice and HD95 (bootstrap 95 % CI over test cases) per arm, one seed each.

Usage: python benchmarks/orientation.py [--cases 120] [--budget 90]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import tempfile
from pathlib import Path

from _common import DATA, HERE, git_commit, run_meddx

ARMS = {
    "same": ("same", []),
    "mixed": ("mixed", []),
    "mixed, R20 off": ("mixed", ["--set", "data.orientation=null"]),
}


def build(root: Path, n: int) -> dict[str, Path]:
    import nibabel as nib
    from nibabel.orientations import axcodes2ornt, ornt_transform

    src = DATA / "seg" / "msd_hippocampus_udacity"
    names = sorted(p.name for p in (src / "images").iterdir())[:n]
    out = {k: root / k for k in ("same", "mixed")}
    for i, name in enumerate(names):
        for sub in ("images", "labels"):
            img = nib.load(str(src / sub / name))
            for k, d in out.items():
                (d / sub).mkdir(parents=True, exist_ok=True)
                turned = img
                if k == "mixed" and i % 3 == 2:
                    turned = img.as_reoriented(ornt_transform(axcodes2ornt(nib.aff2axcodes(img.affine)),
                                                              axcodes2ornt(("P", "I", "L"))))
                nib.save(turned, str(d / sub / name))
    return out


def _plan_flips(path: Path) -> list[int]:
    from meddx.planning.plan import Plan

    return list(Plan.load(path).augment.flip_axes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=120)
    ap.add_argument("--budget", type=float, default=90.0, help="training seconds per arm")
    args = ap.parse_args()
    commit = git_commit()
    from meddx.training.run import machine, versions

    rows = {}
    with tempfile.TemporaryDirectory(prefix="meddx-orientbench-") as td:
        data = build(Path(td), args.cases)
        for arm, (which, extra) in ARMS.items():
            out = Path(td) / f"run_{len(rows)}"
            wall, rss = run_meddx(["train", str(data[which]), "--task", "segment", "--out", str(out), "--time-budget",
                                   f"{args.budget:g}s", "--no-progress", *extra], arm)
            m = json.loads((out / "metrics.json").read_text())
            fp = json.loads((out / "fingerprint.json").read_text())
            s = m["summary"]["mean"]
            rows[arm] = {"dice": s["dice"], "hd95": s["hd95"], "n_test": m["n_test"], "wall_s": wall, "rss_mib": rss,
                         "orientations": fp.get("orientations"), "extra": " ".join(extra),
                         "flip_axes": _plan_flips(out / "plan.yaml")}
            print(arm, rows[arm]["dice"], flush=True)

    def ci(x):
        from meddx.evaluation.report import format_metric

        return format_metric(x)

    info = {"machine": machine(), "versions": versions()}
    cmd = "python benchmarks/orientation.py " + " ".join(sys.argv[1:])
    res = HERE / "results"
    res.mkdir(exist_ok=True)
    (res / "orientation.json").write_text(json.dumps({"command": cmd, "commit": commit, "date": _dt.date.today().isoformat(),
                                                      "cases": args.cases, "budget_s": args.budget, "arms": rows, **info},
                                                     indent=2, default=str))
    m = info["machine"]
    lines = ["# Orientation benchmark (R20)", "",
             f"Command: `{cmd.strip()}` ({_dt.date.today().isoformat()}, commit {commit}; {m['cpu']}, {m['cores']} cores); "
             f"the first {args.cases} MSD hippocampus cases, every third stored PIL in the mixed copy; seeded split "
             f"70/10/20 (seed 0); {args.budget:g} s of training per arm; one seed each.", "",
             "| arm | volumes per orientation | extra options | trained flips | test mean Dice [95 % CI] | HD95 [95 % CI] |",
             "|---|---|---|---|---|---|"]
    for arm, r in rows.items():
        ori = ", ".join(f"{k}: {v}" for k, v in (r["orientations"] or {}).items())
        extra = f"`{r['extra']}`" if r["extra"] else ""
        lines.append(f"| {arm} | {ori} | {extra} | {r['flip_axes']} | {ci(r['dice'])} | {ci(r['hd95'])} |")
    lines += ["", "One run per arm: differences within the overlap of the intervals are not evidence either way."]
    (res / "orientation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
