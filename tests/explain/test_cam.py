"""Grad-CAM, Grad-CAM++ and occlusion on models whose evidence is known, and on registry models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from meddx.errors import MeddxError
from meddx.explain.cam import Explainer, bottleneck_layer


class BrightnessNet(nn.Module):
    """Class 1 score = mean of ReLU(image), class 0 = its negative: the evidence for class 1 is the bright region."""

    def __init__(self, spatial_dims: int = 2):
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.features = conv(1, 2, 1, bias=False)
        with torch.no_grad():
            self.features.weight.fill_(1.0)
        self.act = nn.ReLU()
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))
        self.cam_layer = "act"
        self.classifier_layer = "fc"

    def forward(self, x):
        return self.fc(self.act(self.features(x)).flatten(2).mean(-1))


def _square_image(size=32, lo=8, hi=16, dims=2):
    x = torch.zeros((1, 1) + (size,) * dims)
    x[(0, 0) + (slice(lo, hi),) * dims] = 3.0
    return x


@pytest.mark.parametrize("method", ["gradcam", "gradcampp", "occlusion"])
def test_heatmap_points_at_the_evidence_2d(method):
    import warnings

    x = _square_image()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        h = Explainer(BrightnessNet(), occlusion_mask=0.25).explain(x, method, class_idx=1)
    # occlusion printed torch's list-indexing warning four times on stderr (MONAI's indexing)
    assert not [w for w in seen if "non-tuple sequence" in str(w.message)]
    assert h.shape == (32, 32) and h.dtype == np.float32
    assert 0.0 <= h.min() and h.max() == pytest.approx(1.0)
    inside = np.zeros((32, 32), bool)
    inside[8:16, 8:16] = True
    assert inside.ravel()[int(np.argmax(h))]  # the maximum lies on the bright square
    assert h[inside].mean() > 3 * h[~inside].mean()


@pytest.mark.parametrize("method", ["gradcam", "occlusion"])
def test_heatmap_3d_has_the_input_shape_and_points_at_the_evidence(method):
    x = _square_image(size=16, lo=2, hi=7, dims=3)
    h = Explainer(BrightnessNet(3)).explain(x, method, class_idx=1)
    assert h.shape == (16, 16, 16)
    peak = np.unravel_index(int(np.argmax(h)), h.shape)
    assert all(2 <= v < 7 for v in peak)


class SignNet(nn.Module):
    """Bright pixels are evidence for class 1, dark ones for class 0; ``seg=True`` scores every pixel (a segmenter)."""

    def __init__(self, seg: bool = False):
        super().__init__()
        self.features = nn.Conv2d(1, 2, 1, bias=False)
        with torch.no_grad():
            self.features.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        self.act = nn.ReLU()
        self.seg = seg
        self.head = nn.Conv2d(2, 2, 1, bias=False) if seg else nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[-1.0, 1.0], [1.0, -1.0]]).view(self.head.weight.shape))
        if seg:
            self.divisor = 1  # what marks a segmenter without a registry name
        self.cam_layer = "act"

    def forward(self, x):
        a = self.act(self.features(x))
        return self.head(a) if self.seg else self.head(a.flatten(2).mean(-1))


@pytest.mark.parametrize("seg,method", [(False, "gradcam"), (False, "gradcampp"), (False, "occlusion"),
                                        (True, "gradcam"), (True, "gradcampp")])
def test_the_map_follows_the_explained_class_not_the_image_contrast(seg, method):
    """A bright square (evidence for class 1) and a dark one (class 0) in one image: each class's map lies on its
    own square and leaves the other at zero. A map of the image's contrast, or of the predicted class whatever
    --class says, would light both or the wrong one; the single-square tests above cannot tell."""
    x = torch.zeros(1, 1, 32, 32)
    x[..., 4:12, 4:12] = 3.0
    x[..., 20:28, 20:28] = -3.0
    bright, dark = np.zeros((32, 32), bool), np.zeros((32, 32), bool)
    bright[4:12, 4:12] = True
    dark[20:28, 20:28] = True
    e = Explainer(SignNet(seg), occlusion_mask=0.25)
    assert e.segmenter == seg
    for c, evidence, other in ((1, bright, dark), (0, dark, bright)):
        h = e.explain(x, method, class_idx=c)
        assert evidence.ravel()[int(np.argmax(h))]
        assert h[evidence].mean() > 0.5 and h[other].max() == 0.0


def test_class_with_negative_evidence_gives_an_empty_gradcam():
    # class 0 is *lowered* by the bright square: Grad-CAM's ReLU leaves nothing, and the map stays all zero
    h = Explainer(BrightnessNet()).explain(_square_image(), "gradcam", class_idx=0)
    assert not h.any()


def test_explainer_leaves_the_model_untouched():
    m = BrightnessNet()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    Explainer(m).explain(_square_image(), "gradcam")
    assert not m._forward_hooks and not m.act._forward_hooks and not m.act._backward_hooks
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert all(p.grad is None for p in m.parameters())


@pytest.mark.parametrize("name,dims", [("small_cnn", 2), ("resnet18", 2), ("small_cnn", 3), ("mobilenet_v2", 2)])
def test_registry_classifiers_explain_without_per_model_code(name, dims):
    from meddx.models import create_model

    size = (28,) * dims if dims == 2 else (16,) * dims
    m = create_model(name, spatial_dims=dims, in_channels=1, num_classes=3, input_size=size)
    torch.manual_seed(0)
    h = Explainer(m).explain(torch.randn(1, 1, *size), "gradcampp")
    assert h.shape == size and np.isfinite(h).all() and 0 <= h.min() and h.max() <= 1


def test_segmenter_gets_a_class_region_map_at_its_bottleneck():
    from meddx.models import create_model

    m = create_model("unet", spatial_dims=2, in_channels=1, num_classes=2, input_size=(32, 32))
    e = Explainer(m)
    assert e.segmenter
    x = torch.randn(1, 1, 32, 32)
    h = e.explain(x, "gradcam", class_idx=1)
    assert h.shape == (32, 32) and np.isfinite(h).all()
    # the UNet has no cam_layer: the hook goes on its last convolution at the coarsest resolution
    name = e.layer_name(x)
    assert name.startswith("net.") and name[4:] == bottleneck_layer(m, x)
    with pytest.raises(MeddxError, match="classifiers only"):
        e.explain(x, "occlusion")


def test_bad_method_and_batch_are_clear_errors():
    e = Explainer(BrightnessNet())
    with pytest.raises(MeddxError, match="unknown explanation method 'lime'"):
        e.explain(_square_image(), "lime")
    with pytest.raises(MeddxError, match="one image"):
        e.explain(torch.zeros(2, 1, 8, 8), "gradcam")
