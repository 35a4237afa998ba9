from __future__ import annotations

import pytest

from trained_runs import busi_run, disc_seg_run


@pytest.fixture(scope="session")
def busi(tmp_path_factory):
    return busi_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def seg_run(tmp_path_factory):
    return disc_seg_run(tmp_path_factory.getbasetemp())
