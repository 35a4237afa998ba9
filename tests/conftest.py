"""Shared fixtures: where the real data lives, and tiny generated datasets."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# Pseudonyms are keyed (data/case.py): the tests use a fixed key, so they neither read nor make
# the user's ~/.config/meddx/pseudonym.key (the CLI subprocesses inherit it).
os.environ.setdefault("MEDDX_PSEUDONYM_KEY", "meddx-tests-not-a-secret")

from meddx_testutils import data_dir, write_png


@pytest.fixture(scope="session")
def real_data() -> Path:
    d = data_dir()
    assert d.exists(), f"real data not found at {d}; set MEDDX_DATA_DIR"
    return d


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    """Two classes of 24 small PNGs each (mixed sizes, some RGB): bright square or not."""
    from meddx.data.synthetic import make_phantoms

    imgs, labels = make_phantoms(n=48, size=28, seed=1)
    root = tmp_path / "folder"
    for i, (im, y) in enumerate(zip(imgs, labels)):
        cls = "lesion" if y else "normal"
        if i % 5 == 0:
            im = np.stack([im] * 3, -1)
        if i % 3 == 0:
            from PIL import Image

            im = np.asarray(Image.fromarray(im).resize((32, 30)))
        write_png(root / cls / f"img_{i:03d}.png", im)
    return root


@pytest.fixture(scope="session")
def busi(tmp_path_factory):
    """A small BUSI classifier trained once per test session (tests/trained_runs.py)."""
    from trained_runs import busi_run

    return busi_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def seg_run(tmp_path_factory):
    """A small disc segmenter trained once per test session (tests/trained_runs.py)."""
    from trained_runs import disc_seg_run

    return disc_seg_run(tmp_path_factory.getbasetemp())
