import torch

from meddx.transforms.augment import BatchAugment
from meddx.transforms.intensity import apply_scheme, to_channels
from meddx.transforms.spatial import resize

import numpy as np


def test_zero_parameters_are_identity():
    x = torch.randn(4, 1, 16, 16)
    aug = BatchAugment(spatial_dims=2)
    assert not aug.active
    y, _ = aug(x, torch.Generator().manual_seed(0))
    assert torch.equal(x, y)


def test_params_replay_exactly_and_differ_by_seed():
    x = torch.randn(6, 1, 20, 20)
    aug = BatchAugment(spatial_dims=2, flip_axes=(1,), rotate_deg=15, scale=0.1, translate=0.1, brightness=0.2,
                       contrast=0.2, noise_std=0.1)
    y1, params = aug(x, torch.Generator().manual_seed(5))
    assert torch.equal(aug.apply(x, params), y1)          # recorded params replay
    y2, _ = aug(x, torch.Generator().manual_seed(5))
    y3, _ = aug(x, torch.Generator().manual_seed(6))
    assert torch.equal(y1, y2) and not torch.allclose(y1, y3)


def test_flip_only_is_exact():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    aug = BatchAugment(spatial_dims=2, flip_axes=(1,))
    params = aug.sample(2, torch.Generator().manual_seed(0))
    params["flip"][:] = torch.tensor([[True], [False]])
    y = aug.apply(x, params)
    assert torch.equal(y[0], x[0].flip(-1)) and torch.equal(y[1], x[1])


def test_p_zero_leaves_batch_untouched_and_3d_works():
    x = torch.randn(3, 1, 8, 8, 8)
    aug = BatchAugment(spatial_dims=3, flip_axes=(0, 1, 2), rotate_deg=10, translate=0.1, contrast=0.1, p=0.0)
    y, _ = aug(x, torch.Generator().manual_seed(0))
    assert torch.equal(x, y)
    aug.p = 1.0
    y, _ = aug(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and not torch.allclose(x, y)


def test_intensity_schemes_and_channels():
    a = np.array([[[0, 255]]], dtype=np.float32)
    assert np.allclose(apply_scheme(a, "scale255"), [[[0, 1]]])
    ct = np.array([[[-2000, 0, 3000]]], dtype=np.float32)
    assert np.allclose(apply_scheme(ct, "clip_scale", (-1000, 1000)), [[[0, 0.5, 1]]])
    z = apply_scheme(np.array([[[1, 2, 3, 4]]], dtype=np.float32), "image_zscore")
    assert abs(z.mean()) < 1e-6 and abs(z.std() - 1) < 1e-5
    # several channels (T1, FLAIR): channel_zscore takes each on its own, so one modality's units do not
    # swamp the other's; image_zscore (runs made before channel_zscore) keeps one mean and sd for all
    t1 = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
    both = np.concatenate([t1, 5000 - 80 * t1])
    two = apply_scheme(both, "channel_zscore")
    np.testing.assert_allclose(two[0], apply_scheme(t1, "image_zscore")[0], atol=1e-6)
    np.testing.assert_allclose(two[1], -two[0], atol=1e-5)
    joint = apply_scheme(both, "image_zscore")
    assert abs(joint.mean()) < 1e-5 and np.ptp(joint[0]) < 0.05 < np.ptp(joint[1])  # T1 flattened by FLAIR's scale
    np.testing.assert_array_equal(apply_scheme(t1, "channel_zscore"), apply_scheme(t1, "image_zscore"))
    rgb = np.ones((3, 2, 2), dtype=np.float32)
    assert to_channels(rgb, 1).shape == (1, 2, 2) and np.allclose(to_channels(rgb, 1), 1.0)
    assert to_channels(np.ones((1, 2, 2)), 3).shape == (3, 2, 2)
    assert to_channels(np.ones((2, 2, 2)), 3) is None


def test_resize_2d_and_3d():
    assert resize(np.random.rand(1, 40, 50).astype(np.float32), (28, 28)).shape == (1, 28, 28)
    assert resize(np.random.rand(1, 10, 12, 14).astype(np.float32), (8, 8, 8)).shape == (1, 8, 8, 8)
    const = np.full((1, 30, 30), 7.0, dtype=np.float32)
    assert np.allclose(resize(const, (10, 10)), 7.0, atol=1e-5)


def test_gamma_blur_elastic_replay_and_do_what_they_say():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 24, 24)
    for kw in ({"gamma": 0.5}, {"blur_sigma": 1.5}, {"elastic": 0.05}):
        aug = BatchAugment(spatial_dims=2, **kw)
        assert aug.active
        y, params = aug(x, g)
        assert y.shape == x.shape and not torch.allclose(x, y)
        assert torch.equal(aug.apply(x, params), y)
    # gamma keeps each image's range and maps min -> min, max -> max
    aug = BatchAugment(spatial_dims=2, gamma=0.5)
    y, _ = aug(x, g)
    assert torch.allclose(y.amin((1, 2, 3)), x.amin((1, 2, 3)), atol=1e-5)
    assert torch.allclose(y.amax((1, 2, 3)), x.amax((1, 2, 3)), atol=1e-5)
    # blur lowers the high-frequency energy and keeps the mean (replicate padding, normalised kernel)
    checker = ((torch.arange(24).view(-1, 1) + torch.arange(24)) % 2).float().expand(2, 1, 24, 24)
    aug = BatchAugment(spatial_dims=2, blur_sigma=2.0)
    params = aug.sample(2, g)
    params["blur"] = torch.tensor([1.0, 0.0])
    y = aug.apply(checker, params)
    assert y[0].std() < 0.2 * checker[0].std() and torch.equal(y[1], checker[1])
    assert abs(float(y[0].mean() - checker[0].mean())) < 0.02


