"""Small real runs shared by the explain and deploy tests, trained once per test session."""

from __future__ import annotations

from pathlib import Path

from meddx_testutils import data_dir, write_seg_pairs

_CACHE: dict[str, Path] = {}
API_KEY = "test-key-0123456789"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def busi_run(base: Path) -> Path:
    """A small_cnn classifier on the BUSI subset (benign / malignant / normal, real ultrasound), 64 px,
    a few epochs: enough to predict, explain and serve, not to be accurate."""
    if "busi" not in _CACHE:
        from meddx.training.run import train_run

        out = base / "busi_run"
        train_run(str(data_dir() / "seg" / "busi_subset"), out, image_size=64, progress=False, log=lambda *a: None,
                  overrides={"train.epochs": 4, "train.batch_size": 16, "evaluate.n_boot": 50,
                             "evaluate.uncertainty_samples": 4})
        _CACHE["busi"] = out
    return _CACHE["busi"]


def disc_seg_run(base: Path) -> Path:
    """A 2D U-Net on generated disc images (48 px, 3 epochs): a segmentation run to serve and explain."""
    if "seg" not in _CACHE:
        from meddx.training.seg_run import train_seg_run

        root = write_seg_pairs(base / "discs", n=24, size=48)
        out = base / "disc_seg_run"
        train_seg_run(str(root), out, overrides={"train.epochs": 3, "data.input_size": [48, 48]}, progress=False,
                      log=lambda *a: None)
        _CACHE["seg"] = out
    return _CACHE["seg"]


def busi_image(label: str = "malignant", k: int = 1) -> Path:
    return data_dir() / "seg" / "busi_subset" / label / f"{label} ({k}).png"
