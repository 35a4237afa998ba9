"""The preprocessor registry the plan names components from."""

from __future__ import annotations

import numpy as np
import pytest

from meddx.transforms import PREPROCESSORS, list_preprocessors

REQUIRED = {"median", "gaussian", "bilateral", "nlm", "ct_window", "percentile_clip", "zscore", "clahe",
            "hist_equalise"}


def test_registry_names_and_parameters():
    assert REQUIRED <= set(PREPROCESSORS)
    listed = {p["name"]: p for p in list_preprocessors()}
    assert set(listed) == set(PREPROCESSORS)
    assert listed["median"]["params"] == {"radius": 1}
    assert listed["ct_window"]["params"]["preset"] is None and listed["clahe"]["params"]["clip_limit"] == 0.01
    assert all(p["doc"] for p in listed.values())


@pytest.mark.parametrize("name", sorted(REQUIRED))
@pytest.mark.parametrize("shape", [(2, 20, 24), (1, 10, 12, 14)])
def test_every_preprocessor_runs_with_defaults_2d_3d(name, shape):
    a = (np.random.default_rng(0).random(shape) * 200 - 50).astype(np.float32)
    before = a.copy()
    out = PREPROCESSORS[name](a)
    np.testing.assert_array_equal(a, before)  # the input is never modified in place
    assert out.shape == a.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert not np.array_equal(out, a)  # each one changes a noisy image
