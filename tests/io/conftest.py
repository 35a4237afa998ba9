"""Shared fixtures for the I/O tests: the real-data folder and a hand-rolled PNG writer."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def _data_dir() -> Path:
    env = os.environ.get("MEDDX_DATA_DIR")
    return Path(env).expanduser().resolve() if env else (REPO_ROOT / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real public data (``$MEDDX_DATA_DIR``, default ``../shared/data``); it must exist."""
    d = _data_dir()
    assert (d / "MANIFEST.md").is_file(), f"real test data not found at {d}; set MEDDX_DATA_DIR"
    return d


@pytest.fixture(scope="session")
def dicom_dir(data_dir: Path) -> Path:
    return data_dir / "dicom" / "pydicom_data_selection"


@pytest.fixture(scope="session")
def tcia_dir(data_dir: Path) -> Path:
    return data_dir / "dicom" / "tcia_brain_tumor_progression_PGBM-001"


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _filter_row(ft: int, cur: np.ndarray, prev: np.ndarray, bpp: int) -> np.ndarray:
    """PNG-filter one row of bytes (the reference, per-byte definition)."""
    cur, prev = cur.astype(np.int32), prev.astype(np.int32)
    out = np.empty_like(cur)
    for i in range(len(cur)):
        a = cur[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        if ft == 0:
            pred = 0
        elif ft == 1:
            pred = a
        elif ft == 2:
            pred = b
        elif ft == 3:
            pred = (a + b) // 2
        else:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
        out[i] = (cur[i] - pred) % 256
    return out.astype(np.uint8)


def encode_png(arr: np.ndarray, color_type: int, bit_depth: int, filters: list[int] | None = None) -> bytes:
    """Encode ``(H, W[, C])`` as PNG bytes, with a chosen filter type per row."""
    h, w = arr.shape[:2]
    dtype = ">u2" if bit_depth == 16 else "u1"
    rows = [np.frombuffer(arr[y].astype(dtype).tobytes(), np.uint8) for y in range(h)]
    bpp = max(1, (arr.shape[2] if arr.ndim == 3 else 1) * bit_depth // 8)
    prev = np.zeros_like(rows[0])
    raw = b""
    for y, row in enumerate(rows):
        ft = filters[y % len(filters)] if filters else 0
        raw += bytes([ft]) + _filter_row(ft, row, prev, bpp).tobytes()
        prev = row
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw))
            + png_chunk(b"IEND", b""))


@pytest.fixture
def make_png():
    return encode_png


@pytest.fixture
def assert_one_line_error():
    """Check an error names the file (by name) and is one line with a fix."""

    def check(exc_info, path: Path) -> str:
        msg = str(exc_info.value)
        assert path.name in msg, msg
        assert "\n" not in msg
        assert "Fix:" in msg, msg
        return msg

    return check
