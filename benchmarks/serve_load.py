#!/usr/bin/env python
"""Serving load test: throughput and p50 / p99 latency of ``meddx serve`` at 1, 4 and 16 clients.

The server is ``meddx serve`` (uvicorn, one process) on 127.0.0.1 on a free port, started
and stopped by this script; clients are threads with their own HTTP connection, each
posting real BUSI ultrasound PNGs (about 500 x 500 px, ~250 kB) in a closed loop for a fixed
time (and at most a fixed number of requests). Two request kinds are measured in the
same run: ``explain=false`` (prediction, calibrated confidence, TTA uncertainty and refer
flag) and the default ``explain=true`` (plus the Grad-CAM heatmap); their ratio is the
cost of the explanation. Only loopback traffic; every loop is bounded in count and time.

Without ``--run`` a BUSI classifier is trained first (meddx default plan, 30 s budget).

Usage: python benchmarks/serve_load.py [--run RUN] [--seconds 20] [--clients 1 4 16]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from _common import DATA, HERE, git_commit, run_meddx

KEY = "load-test-key-" + os.urandom(6).hex()
MAX_REQUESTS = 2000  # per configuration: a hard bound besides the time limit


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, port: int) -> subprocess.Popen:
    import httpx

    env = dict(os.environ, MEDDX_API_KEY=KEY)
    proc = subprocess.Popen([sys.executable, "-m", "meddx.cli", "serve", str(run), "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("meddx serve exited during start-up")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("meddx serve did not start within 300 s")


def load(url: str, images: list[bytes], clients: int, seconds: float, explain: bool) -> dict:
    import httpx

    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds
    count = [0]

    def worker(k: int) -> None:
        with httpx.Client(timeout=120, headers={"X-API-Key": KEY}) as c:
            i = k
            while time.perf_counter() < stop_at:
                with lock:
                    if count[0] >= MAX_REQUESTS:
                        return
                    count[0] += 1
                img = images[i % len(images)]
                i += clients
                t0 = time.perf_counter()
                r = c.post(url + "/v1/predict", files={"file": ("img.png", img)},
                           params={"explain": str(explain).lower()})
                dt = time.perf_counter() - t0
                with lock:
                    if r.status_code == 200:
                        lat.append(dt)
                    else:
                        errors[0] += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    a = np.asarray(lat)
    return {"clients": clients, "explain": explain, "requests": int(a.size), "errors": errors[0],
            "seconds": round(wall, 2), "throughput_rps": float(a.size / wall) if wall else None,
            "p50_ms": float(np.percentile(a, 50) * 1000) if a.size else None,
            "p99_ms": float(np.percentile(a, 99) * 1000) if a.size else None,
            "mean_ms": float(a.mean() * 1000) if a.size else None}


def render(res: dict) -> str:
    i = res["info"]
    lines = ["# Serving load test", "",
             f"Command: `{i['command']}` ({i['date']}, commit {i['commit']}; {i['machine']}). Server: `meddx serve` "
             f"(uvicorn, one process, torch threads {i['server_threads']}) on 127.0.0.1; clients: threads in the "
             f"benchmark process on the same cores, closed loop, {i['seconds']:.0f} s per row (at most "
             f"{MAX_REQUESTS} requests). Model: {i['model']}; inputs: {i['n_images']} BUSI PNGs "
             f"(median {i['median_kb']:.0f} kB). Load average before / after: {i['load_before']} / {i['load_after']}.",
             "", "| request | clients | requests | errors | throughput (req/s) | p50 ms | p99 ms |",
             "|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        kind = "predict + Grad-CAM" if r["explain"] else "predict (no heatmap)"
        lines.append(f"| {kind} | {r['clients']} | {r['requests']} | {r['errors']} | {r['throughput_rps']:.2f} | "
                     f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} |")
    lines += ["", "Ratios in this run (throughput without / with the heatmap): "
              + ", ".join(f"{c} client(s) {v:.2f}x" for c, v in res["explain_cost"].items()) + ".",
              "", "Every request also computes the TTA uncertainty (the run's refer rule: "
              f"{i['uncertainty']}), so a prediction costs several forward passes. Latency grows with clients "
              "because the server has the same 2 cores as the clients: more clients raise throughput only "
              "until the cores are busy.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, default=None, help="a classification run (default: train one on BUSI)")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    args = ap.parse_args()
    sys.path.insert(0, str(HERE.parent / "src"))
    import torch

    from meddx.training.run import machine

    images = sorted((DATA / "seg" / "busi_subset").glob("*/*).png"))
    payload = [p.read_bytes() for p in images[:40]]
    with tempfile.TemporaryDirectory() as td:
        run = args.run
        if run is None:
            run = Path(td) / "busi_run"
            run_meddx(["train", str(DATA / "seg" / "busi_subset"), "--out", str(run), "--time-budget", "30s",
                       "--no-progress"], "training the served model")
        port = free_port()
        load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())
        proc = start_server(run, port)
        try:
            url = f"http://127.0.0.1:{port}"
            load(url, payload[:2], 1, 3.0, True)  # warm-up: first-call allocations
            rows = []
            for explain in (False, True):
                for c in args.clients:
                    r = load(url, payload, c, args.seconds, explain)
                    rows.append(r)
                    print(json.dumps(r), flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        plan_triage = json.loads((run / "triage.json").read_text())
        mach = machine()
        cost = {}
        for c in args.clients:
            a = next(r for r in rows if r["clients"] == c and not r["explain"])
            b = next(r for r in rows if r["clients"] == c and r["explain"])
            cost[str(c)] = a["throughput_rps"] / b["throughput_rps"] if b["throughput_rps"] else None
        res = {"rows": rows, "explain_cost": cost, "info": {
            "command": "python benchmarks/serve_load.py" + (f" --run {args.run}" if args.run else "")
                       + (f" --seconds {args.seconds:g}" if args.seconds != 20.0 else ""),
            "date": _dt.date.today().isoformat(), "commit": git_commit(),
            "machine": f"{mach['cpu']}, {mach['cores']} cores", "server_threads": torch.get_num_threads(),
            "seconds": args.seconds,
            "n_images": len(payload), "median_kb": float(np.median([len(p) for p in payload]) / 1024),
            "uncertainty": f"{plan_triage.get('method_used')} x{plan_triage.get('samples')}",
            "load_before": load_before, "load_after": " ".join(f"{x:.1f}" for x in os.getloadavg())}}
        from meddx.planning.plan import Plan

        p = Plan.load(run / "plan.yaml")
        res["info"]["model"] = f"{p.model.name}, {p.data.input_size} px, {len(p.data.class_names)} classes"
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "serve.json").write_text(json.dumps(res, indent=1))
    (out / "serve.md").write_text(render(res))
    print(render(res))


if __name__ == "__main__":
    main()
