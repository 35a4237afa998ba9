"""Plots return PNG bytes and optionally write the same bytes to a file."""

from __future__ import annotations

import numpy as np
import pytest

from meddx.errors import MeddxError
from meddx.evaluation import plot_confusion, plot_reliability, plot_roc, plot_training_curves

PNG = b"\x89PNG\r\n\x1a\n"


def _data(k, n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.5
    return y, np.exp(logits) / np.exp(logits).sum(1, keepdims=True)


@pytest.mark.parametrize("k", [2, 4])
def test_plot_roc(k, tmp_path):
    y, proba = _data(k)
    out = tmp_path / "roc.png"
    png = plot_roc(y, proba, [f"c{j}" for j in range(k)], path=out)
    assert png.startswith(PNG) and len(png) > 5000
    assert out.read_bytes() == png


def test_plot_roc_class_absent_still_draws():
    y, proba = _data(3)
    y[y == 2] = 0
    assert plot_roc(y, proba, ["a", "b", "c"]).startswith(PNG)


def test_plot_confusion_and_reliability():
    assert plot_confusion([[5, 1], [0, 4]], ["neg", "pos"], title="test").startswith(PNG)
    assert plot_confusion([[0, 0], [0, 4]], ["neg", "pos"]).startswith(PNG)  # empty row
    with pytest.raises(MeddxError):
        plot_confusion([[1, 2]], ["a"])
    assert plot_reliability(*_data(3)).startswith(PNG)


def test_plot_training_curves(tmp_path):
    history = [
        {"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e if e != 2 else None,
         "val_metric": 0.5 + 0.05 * e, "val_metric_name": "auc", "lr": 1e-3 * 0.5 ** e}
        for e in range(1, 8)
    ]
    png = plot_training_curves(history, path=tmp_path / "curves.png")
    assert png.startswith(PNG)
    assert (tmp_path / "curves.png").read_bytes() == png
    with pytest.raises(MeddxError):
        plot_training_curves([])


def test_a_short_run_is_plotted_on_whole_epochs(monkeypatch):
    """A one-epoch run's axis used to read 0.945 ... 1.050; it shows the whole epoch now."""
    import matplotlib.axes

    ticks = []
    real = matplotlib.axes.Axes.set_xticks
    monkeypatch.setattr(matplotlib.axes.Axes, "set_xticks",
                        lambda self, t, *a, **k: (ticks.append(list(t)), real(self, t, *a, **k))[1])
    plot_training_curves([{"epoch": 1, "train_loss": 0.6, "val_loss": 0.59, "val_metric": 0.65, "lr": 0.002}])
    assert ticks == [[1], [1]]