def test_elastic_moves_labels_with_images_in_3d():
    g = torch.Generator().manual_seed(1)
    x = torch.zeros(2, 1, 16, 16, 16)
    x[:, :, 5:11, 5:11, 5:11] = 1.0
    aug = BatchAugment(spatial_dims=3, elastic=0.08, blur_sigma=0.0)
    y, params = aug(x, g)
    lab = aug.apply_labels(x[:, 0].long(), params)
    assert lab.shape == (2, 16, 16, 16)
    assert not torch.equal(lab, x[:, 0].long())  # the cube moved
    agree = ((y[:, 0] > 0.5).long() == lab).float().mean()
    assert agree > 0.97  # image and mask deformed alike


def _coordinate_image(spatial: tuple[int, ...]) -> torch.Tensor:
    """``(1, d, *spatial)``: channel i holds each pixel's index along the grid's axis i (x, y[, z] =
    the spatial axes reversed). Bilinear sampling of it returns the sampled input position exactly."""
    idx = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in spatial], indexing="ij")
    return torch.stack(idx[::-1])[None]


def _pure_rotation(aug: BatchAugment, angles) -> dict:
    params = aug.sample(1, torch.Generator().manual_seed(0))
    params["angles"] = torch.tensor([angles], dtype=torch.float64)
    params["apply"][:] = True
    return params


def test_rotation_is_rigid_on_non_square_images():
    """A rotation of a 16x64 image (8x16x32 volume) moves pixels as a rigid rotation in pixel units:
    one output step is one input step, steps along different axes stay at right angles, and the
    2D angle is the one drawn (in affine_grid's [-1, 1] units it sheared and stretched)."""
    import math

    aug = BatchAugment(spatial_dims=2, rotate_deg=30)
    out = aug.apply(_coordinate_image((16, 64)), _pure_rotation(aug, [math.radians(30)]))[0, :, 6:10, 28:36]
    dx = (out[:, :, 1:] - out[:, :, :-1]).flatten(1).mean(1)  # input position per output step along x
    dy = (out[:, 1:] - out[:, :-1]).flatten(1).mean(1)
    assert torch.allclose(dx.norm(), torch.tensor(1.0, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(dy.norm(), torch.tensor(1.0, dtype=torch.float64), atol=1e-5)
    assert abs(float(dx @ dy)) < 1e-5
    assert abs(abs(math.degrees(math.atan2(dx[1], dx[0]))) - 30) < 1e-3

    aug3 = BatchAugment(spatial_dims=3, rotate_deg=30)
    out = aug3.apply(_coordinate_image((8, 16, 32)), _pure_rotation(aug3, [0.3, -0.4, 0.5]))[0, :, 3:6, 7:10, 15:18]
    jac = torch.stack([out[:, 1, 1, 2] - out[:, 1, 1, 1],   # input position per output step along x (last axis)
                       out[:, 1, 2, 1] - out[:, 1, 1, 1],   # along y
                       out[:, 2, 1, 1] - out[:, 1, 1, 1]], 1)  # along z
    assert torch.allclose(jac.T @ jac, torch.eye(3, dtype=torch.float64), atol=1e-5)


def test_rotation_of_square_images_is_unchanged():
    """On square inputs the pixel-unit rotation is affine_grid's plain rotation, to the bit."""
    import torch.nn.functional as F

    from meddx.transforms.augment import _rot2, _rot3

    for d, shape in ((2, (5, 2, 24, 24)), (3, (3, 1, 12, 12, 12))):
        aug = BatchAugment(spatial_dims=d, rotate_deg=25, scale=0.2, translate=0.1)
        x = torch.randn(shape, generator=torch.Generator().manual_seed(d))
        params = aug.sample(shape[0], torch.Generator().manual_seed(1))
        params["apply"][:] = True
        a = params["angles"]
        rot = _rot2(a[:, 0]) if d == 2 else _rot3(a[:, 0], a[:, 1], a[:, 2])
        theta = torch.cat([rot / params["zoom"].view(-1, 1, 1), params["shift"].unsqueeze(-1)], -1)
        before = F.grid_sample(x, F.affine_grid(theta, list(shape), align_corners=False), mode="bilinear",
                               padding_mode="border", align_corners=False)
        assert torch.equal(aug.apply(x, params), before)


def test_augmentation_ranges_that_invert_images_are_refused_by_the_plan():
    """scale >= 1 drew zooms <= 0 (mirrored or blown-up images) and contrast > 1 negative contrast
    (inverted images); both trained silently."""
    import pytest

    from meddx.errors import PlanError
    from meddx.planning.planner import apply_overrides
    from meddx_testutils import make_plan_for

    for key, value in (("augment.scale", 1.5), ("augment.contrast", 1.5), ("augment.rotate_deg", -10),
                       ("augment.noise_std", -0.1)):
        with pytest.raises(PlanError, match=key.replace(".", "[.]")):
            apply_overrides(make_plan_for(), {key: value})
    assert apply_overrides(make_plan_for(), {"augment.scale": 0.2, "augment.contrast": 0.3}).augment.scale == 0.2
