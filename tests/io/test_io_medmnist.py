"""Locating and downloading MedMNIST files (downloads go to a local http.server)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import socket
import threading

import pytest

from meddx.errors import CorruptFileError, DataUnavailableError, InputError
from meddx.io import medmnist
from meddx.io.medmnist import MEDMNIST_MD5, file_md5, locate_medmnist


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch):
    for var in ("MEDDX_DATA_DIR", "MEDDX_CACHE_DIR", "MEDDX_MEDMNIST_URL"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def server(tmp_path):
    """A local HTTP server on a free port serving ``tmp_path/www``; yields (root, url template)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}/{{flag}}.npz"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


def test_official_md5s_match_the_real_files(data_dir):
    assert set(MEDMNIST_MD5) == {"breastmnist", "pneumoniamnist", "retinamnist", "adrenalmnist3d",
                                 "adrenalmnist3d_64", "vesselmnist3d"}
    for flag, md5 in MEDMNIST_MD5.items():
        assert file_md5(data_dir / "medmnist" / f"{flag}.npz") == md5, flag


def test_found_in_data_dir_both_layouts_and_env(data_dir, tmp_path, monkeypatch):
    assert locate_medmnist("breastmnist", data_dir=data_dir, allow_download=False) == \
        data_dir / "medmnist" / "breastmnist.npz"
    assert locate_medmnist("breastmnist", data_dir=data_dir / "medmnist", cache_dir=tmp_path,
                           allow_download=False) == data_dir / "medmnist" / "breastmnist.npz"
    monkeypatch.setenv("MEDDX_DATA_DIR", str(data_dir))
    assert locate_medmnist("BreastMNIST", cache_dir=tmp_path, allow_download=False) == \
        data_dir / "medmnist" / "breastmnist.npz"


def test_good_cache_used_bad_cache_rejected(data_dir, tmp_path, assert_one_line_error):
    cache = tmp_path / "cache"
    (cache / "medmnist").mkdir(parents=True)
    cached = cache / "medmnist" / "breastmnist.npz"
    shutil.copy(data_dir / "medmnist" / "breastmnist.npz", cached)
    assert locate_medmnist("breastmnist", data_dir=tmp_path / "nowhere", cache_dir=cache,
                           allow_download=False) == cached
    cached.write_bytes(b"not the real file")
    with pytest.raises(DataUnavailableError) as ei:
        locate_medmnist("breastmnist", data_dir=tmp_path / "nowhere", cache_dir=cache, allow_download=False)
    msg = assert_one_line_error(ei, cached)
    assert "MD5" in msg and "nowhere" in msg


def test_download_verified_and_atomic(tmp_path, server, monkeypatch):
    root, template = server
    payload = b"tiny medmnist stand-in " * 100
    (root / "tinymnist.npz").write_bytes(payload)
    monkeypatch.setitem(MEDMNIST_MD5, "tinymnist", hashlib.md5(payload).hexdigest())
    cache = tmp_path / "cache"
    # a corrupt cached copy is replaced by the verified download
    (cache / "medmnist").mkdir(parents=True)
    (cache / "medmnist" / "tinymnist.npz").write_bytes(b"stale")
    got = locate_medmnist("tinymnist", data_dir=tmp_path / "nowhere", cache_dir=cache, url_template=template)
    assert got == cache / "medmnist" / "tinymnist.npz" and got.read_bytes() == payload
    assert sorted(p.name for p in (cache / "medmnist").iterdir()) == ["tinymnist.npz"]
    # second call: served from the cache (the server copy is gone)
    (root / "tinymnist.npz").unlink()
    assert locate_medmnist("tinymnist", cache_dir=cache, url_template=template) == got


def test_download_with_wrong_md5_is_discarded(tmp_path, server, monkeypatch):
    root, template = server
    (root / "tinymnist.npz").write_bytes(b"tampered")
    monkeypatch.setitem(MEDMNIST_MD5, "tinymnist", "0" * 32)
    monkeypatch.setenv("MEDDX_MEDMNIST_URL", template)  # the env default is honoured
    cache = tmp_path / "cache"
    with pytest.raises(CorruptFileError) as ei:
        locate_medmnist("tinymnist", cache_dir=cache)
    assert "MD5" in str(ei.value) and "tinymnist" in str(ei.value)
    assert list((cache / "medmnist").iterdir()) == []  # no final file, no temp file


def test_unreachable_server(tmp_path, assert_one_line_error):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # the socket is closed: nothing listens on that port
    cache = tmp_path / "cache"
    with pytest.raises(DataUnavailableError) as ei:
        locate_medmnist("breastmnist", data_dir=tmp_path / "nowhere", cache_dir=cache,
                        url_template=f"http://127.0.0.1:{port}/{{flag}}.npz")
    msg = assert_one_line_error(ei, cache / "medmnist" / "breastmnist.npz")
    assert "nowhere" in msg and str(port) in msg
    assert list((cache / "medmnist").iterdir()) == []


def test_download_switched_off_and_bad_flag(tmp_path):
    with pytest.raises(DataUnavailableError, match="switched off"):
        locate_medmnist("breastmnist", data_dir=tmp_path, cache_dir=tmp_path, allow_download=False)
    with pytest.raises(InputError):
        locate_medmnist("../etc/passwd", cache_dir=tmp_path)
    with pytest.raises(DataUnavailableError, match="no official MD5"):
        locate_medmnist("chestmnist", data_dir=tmp_path, cache_dir=tmp_path)
    assert medmnist.DOWNLOAD_TIMEOUT_S == 20
