from __future__ import annotations

import pytest

from trained_runs import API_KEY, free_port


@pytest.fixture(scope="session")
def live_server(busi, tmp_path_factory):
    """``meddx serve`` on 127.0.0.1 on a free port (real uvicorn), stopped at the end of the session."""
    import os
    import subprocess
    import sys
    import time

    import httpx

    port = free_port()
    env = dict(os.environ, MEDDX_API_KEY=API_KEY)
    log = tmp_path_factory.mktemp("server") / "server.log"
    fh = open(log, "wb")  # a file, not a pipe: a full pipe would block the server
    proc = subprocess.Popen([sys.executable, "-m", "meddx.cli", "serve", str(busi), "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 600
        while True:
            if proc.poll() is not None:
                raise RuntimeError("meddx serve exited: " + log.read_text(errors="replace")[-2000:])
            try:
                if httpx.get(url + "/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise RuntimeError("meddx serve did not come up within 600 s")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        fh.close()
