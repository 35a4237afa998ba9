"""Self-supervised (blind-spot) CNN denoiser: learns from noisy images alone, 2D and 3D."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meddx.errors import ImageContentError, MeddxError, ParameterError
from meddx.transforms.learned_denoise import SelfSupervisedDenoiser


def phantoms(n: int, size: int, dims: int = 2, seed: int = 0) -> np.ndarray:
    """Smooth blobs (one channel, values about 0-1): random Gaussian bumps on a gradient."""
    rng = np.random.default_rng(seed)
    g = np.stack(np.meshgrid(*[np.linspace(0, 1, size)] * dims, indexing="ij"))
    out = np.empty((n, 1) + (size,) * dims, np.float32)
    for i in range(n):
        img = 0.2 + 0.2 * g[0]
        for _ in range(3):
            c = rng.uniform(0.2, 0.8, (dims,) + (1,) * dims)
            img = img + rng.uniform(0.3, 0.6) * np.exp(-((g - c) ** 2).sum(0) / (2 * rng.uniform(0.01, 0.03)))
        out[i, 0] = img
    return out


def psnr(a, b, data_range=1.0) -> float:
    return float(10 * np.log10(data_range**2 / np.mean((np.asarray(a, np.float64) - b) ** 2)))


def test_loss_falls_and_psnr_rises_on_noisy_phantoms():
    torch.set_num_threads(2)
    clean = phantoms(96, 32)
    noisy = clean + np.random.default_rng(1).normal(0, 0.15, clean.shape).astype(np.float32)
    # a fixed number of epochs (no wall-clock budget): the result must not depend on the machine's load
    dn = SelfSupervisedDenoiser(spatial_dims=2, channels=1, epochs=30, time_budget_s=None, batch_size=16, seed=0)
    dn.fit(torch.from_numpy(noisy))
    assert dn.epochs_run_ == 30
    # the masked loss cannot fall below the noise variance, so it falls, but not by much
    assert np.mean(dn.loss_history_[-3:]) < dn.loss_history_[0]
    out = dn.transform(torch.from_numpy(noisy)).numpy()
    assert out.shape == noisy.shape and out.dtype == np.float32
    assert psnr(out, clean) > psnr(noisy, clean) + 2.0  # it never saw a clean image


def test_3d_shapes_and_odd_sizes():
    vol = phantoms(6, 12, dims=3, seed=2)
    noisy = vol + np.random.default_rng(3).normal(0, 0.1, vol.shape).astype(np.float32)
    dn = SelfSupervisedDenoiser(spatial_dims=3, channels=1, epochs=2, time_budget_s=None, batch_size=4).fit(noisy)
    odd = noisy[:2, :, :11, :10, :9]  # not a multiple of 4: padded for the network, cropped back
    assert dn.transform(odd).shape == odd.shape
    assert len(dn.loss_history_) == 2 and all(np.isfinite(dn.loss_history_))


def test_3d_default_layout_denoises_volumes_and_reports_progress():
    """3D defaults to the UNet without a full-resolution level (measured faster and no worse:
    benchmarks/results/denoise_3d.md); it still learns to denoise volumes from noisy ones alone."""
    torch.set_num_threads(2)
    clean = phantoms(48, 20, dims=3, seed=5)
    noisy = clean + np.random.default_rng(6).normal(0, 0.15, clean.shape).astype(np.float32)
    dn = SelfSupervisedDenoiser(spatial_dims=3, channels=1, epochs=15, time_budget_s=None, batch_size=8, seed=0)
    assert dn.features == (16, 32, 64) and len(SelfSupervisedDenoiser(spatial_dims=2).features) == 4
    dn.fit(torch.from_numpy(noisy))
    done = []
    out = dn.transform(torch.from_numpy(noisy), batch_size=20, progress=done.append).numpy()
    assert done == [20, 20, 8]  # one call per batch, every image counted once
    assert psnr(out, clean) > psnr(noisy, clean) + 1.5


def test_seeded_and_save_load_roundtrip(tmp_path):
    x = phantoms(16, 16, seed=4) * 100 + 20  # raw units are restored on output
    a = SelfSupervisedDenoiser(epochs=2, time_budget_s=None, batch_size=8, seed=3).fit(x)
    b = SelfSupervisedDenoiser(epochs=2, time_budget_s=None, batch_size=8, seed=3).fit(x)
    ya, yb = a.transform(x), b.transform(x)
    torch.testing.assert_close(ya, yb)
    assert 0 < float(ya.mean()) and abs(float(ya.mean()) - float(x.mean())) < 20
    path = a.save(tmp_path / "dn.pt")
    c = SelfSupervisedDenoiser.load(path)
    torch.testing.assert_close(c.transform(x), ya)
    assert c.get_params() == a.get_params() and c.loss_history_ == a.loss_history_
    d = SelfSupervisedDenoiser().load_state_dict(a.state_dict())
    torch.testing.assert_close(d.transform(x), ya)


def test_errors(tmp_path):
    with pytest.raises(ParameterError, match="mask_fraction"):
        SelfSupervisedDenoiser(mask_fraction=0.0)
    with pytest.raises(ParameterError, match="spatial_dims"):
        SelfSupervisedDenoiser(spatial_dims=4)
    dn = SelfSupervisedDenoiser(channels=1)
    with pytest.raises(MeddxError, match="not fitted"):
        dn.transform(np.zeros((1, 1, 8, 8), np.float32))
    with pytest.raises(ImageContentError, match="expected a batch"):
        dn.fit(np.zeros((1, 8, 8), np.float32))
    with pytest.raises(ImageContentError, match="expected a batch"):
        dn.fit(np.zeros((2, 3, 8, 8), np.float32))  # 3 channels for a 1-channel denoiser
    bad = np.zeros((2, 1, 8, 8), np.float32)
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ImageContentError, match="NaN"):
        dn.fit(bad)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(MeddxError, match="junk.pt"):
        SelfSupervisedDenoiser.load(junk)


@pytest.mark.slow
def test_real_breastmnist_noise_removed(real_data):
    """Real ultrasound images with known added noise: denoised output is closer to the original."""
    torch.set_num_threads(2)
    d = np.load(real_data / "medmnist" / "breastmnist.npz")
    rng = np.random.default_rng(0)
    train = d["train_images"][:300].astype(np.float32)[:, None]
    test = d["test_images"][:40].astype(np.float32)[:, None]
    sigma = 25.0
    ntrain = train + rng.normal(0, sigma, train.shape).astype(np.float32)
    ntest = test + rng.normal(0, sigma, test.shape).astype(np.float32)
    dn = SelfSupervisedDenoiser(epochs=15, time_budget_s=None, seed=0).fit(ntrain)
    out = dn.transform(ntest).numpy()
    assert psnr(out, test, 255) > psnr(ntest, test, 255) + 1.5
    assert dn.loss_history_[-1] < dn.loss_history_[0]
