"""``meddx serve`` on a segmenter: the heatmap is about the region the answer reports."""

from __future__ import annotations

import numpy as np

from deploy_testutils import make_seg_run
from meddx_testutils import write_png


def test_segmenter_heatmap_explains_the_reported_region(tmp_path, monkeypatch):
    """The heatmap's class was the explainer's own pick (largest region in the resized model input,
    before post-processing) and could differ from the answer's label (largest region in the image's
    geometry): seen on emri_small.dcm, label 'label_2' with a heatmap for 'label_1'."""
    from meddx.deploy.server import ModelService
    from meddx.explain.cam import Explainer

    run = make_seg_run(tmp_path / "run", dims=2, size=32, tta=(), postprocess=())
    img = write_png(tmp_path / "x.png", (np.random.default_rng(0).random((40, 40)) * 255).astype(np.uint8))
    svc = ModelService(run)
    out = svc.predict(img)
    label = out["label_index"]
    assert label > 0  # these random weights (seed 0) segment something
    other = 2 if label == 1 else 1
    monkeypatch.setattr(Explainer, "default_class", lambda self, x: other)  # the explainer would pick another
    out = svc.predict(img)
    assert out["explanation"]["class"] == out["label"]
