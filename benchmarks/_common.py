"""Helpers shared by the benchmark scripts (run as ``python benchmarks/<name>.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("MEDDX_DATA_DIR", HERE.parent.parent / "shared" / "data"))


def git_commit() -> str:
    """Short hash of the commit that produced a number, ``+dirty`` when tracked source files differ
    from it (``unknown`` outside git)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "src", "benchmarks",
                                ":(exclude)benchmarks/results"], cwd=HERE.parent, capture_output=True, text=True,
                               check=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_meddx(args: list[str], what: str) -> tuple[float, float]:
    """Run ``meddx <args>`` in its own process; return (wall seconds, peak RSS MiB). Raises on failure."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "meddx.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    log = proc.stdout.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{what} failed:\n{log[-3000:]}")
    return round(time.perf_counter() - t0, 1), round(usage.ru_maxrss / 1024, 1)


def inference_fields(metrics: dict) -> dict:
    """The per-case inference seconds that `meddx evaluate` records in a segmentation/detection metrics.json."""
    t = metrics["inference"]
    return {"infer_s_per_case": t["seconds_per_case_mean"], "infer_s_max": t["seconds_per_case_max"]}


def keep_earlier(results: dict, name: str, out: dict, keys=("date", "commit", "command", "budget_s", "lines")) -> None:
    """Store a dataset's new result in ``results``; the one it replaces is listed under
    ``earlier_runs`` (a re-run never hides an earlier number)."""
    prev = results.get(name)
    if prev:
        history = prev.pop("earlier_runs", [])
        out["earlier_runs"] = history + [{k: prev[k] for k in keys if k in prev}]
    results[name] = out


def earlier_lines(result: dict) -> list[str]:
    """Markdown for a dataset's earlier runs, each quoted under its date, commit, command and budget."""
    lines = []
    for e in result.get("earlier_runs", []):
        lines += [f"Earlier run ({e['date']}, commit {e['commit']}, `{e['command'].strip()}`, budget "
                  f"{e['budget_s']:.0f} s), kept for the record:", "", *[f"> {x}" if x else ">" for x in e["lines"]], ""]
    return lines


def machine_line(info: dict, extra: str = "") -> str:
    """``Machine: CPU, N cores<extra>. Versions: ...`` for a results file header."""
    m = info["machine"]
    return (f"Machine: {m['cpu']}, {m['cores']} cores{extra}. Versions: "
            + ", ".join(f"{k} {v}" for k, v in info["versions"].items()) + ".")


class CpuShare:
    """How much CPU other processes used while a measurement ran (Linux ``/proc/stat``).

    ``with CpuShare() as c: ...`` then ``c.result``: wall seconds, this process's CPU seconds
    (its waited-for children included), other processes' CPU seconds (all busy time minus ours),
    the hypervisor's steal, and ``other_share``, the others' CPU time as a fraction of all cores
    over the wall time. The load average cannot say this: it counts the benchmark's own threads.
    """

    def __init__(self):
        self.result: dict = {}

    @staticmethod
    def _busy_steal() -> tuple[float, float] | None:
        try:
            f = [float(x) for x in open("/proc/stat").readline().split()[1:]]
        except (OSError, ValueError):
            return None
        hz = os.sysconf("SC_CLK_TCK")
        busy = f[0] + f[1] + f[2] + (f[5] if len(f) > 5 else 0) + (f[6] if len(f) > 6 else 0)
        return busy / hz, (f[7] if len(f) > 7 else 0.0) / hz

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def __enter__(self):
        self._t0, self._own0, self._sys0 = time.perf_counter(), self._own(), self._busy_steal()
        return self

    def __exit__(self, *exc):
        wall, own, sys1 = time.perf_counter() - self._t0, self._own() - self._own0, self._busy_steal()
        self.result = {"wall_s": round(wall, 1), "own_cpu_s": round(own, 1)}
        if self._sys0 is not None and sys1 is not None:
            other = max(0.0, sys1[0] - self._sys0[0] - own)
            self.result.update({"other_cpu_s": round(other, 1), "steal_s": round(sys1[1] - self._sys0[1], 1),
                                "other_share": round(other / max(wall * (os.cpu_count() or 1), 1e-9), 3)})
        return False


# BUSI ships `benign (4)_mask_1.png` at 555x465 beside a 416x416 image: a second-lesion mask that
# belongs to another image, so every benchmark leaves it out (the other extra mask, benign (25)'s,
# fits its image and is merged).
BUSI_FOREIGN_MASKS = frozenset({"benign (4)_mask_1.png"})


def busi_items(root: Path) -> list[tuple[str, Path, list[Path]]]:
    """BUSI's (class, image, masks) triples, the foreign mask left out."""
    items = []
    for cls in ("benign", "malignant", "normal"):
        for img in sorted((root / cls).glob("*.png")):
            if "_mask" in img.stem:
                continue
            masks = [img.with_name(img.stem + "_mask.png")]
            masks += [m for m in sorted(img.parent.glob(f"{img.stem}_mask_*.png")) if m.name not in BUSI_FOREIGN_MASKS]
            items.append((cls, img, masks))
    return items


def busi_view(root: Path, into: Path) -> Path:
    """A folder of symbolic links to BUSI's images and masks in their class folders, the foreign mask
    left out, so `meddx` reads it as the sibling-mask layout (split stratified by class folder)."""
    for cls, img, masks in busi_items(root):
        (into / cls).mkdir(parents=True, exist_ok=True)
        for p in (img, *masks):
            link = into / cls / p.name
            if not link.is_symlink():
                link.symlink_to(p.resolve())
    return into
