"""Conditional GAN (2D and 3D) and the quality check that gates its images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meddx.data.synthesis import PASS_RULE, ConditionalGAN, frechet_distance, pass_margins, quality_check
from meddx.errors import DatasetError, ImageContentError, MeddxError, ParameterError


def bars(n: int, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes: a bright horizontal (0) or vertical (1) bar at a random place, plus noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.1, (n, 1, size, size)).astype(np.float32)
    y = np.arange(n) % 2
    for i in range(n):
        p = rng.integers(2, size - 4)
        if y[i] == 0:
            x[i, 0, p:p + 3, 2:-2] += 1.0
        else:
            x[i, 0, 2:-2, p:p + 3] += 1.0
    return torch.from_numpy(x), torch.from_numpy(y)


def orientation(x: torch.Tensor) -> torch.Tensor:
    """Positive for horizontal structure (row profile varies more than column profile)."""
    return x.mean(dim=3).std(dim=2).squeeze(1) - x.mean(dim=2).std(dim=2).squeeze(1)


def test_frechet_distance_basics():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (500, 3))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    b = a + np.array([3.0, 0, 0])
    assert frechet_distance(a, b) == pytest.approx(9.0, rel=1e-3)  # pure mean shift: |d mu|^2


def test_gan_learns_class_conditional_structure():
    torch.set_num_threads(2)
    x, y = bars(256)
    gan = ConditionalGAN(spatial_dims=2, channels=1, size=16, n_classes=2, epochs=15, time_budget_s=None,
                         batch_size=32, seed=0).fit(x, y)
    assert gan.steps_ == 15 * 8
    s0, s1 = gan.sample(64, 0), gan.sample(64, 1)
    assert s0.shape == (64, 1, 16, 16)
    # in the input's intensity space, within its range
    assert float(s0.min()) >= float(x.min()) - 1e-4 and float(s0.max()) <= float(x.max()) + 1e-4
    # class 0 comes out horizontal and class 1 vertical on most samples
    # (all of them after 120 steps; before the EMA warm-up the samples came from mostly initial weights)
    assert (orientation(s0) > 0).float().mean() > 0.9
    assert (orientation(s1) < 0).float().mean() > 0.9


def test_gan_seeded_save_load_and_3d(tmp_path):
    x, y = bars(32)
    a = ConditionalGAN(2, 1, 16, 2, epochs=1, time_budget_s=None, batch_size=16, seed=5).fit(x, y)
    b = ConditionalGAN(2, 1, 16, 2, epochs=1, time_budget_s=None, batch_size=16, seed=5).fit(x, y)
    torch.testing.assert_close(a.sample(8, 1), b.sample(8, 1))
    assert not torch.equal(a.sample(8, 1), a.sample(8, 1, seed=123))
    c = ConditionalGAN.load(a.save(tmp_path / "gan.pt"))
    torch.testing.assert_close(c.sample(8, 1), a.sample(8, 1))
    assert c.get_params() == a.get_params()
    vol = torch.randn(8, 2, 8, 8, 8) * 3 + 10
    g3 = ConditionalGAN(3, 2, 8, 3, epochs=1, time_budget_s=None, batch_size=4).fit(vol, torch.arange(8) % 3)
    s = g3.sample(3, 2)
    assert s.shape == (3, 2, 8, 8, 8) and torch.isfinite(s).all()


def test_gan_errors():
    with pytest.raises(ParameterError, match="even and at least 8"):
        ConditionalGAN(size=27)
    with pytest.raises(ParameterError, match="n_classes"):
        ConditionalGAN(n_classes=1)
    gan = ConditionalGAN(2, 1, 16, 2)
    with pytest.raises(MeddxError, match="not fitted"):
        gan.sample(1, 0)
    x, y = bars(8)
    with pytest.raises(ImageContentError, match="must be 16x16"):
        gan.fit(x[:, :, :12, :12], y)
    with pytest.raises(ImageContentError, match="labels must lie"):
        gan.fit(x, y + 5)
    with pytest.raises(ImageContentError, match="8 labels|labels for"):
        gan.fit(x, y[:3])
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ImageContentError, match="NaN"):
        gan.fit(bad, y)
    g = ConditionalGAN(2, 1, 16, 2, epochs=1, time_budget_s=None, batch_size=4).fit(x, y)
    with pytest.raises(ParameterError, match="cls"):
        g.sample(2, 2)


@pytest.fixture(scope="module")
def bar_data():
    x, y = bars(240, seed=1)
    held, _ = bars(80, seed=2)
    return x, y, held


def test_quality_check_passes_real_held_out_images(bar_data):
    x, y, _ = bar_data
    fx, fy = bars(80, seed=2)
    r = quality_check(x, y, fx[fy == 0], fy[fy == 0], classifier_epochs=15, seed=0)
    c = r["classes"][0]
    assert r["passed"], r
    assert c["fd_ratio"] < PASS_RULE["fd_ratio_max"] and c["memorised_share"] <= 0.1
    assert c["fake_accuracy"] > 0.9 and r["classifier"]["heldout_accuracy"] > 0.9


def test_quality_check_catches_copies_wrong_class_and_noise(bar_data):
    x, y, _ = bar_data
    copies = x[y == 0][:60] + 0.001
    r = quality_check(x, y, copies, torch.zeros(60, dtype=torch.long), classifier_epochs=15)
    assert not r["passed"] and r["classes"][0]["memorised_share"] > 0.9
    assert any("memorised" in f for f in r["classes"][0]["failed"])
    fx, fy = bars(80, seed=3)
    wrong = fx[fy == 1]  # vertical bars presented as class 0
    r = quality_check(x, y, wrong, torch.zeros(len(wrong), dtype=torch.long), classifier_epochs=15)
    assert not r["passed"] and r["classes"][0]["fake_accuracy"] < 0.2
    noise = torch.randn(60, 1, 16, 16) * 0.4
    r = quality_check(x, y, noise, torch.zeros(60, dtype=torch.long), classifier_epochs=15)
    assert not r["passed"] and r["classes"][0]["fd_ratio"] > 3


def test_pass_margins_widen_for_few_images_only():
    # a few hundred fakes: the fixed margins decide
    acc, mem = pass_margins(0.75, 2000, 0.62, 2000)
    assert acc == PASS_RULE["class_accuracy_margin"] and mem == PASS_RULE["memorised_share_max"]
    # 21 fakes against 74 held-out real images: 1.96 standard errors of the difference (about 0.24)
    acc, mem = pass_margins(0.38, 21, 0.59, 74)
    se = np.sqrt(0.38 * 0.62 / 21 + 0.59 * 0.41 / 74)
    assert acc == pytest.approx(1.96 * se) and 0.2 < acc < 0.3
    assert mem == pytest.approx(0.05 + 1.96 * np.sqrt(0.05 * 0.95 / 21))
    # more fakes, narrower: the margin shrinks monotonically towards the fixed one
    assert pass_margins(0.38, 84, 0.59, 74)[0] < acc
    assert pass_margins(0.38, 21, 0.59, 74, z=0.0) == (PASS_RULE["class_accuracy_margin"],
                                                        PASS_RULE["memorised_share_max"])


def test_quality_check_errors(bar_data):
    x, y, _ = bar_data
    with pytest.raises(ImageContentError, match="fake images are"):
        quality_check(x, y, torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ImageContentError, match="no real images"):
        quality_check(x, y, x[:4], torch.full((4,), 7))
    with pytest.raises(DatasetError, match="only 4 real images"):
        quality_check(torch.cat([x[:40], x[:4]]), torch.cat([torch.zeros(40), torch.ones(4)]).long(),
                      x[:4], torch.ones(4, dtype=torch.long))


@pytest.mark.slow
def test_real_breastmnist_gan_and_check(real_data):
    """BreastMNIST training split: a short GAN run samples the malignant class; the check measures it."""
    torch.set_num_threads(2)
    d = np.load(real_data / "medmnist" / "breastmnist.npz")
    raw = torch.from_numpy(d["train_images"].astype(np.float32)[:, None] / 255.0)
    mean, std = raw.mean(), raw.std()
    x = (raw - mean) / std  # the plan's standardised space (training-split statistics)
    y = torch.from_numpy(d["train_labels"].reshape(-1).astype(np.int64))
    gan = ConditionalGAN(2, 1, 28, 2, epochs=4, time_budget_s=None, seed=0).fit(x, y)
    fake = gan.sample(100, 0)
    assert fake.shape == (100, 1, 28, 28) and torch.isfinite(fake).all()
    r = quality_check(x, y, fake, torch.zeros(100, dtype=torch.long), classifier_epochs=10,
                      classifier_time_budget_s=None)
    c = r["classes"][0]
    assert set(c) >= {"fd_ratio", "fake_accuracy", "real_accuracy", "memorised_share", "passed"}
    assert c["fd_ratio"] > 0 and 0 <= c["fake_accuracy"] <= 1 and c["memorised_share"] < 0.5
    # the check's own calibration on real data: held-out validation images of the class pass
    vx = (torch.from_numpy(d["val_images"].astype(np.float32)[:, None] / 255.0) - mean) / std
    vy = torch.from_numpy(d["val_labels"].reshape(-1).astype(np.int64))
    ok = quality_check(x, y, vx[vy == 0], vy[vy == 0], classifier_epochs=10, classifier_time_budget_s=None)
    c = ok["classes"][0]
    assert c["fd_ratio"] < PASS_RULE["fd_ratio_max"]
    # 21 images: sampling error, not the fixed 0.10, sets the limits. Whether the classifier's accuracy on
    # them clears the limit is not asserted: it moved from 0.38 to 0.67 between two CPUs (floating-point
    # order in its training), see benchmarks/results/synthesis.md.
    assert c["accuracy_margin"] > PASS_RULE["class_accuracy_margin"]
    assert c["memorised_share"] <= c["memorised_share_allowed"]
