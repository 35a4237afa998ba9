"""Find a MedMNIST ``.npz`` on disk, in the user cache, or download it (MD5-checked)."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from meddx.errors import CorruptFileError, DataUnavailableError, InputError
from meddx.io.formats import short_reason

log = logging.getLogger(__name__)

#: Official MD5 of each release file (medmnist 3.0.2 ``INFO[flag]["MD5"]``; ``_64`` is ``MD5_64``).
MEDMNIST_MD5: dict[str, str] = {
    "breastmnist": "750601b1f35ba3300ea97c75c52ff8f6",
    "pneumoniamnist": "28209eda62fecd6e6a2d98b1501bb15f",
    "retinamnist": "bd4c0672f1bba3e3a89f0e4e876791e4",
    "adrenalmnist3d": "bbd3c5a5576322bc4cdfea780653b1ce",
    "adrenalmnist3d_64": "17721accfe9fb005146a47d33bc54b2f",
    "vesselmnist3d": "b41fd4f7e7e2feedddb201585ecafa1b",
}
DEFAULT_URL_TEMPLATE = "https://zenodo.org/records/10519652/files/{flag}.npz?download=1"
DOWNLOAD_TIMEOUT_S = 20
_FLAG_RE = re.compile(r"^[a-z0-9_]+$")


def file_md5(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex MD5 of a file."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def default_cache_dir() -> Path:
    """``$MEDDX_CACHE_DIR`` or ``~/.cache/meddx``."""
    env = os.environ.get("MEDDX_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "meddx"


def locate_medmnist(flag: str, data_dir: str | Path | None = None, cache_dir: str | Path | None = None,
                    allow_download: bool = True, url_template: str | None = None) -> Path:
    """Path of ``<flag>.npz``, downloading it into the cache if needed.

    Search order: ``data_dir`` then ``$MEDDX_DATA_DIR`` (each as ``<dir>/medmnist/<flag>.npz``
    or ``<dir>/<flag>.npz``, used as is), then the cache ``<cache>/medmnist/<flag>.npz``
    (used only if its MD5 is the official one), then a download from ``url_template``
    (``{flag}`` is substituted; default ``$MEDDX_MEDMNIST_URL`` or Zenodo) into a
    temporary file in the cache, MD5-checked and renamed into place. Only flags with a
    known MD5 are cached or downloaded.

    Raises:
        InputError: a malformed flag.
        CorruptFileError: the downloaded file's MD5 is wrong (nothing is kept).
        DataUnavailableError: not found locally and not downloadable (the message says where it looked).
    """
    flag = flag.strip().lower()
    if not _FLAG_RE.match(flag):
        raise InputError(f"'{flag}' is not a MedMNIST flag", path=None,
                         fix=f"use a name such as {', '.join(sorted(MEDMNIST_MD5))}")
    looked: list[str] = []
    dirs = [Path(data_dir).expanduser()] if data_dir is not None else []
    env_data = os.environ.get("MEDDX_DATA_DIR")
    if env_data:
        dirs.append(Path(env_data).expanduser())
    for d in dirs:
        for cand in (d / "medmnist" / f"{flag}.npz", d / f"{flag}.npz"):
            if cand.is_file():
                return cand
            looked.append(str(cand))

    cache_root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cached = cache_root / "medmnist" / f"{flag}.npz"
    looked.append(str(cached))
    md5 = MEDMNIST_MD5.get(flag)
    problems: list[str] = []
    if cached.is_file():
        if md5 is None:
            problems.append(f"{cached} cannot be verified (no official MD5 for '{flag}')")
        else:
            got = file_md5(cached)
            if got == md5:
                return cached
            problems.append(f"cached {cached} has MD5 {got}, expected {md5}: not used")
            log.warning("ignoring %s: MD5 %s, expected %s", cached, got, md5)

    where = "; ".join(looked)
    if md5 is None:
        raise DataUnavailableError(
            f"'{flag}' not found (looked in {where}){_join(problems)} and it has no official MD5 to download against",
            path=None, fix=f"copy {flag}.npz into one of those folders or set MEDDX_DATA_DIR")
    if not allow_download:
        raise DataUnavailableError(
            f"MedMNIST '{flag}' not found (looked in {where}){_join(problems)}; downloading is switched off",
            path=None, fix=f"copy {flag}.npz into one of those folders, set MEDDX_DATA_DIR, or allow the download")
    template = url_template or os.environ.get("MEDDX_MEDMNIST_URL") or DEFAULT_URL_TEMPLATE
    url = template.format(flag=flag)
    try:
        _download(url, cached, md5)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise DataUnavailableError(
            f"MedMNIST '{flag}' not found (looked in {where}){_join(problems)} and the download from {url} failed "
            f"({short_reason(e)})", path=None,
            fix=f"check the network or proxy, or download it by hand to {cached}") from e
    return cached


def _join(problems: list[str]) -> str:
    return "".join(f"; {p}" for p in problems)


def _download(url: str, dest: Path, md5: str) -> None:
    """Fetch ``url`` into ``dest`` atomically, keeping it only if its MD5 matches."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https", "file"):
        raise ValueError(f"unsupported URL scheme '{scheme}'")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.stem}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp:  # noqa: S310
            while block := resp.read(1 << 20):
                h.update(block)
                out.write(block)
        got = h.hexdigest()
        if got != md5:
            raise CorruptFileError(f"downloaded file has MD5 {got}, expected {md5}; it was discarded", path=url,
                                   fix="try again later, or download it by hand and check the MD5")
        os.replace(tmp, dest)
        log.info("downloaded %s to %s", url, dest)
    finally:
        tmp.unlink(missing_ok=True)
