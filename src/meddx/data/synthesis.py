"""Synthetic minority samples from a small class-conditional GAN, and the quality check they must pass.

``ConditionalGAN`` is a DCGAN-style pair for 2D (28-64 px) and 3D (28^3) images, trained on
the training split only:

* generator: latent vector + class embedding -> linear -> ``k`` blocks of (nearest x2
  up-sampling, 3x3 conv, batch norm, ReLU) -> 3x3 conv -> tanh. Up-sampling + conv instead
  of transposed convolutions avoids checkerboard artefacts (Odena et al. 2016);
* discriminator: strided convs with spectral normalisation (Miyato et al. 2018) and a
  projection head for the class (Miyato & Koyama 2018): ``D(x, y) = w . h(x) + e_y . h(x)``;
* hinge loss, Adam (lr 2e-4, betas 0.0/0.9), an exponential moving average of the
  generator's weights for sampling (Karras et al.), and differentiable augmentation of real
  and fake images before the discriminator (DiffAugment, Zhao et al. 2020: random
  translation, brightness and contrast), which is what makes GANs train on a few hundred images.

Images are mapped per channel from the training data's [min, max] to [-1, 1] for training
and back for sampling, so ``sample`` returns images in the intensity space ``fit`` was given
(the plan's standardised space).

``quality_check`` decides whether generated images may be used. The real training images
are split in two stratified halves: a small classifier (``small_cnn``) is trained on half A;
half B is held out. For every class that has fakes it measures

1. realism: the Fréchet distance between fakes and held-out real images of the class, in the
   classifier's penultimate features reduced by PCA (fitted on half A), divided by the
   Fréchet distance between two random halves of the held-out real images at the same sample
   size (averaged over repeats). 1 means "as close as real images are to each other";
2. class fidelity: the share of fakes the classifier assigns to their class, beside its
   accuracy on held-out real images of that class;
3. memorisation: the share of fakes whose nearest real training image (pixel L2) is closer
   than the 5th percentile of real images' leave-one-out nearest-neighbour distances in that
   class (about 5 % expected for new images; copies of training images score near 100 %).

Pass rule (in ``PASS_RULE``): for every class with fakes, FD ratio <= 2; fake accuracy >= held-out
real accuracy - max(0.10, 1.96 x the standard error of the difference of the two accuracies); memorised
share <= max(0.10, 0.05 + 1.96 x the binomial standard error of a 5 % share over the fakes). The
sampling-error terms were added after the check's calibration on BreastMNIST (21 held-out real
malignant images presented as fakes) failed the fixed 0.10 accuracy margin: 0.38 against 0.59, a
gap of about 1.8 standard errors at those counts. With a few hundred fakes (the GAN's case) the
fixed margins still decide; with a few dozen, a real image is no longer rejected for chance alone.
"""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from meddx.errors import ImageContentError, MeddxError, ParameterError
from meddx.io.state import StateFile

PASS_RULE = {"fd_ratio_max": 2.0, "class_accuracy_margin": 0.10, "memorisation_quantile": 0.05,
             "memorised_share_max": 0.10, "z": 1.96}
"""Thresholds of ``quality_check`` (documented in the module docstring)."""


def _conv(dims: int):
    return nn.Conv2d if dims == 2 else nn.Conv3d


def _bn(dims: int):
    return nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d


def _levels(size: int) -> int:
    """Number of x2 stages: as many as keep an integer start size of at least 4 (at most 4 stages)."""
    k = 0
    while k < 4 and size % (2 ** (k + 1)) == 0 and size // 2 ** (k + 1) >= 4:
        k += 1
    return k


class _Generator(nn.Module):
    def __init__(self, dims: int, channels: int, size: int, n_classes: int, latent_dim: int, width: int):
        super().__init__()
        self.dims, self.k = dims, _levels(size)
        self.s0 = size // 2 ** self.k
        self.c0 = width * 2 ** self.k
        self.embed = nn.Embedding(n_classes, latent_dim)
        self.fc = nn.Linear(2 * latent_dim, self.c0 * self.s0 ** dims)
        self.bn0 = _bn(dims)(self.c0)
        blocks, ch = [], self.c0
        for _ in range(self.k):
            blocks += [nn.Upsample(scale_factor=2, mode="nearest"), _conv(dims)(ch, ch // 2, 3, padding=1),
                       _bn(dims)(ch // 2), nn.ReLU(inplace=True)]
            ch //= 2
        self.blocks = nn.Sequential(*blocks)
        self.out = _conv(dims)(ch, channels, 3, padding=1)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, self.embed(y)], 1)).view((z.shape[0], self.c0) + (self.s0,) * self.dims)
        return torch.tanh(self.out(self.blocks(F.relu(self.bn0(h)))))


class _Discriminator(nn.Module):
    def __init__(self, dims: int, channels: int, size: int, n_classes: int, width: int):
        super().__init__()
        conv = _conv(dims)
        layers, ch = [spectral_norm(conv(channels, width, 3, padding=1)), nn.LeakyReLU(0.2, inplace=True)], width
        for _ in range(_levels(size)):
            layers += [spectral_norm(conv(ch, ch * 2, 4, stride=2, padding=1)), nn.LeakyReLU(0.2, inplace=True),
                       spectral_norm(conv(ch * 2, ch * 2, 3, padding=1)), nn.LeakyReLU(0.2, inplace=True)]
            ch *= 2
        self.features = nn.Sequential(*layers)
        self.linear = spectral_norm(nn.Linear(ch, 1))
        self.embed = spectral_norm(nn.Embedding(n_classes, ch))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.features(x).flatten(2).sum(2)  # global sum pooling (SNGAN)
        return self.linear(h).squeeze(1) + (self.embed(y) * h).sum(1)


def _diff_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """DiffAugment: random brightness, contrast and translation (1/8 of the size), differentiable."""
    n, dims = x.shape[0], x.ndim - 2
    shape = (n,) + (1,) * (x.ndim - 1)
    x = x + (torch.rand(shape, generator=gen) - 0.5)
    mean = x.mean(dim=tuple(range(1, x.ndim)), keepdim=True)
    x = (x - mean) * (torch.rand(shape, generator=gen) + 0.5) + mean
    size = x.shape[2:]
    pad = [max(1, s // 8) for s in size]
    padded = F.pad(x, [p for p in reversed(pad) for _ in (0, 1)])
    # per-sample crop of the zero-padded image by advanced indexing (one call for the batch)
    idx = []
    for a, (s, p) in enumerate(zip(size, pad)):
        pos = torch.arange(s)[None] + torch.randint(0, 2 * p + 1, (n, 1), generator=gen)  # (n, s)
        idx.append(pos.view((n,) + tuple(s if b == a else 1 for b in range(dims))))
    batch = torch.arange(n).view((n,) + (1,) * dims)
    return padded[(batch, slice(None), *idx)].movedim(-1, 1)


def _check_xy(x, y, what: str, spatial_dims: int, channels: int, size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    t = t.detach().to(torch.float32).cpu()
    if t.ndim != spatial_dims + 2 or t.shape[1] != channels:
        raise ImageContentError(f"{what}: expected images (N, {channels}, {', '.join(['size'] * spatial_dims)}), "
                                f"got shape {tuple(t.shape)}")
    if size is not None and tuple(t.shape[2:]) != (size,) * spatial_dims:
        raise ImageContentError(f"{what}: images must be {'x'.join([str(size)] * spatial_dims)}, got "
                                f"{'x'.join(map(str, t.shape[2:]))}", fix="resize them to the GAN's size first")
    if t.shape[0] == 0:
        raise ImageContentError(f"{what}: no images")
    if not torch.isfinite(t).all():
        raise ImageContentError(f"{what}: images contain NaN or Inf", fix="clean the images first")
    lab = torch.as_tensor(np.asarray(y)).reshape(-1)
    if lab.numel() != t.shape[0]:
        raise ImageContentError(f"{what}: {lab.numel()} labels for {t.shape[0]} images")
    if lab.dtype.is_floating_point:
        if not torch.equal(lab, lab.round()):
            raise ImageContentError(f"{what}: labels must be class indices (integers)")
    return t, lab.long()


class ConditionalGAN(StateFile):
    """Class-conditional DCGAN with spectral norm, projection discriminator, hinge loss and DiffAugment.

    Args:
        spatial_dims: 2 or 3.
        channels: image channels.
        size: image side (2D: 28-64 px; 3D: 28 voxels); even, at least 8.
        n_classes: number of classes (labels 0 .. n_classes - 1).
        latent_dim: length of the latent vector.
        width: channels of the finest generator / discriminator level, doubling per level
            (None: 16 in 2D, 8 in 3D).
        epochs: passes over the training images at most.
        time_budget_s: training stops after this many seconds (checked after each step).
        batch_size: images per step.
        lr: Adam learning rate of both networks.
        ema_decay: decay of the generator's weight average used by ``sample``.
        diff_augment: augment real and fake images before the discriminator.
        seed: seeds initial weights, batches, latents and augmentation.

    Attributes (after ``fit``): ``lo_``, ``hi_`` (per-channel intensity range), ``class_counts_``,
    ``history_`` (per-epoch mean D and G losses), ``steps_``, ``epochs_run_``, ``train_seconds_``.
    """

    STATE_NOUN = "GAN file"

    def __init__(self, spatial_dims: int = 2, channels: int = 1, size: int = 28, n_classes: int = 2,
                 latent_dim: int = 64, width: int | None = None, epochs: int = 300, time_budget_s: float | None = 120.0,
                 batch_size: int = 32, lr: float = 2e-4, ema_decay: float = 0.999, diff_augment: bool = True,
                 seed: int = 0):
        if spatial_dims not in (2, 3):
            raise ParameterError(f"ConditionalGAN: spatial_dims must be 2 or 3, got {spatial_dims!r}")
        for name, v, lo in (("channels", channels, 1), ("size", size, 8), ("n_classes", n_classes, 2),
                            ("latent_dim", latent_dim, 1), ("epochs", epochs, 1), ("batch_size", batch_size, 2)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ParameterError(f"ConditionalGAN: {name} must be an int >= {lo}, got {v!r}")
        if _levels(size) == 0:
            raise ParameterError(f"ConditionalGAN: size must be even and at least 8 (e.g. 28, 32, 64), got {size!r}")
        if time_budget_s is not None and not float(time_budget_s) > 0:
            raise ParameterError(f"ConditionalGAN: time_budget_s must be > 0, got {time_budget_s!r}")
        if not 0 <= float(ema_decay) < 1:
            raise ParameterError(f"ConditionalGAN: ema_decay must be in [0, 1), got {ema_decay!r}")
        self.spatial_dims, self.channels, self.size, self.n_classes = spatial_dims, channels, size, n_classes
        self.latent_dim = latent_dim
        # CPU budgets buy more steps of a narrow pair than of a wide one: 16 (2D) trains at about
        # 0.33 s CPU per batch-32 step on 28 px, width 32 at 0.9 s (one core of the 2-core dev machine)
        self.width = int(width) if width is not None else (16 if spatial_dims == 2 else 8)
        self.epochs, self.batch_size = epochs, batch_size
        self.time_budget_s = None if time_budget_s is None else float(time_budget_s)
        self.lr, self.ema_decay, self.diff_augment, self.seed = float(lr), float(ema_decay), bool(diff_augment), int(seed)
        self.g_ema_: nn.Module | None = None

    def get_params(self) -> dict:
        return {"spatial_dims": self.spatial_dims, "channels": self.channels, "size": self.size,
                "n_classes": self.n_classes, "latent_dim": self.latent_dim, "width": self.width,
                "epochs": self.epochs, "time_budget_s": self.time_budget_s, "batch_size": self.batch_size,
                "lr": self.lr, "ema_decay": self.ema_decay, "diff_augment": self.diff_augment, "seed": self.seed}

    def _build(self) -> tuple[nn.Module, nn.Module]:
        g = _Generator(self.spatial_dims, self.channels, self.size, self.n_classes, self.latent_dim, self.width)
        d = _Discriminator(self.spatial_dims, self.channels, self.size, self.n_classes, self.width)
        return g, d

    def fit(self, x, y, progress: bool = False) -> ConditionalGAN:
        """Train on the training split's images ``x`` ``(N, C, *spatial)`` and labels ``y`` ``(N,)``; returns self."""
        t, lab = _check_xy(x, y, "ConditionalGAN.fit", self.spatial_dims, self.channels, self.size)
        if lab.min() < 0 or lab.max() >= self.n_classes:
            raise ImageContentError(f"ConditionalGAN.fit: labels must lie in 0..{self.n_classes - 1}, got "
                                    f"{int(lab.min())}..{int(lab.max())}")
        if t.shape[0] < 2:
            raise ImageContentError("ConditionalGAN.fit: needs at least 2 images")
        red = (0,) + tuple(range(2, t.ndim))
        self.lo_ = t.amin(dim=red).tolist()
        self.hi_ = t.amax(dim=red).tolist()
        self.class_counts_ = torch.bincount(lab, minlength=self.n_classes).tolist()
        xs = self._to_unit(t)
        gen = torch.Generator().manual_seed(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            g, d = self._build()
        g_ema = copy.deepcopy(g).eval()
        for p in g_ema.parameters():
            p.requires_grad_(False)
        opt_g = torch.optim.Adam(g.parameters(), lr=self.lr, betas=(0.0, 0.9))
        opt_d = torch.optim.Adam(d.parameters(), lr=self.lr, betas=(0.0, 0.9))
        prior = torch.tensor(self.class_counts_, dtype=torch.float32)
        n = xs.shape[0]
        bs = min(self.batch_size, n)
        steps_per_epoch = max(1, n // bs)
        aug = (lambda v: _diff_augment(v, gen)) if self.diff_augment else (lambda v: v)
        self.history_: list[dict] = []
        self.steps_ = 0
        t0 = time.perf_counter()
        bar = None
        if progress:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            bar = Progress(TextColumn("GAN"), BarColumn(), TextColumn("{task.fields[info]}"), TimeRemainingColumn())
            task = bar.add_task("fit", total=self.epochs, info="")
            bar.start()
        out_of_time = False
        try:
            for epoch in range(self.epochs):
                order = torch.randperm(n, generator=gen)
                ld, lg = [], []
                for s in range(steps_per_epoch):
                    idx = order[s * bs:(s + 1) * bs]
                    real, yr = xs[idx], lab[idx]
                    z = torch.randn(bs, self.latent_dim, generator=gen)
                    yf = torch.multinomial(prior, bs, replacement=True, generator=gen)
                    fake = g(z, yf)
                    # discriminator: hinge loss on augmented real and (detached) fake images
                    loss_d = F.relu(1 - d(aug(real), yr)).mean() + F.relu(1 + d(aug(fake.detach()), yf)).mean()
                    opt_d.zero_grad(set_to_none=True)
                    loss_d.backward()
                    opt_d.step()
                    loss_g = -d(aug(fake), yf).mean()
                    opt_g.zero_grad(set_to_none=True)
                    loss_g.backward()
                    opt_g.step()
                    with torch.no_grad():
                        # warm-up of the average (as TensorFlow's num_updates): with a fixed 0.999 a
                        # run of a few hundred steps would sample from mostly initial weights
                        decay = min(self.ema_decay, (1 + self.steps_) / (10 + self.steps_))
                        for pe, pg in zip(g_ema.parameters(), g.parameters()):
                            pe.lerp_(pg, 1 - decay)
                        for be, bg in zip(g_ema.buffers(), g.buffers()):
                            be.copy_(bg)  # batch-norm statistics are copied, not averaged
                    ld.append(float(loss_d.detach()))
                    lg.append(float(loss_g.detach()))
                    self.steps_ += 1
                    if self.time_budget_s is not None and time.perf_counter() - t0 > self.time_budget_s:
                        out_of_time = True
                        break
                self.history_.append({"epoch": epoch + 1, "loss_d": float(np.mean(ld)), "loss_g": float(np.mean(lg))})
                if bar is not None:
                    bar.update(task, advance=1, info=f"D {self.history_[-1]['loss_d']:.3f} G {self.history_[-1]['loss_g']:.3f}")
                if out_of_time:
                    break
        finally:
            if bar is not None:
                bar.stop()
        self.g_ema_ = g_ema.eval()
        self.epochs_run_ = len(self.history_)
        self.train_seconds_ = time.perf_counter() - t0
        return self

    def sample(self, n: int, cls: int, seed: int | None = None, batch_size: int = 256) -> torch.Tensor:
        """``n`` generated images of class ``cls`` ``(n, C, *spatial)``, in the intensity space ``fit`` saw.

        Args:
            seed: seeds the latent vectors (None: this GAN's seed + class, so repeated calls agree).
        """
        if self.g_ema_ is None:
            raise MeddxError("ConditionalGAN is not fitted", fix="call fit(x, y) or load_state_dict() first")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ParameterError(f"ConditionalGAN.sample: n must be a positive int, got {n!r}")
        if isinstance(cls, bool) or not isinstance(cls, (int, np.integer)) or not 0 <= cls < self.n_classes:
            raise ParameterError(f"ConditionalGAN.sample: cls must be a class index in 0..{self.n_classes - 1}, "
                                 f"got {cls!r}")
        gen = torch.Generator().manual_seed(self.seed * 1000 + int(cls) if seed is None else int(seed))
        out = []
        with torch.no_grad():
            for i in range(0, n, batch_size):
                m = min(batch_size, n - i)
                z = torch.randn(m, self.latent_dim, generator=gen)
                out.append(self._from_unit(self.g_ema_(z, torch.full((m,), int(cls), dtype=torch.long))))
        return torch.cat(out)

    # --- intensity mapping ---------------------------------------------------------------------
    def _scale(self) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, self.channels) + (1,) * self.spatial_dims
        lo = torch.tensor(self.lo_, dtype=torch.float32).view(shape)
        hi = torch.tensor(self.hi_, dtype=torch.float32).view(shape)
        return lo, torch.where(hi > lo, hi - lo, torch.ones_like(hi))

    def _to_unit(self, x: torch.Tensor) -> torch.Tensor:
        lo, rng = self._scale()
        return (x - lo) / rng * 2 - 1

    def _from_unit(self, x: torch.Tensor) -> torch.Tensor:
        lo, rng = self._scale()
        return (x + 1) / 2 * rng + lo

    # --- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Parameters, intensity range, training record and the averaged generator (weights_only-loadable)."""
        if self.g_ema_ is None:
            raise MeddxError("ConditionalGAN is not fitted: nothing to save", fix="call fit(x, y) first")
        return {"kind": "ConditionalGAN", "params": self.get_params(), "lo": list(self.lo_), "hi": list(self.hi_),
                "class_counts": list(self.class_counts_), "history": list(self.history_), "steps": self.steps_,
                "epochs_run": self.epochs_run_, "train_seconds": self.train_seconds_,
                "generator": self.g_ema_.state_dict()}

    def load_state_dict(self, state: dict) -> ConditionalGAN:
        """Restore a fitted GAN (its generator) from ``state_dict()`` output."""
        if not isinstance(state, dict) or state.get("kind") != "ConditionalGAN":
            raise MeddxError("not a ConditionalGAN state", fix="pass what state_dict() or save() wrote")
        self.__init__(**state["params"])
        self.lo_, self.hi_ = list(state["lo"]), list(state["hi"])
        self.class_counts_, self.history_ = list(state["class_counts"]), list(state["history"])
        self.steps_, self.epochs_run_ = int(state["steps"]), int(state["epochs_run"])
        self.train_seconds_ = float(state["train_seconds"])
        g, _ = self._build()
        g.load_state_dict(state["generator"])
        self.g_ema_ = g.eval()
        return self


# --- quality check -----------------------------------------------------------------------------

def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature rows ``a`` and ``b`` (FID's formula)."""
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():  # near-singular product: regularise as FID implementations do
        off = np.eye(s1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((s1 + off) @ (s2 + off))
    covmean = np.real(covmean)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


_JUDGES: dict[tuple, nn.Module] = {}  # feature classifiers already trained in this process (a few at most)


def _train_classifier(x: torch.Tensor, y: torch.Tensor, n_classes: int, seed: int, epochs: int,
                      time_budget_s: float | None) -> nn.Module:
    """The check's feature classifier on real half A. It depends on the real images only, so checks
    of several fake sets against the same training split (one per class, or per GAN run) reuse it."""
    import hashlib

    key = (hashlib.sha1(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest(), tuple(x.shape), n_classes, seed,
           epochs, time_budget_s)
    if key not in _JUDGES:
        if len(_JUDGES) >= 4:
            _JUDGES.pop(next(iter(_JUDGES)))
        _JUDGES[key] = _fit_classifier(x, y, n_classes, seed, epochs, time_budget_s)
    return _JUDGES[key]


def _fit_classifier(x: torch.Tensor, y: torch.Tensor, n_classes: int, seed: int, epochs: int,
                    time_budget_s: float | None) -> nn.Module:
    from meddx.models import create_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model("small_cnn", spatial_dims=x.ndim - 2, in_channels=x.shape[1], num_classes=n_classes,
                             input_size=tuple(x.shape[2:]))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(seed)
    bs = min(32 if x.shape[0] < 1000 else 64, x.shape[0])  # small sets still get several steps per epoch
    t0 = time.perf_counter()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        for s in range(0, x.shape[0] - bs + 1, bs):
            idx = order[s:s + bs]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if time_budget_s is not None and time.perf_counter() - t0 > time_budget_s:
            break
    return model.eval()


def _features_and_preds(model: nn.Module, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    feats = []
    hook = getattr(model, model.classifier_layer).register_forward_hook(lambda m, i, o: feats.append(i[0].detach()))
    preds = []
    try:
        with torch.no_grad():
            for i in range(0, x.shape[0], 256):
                preds.append(model(x[i:i + 256]).argmax(1))
    finally:
        hook.remove()
    return torch.cat(feats).numpy().astype(np.float64), torch.cat(preds).numpy()


def _nn_dist(a: torch.Tensor, b: torch.Tensor, exclude_self: bool = False) -> np.ndarray:
    a2, b2 = a.flatten(1), b.flatten(1)
    out = []
    for i in range(0, a2.shape[0], 512):
        d = torch.cdist(a2[i:i + 512], b2)
        if exclude_self:
            d[torch.arange(d.shape[0]), torch.arange(i, i + d.shape[0])] = float("inf")
        out.append(d.min(1).values)
    return torch.cat(out).numpy()


def pass_margins(fake_acc: float, n_fake: int, real_acc: float, n_real: int, *,
                 class_accuracy_margin: float = PASS_RULE["class_accuracy_margin"],
                 memorisation_quantile: float = PASS_RULE["memorisation_quantile"],
                 memorised_share_max: float = PASS_RULE["memorised_share_max"],
                 z: float = PASS_RULE["z"]) -> tuple[float, float]:
    """The allowed accuracy drop and the allowed memorised share of the pass rule for these counts.

    The accuracy drop is the larger of ``class_accuracy_margin`` and ``z`` standard errors of the
    difference between two independent proportions (fakes vs held-out real images); the memorised
    share the larger of ``memorised_share_max`` and ``z`` binomial standard errors above the
    ``memorisation_quantile`` expected of new images."""
    se_acc = math.sqrt(fake_acc * (1 - fake_acc) / max(1, n_fake) + real_acc * (1 - real_acc) / max(1, n_real))
    q = memorisation_quantile
    return (max(class_accuracy_margin, z * se_acc),
            max(memorised_share_max, q + z * math.sqrt(q * (1 - q) / max(1, n_fake))))


def quality_check(real_x, real_y, fake_x, fake_y, *, seed: int = 0, classifier_epochs: int = 15,
                  classifier_time_budget_s: float | None = 60.0, pca_dims: int = 16, repeats: int = 10,
                  fd_ratio_max: float = PASS_RULE["fd_ratio_max"],
                  class_accuracy_margin: float = PASS_RULE["class_accuracy_margin"],
                  memorisation_quantile: float = PASS_RULE["memorisation_quantile"],
                  memorised_share_max: float = PASS_RULE["memorised_share_max"], z: float = PASS_RULE["z"]) -> dict:
    """Measure generated images against the real training images before they are used.

    Args:
        real_x, real_y: the training split the GAN was fitted on, ``(N, C, *spatial)`` and ``(N,)``.
        fake_x, fake_y: generated images and the class each was generated for.
        seed: seeds the A/B split, the classifier and the repeats.
        classifier_epochs, classifier_time_budget_s: training of the feature classifier on half A.
        pca_dims: feature dimensions kept for the Fréchet distance (fewer when a class is small).
        repeats: random half-splits averaged for each Fréchet distance.
        fd_ratio_max, class_accuracy_margin, memorisation_quantile, memorised_share_max, z: the pass
            rule (``pass_margins``).

    Returns:
        ``passed`` (bool), ``rule`` (the thresholds), ``classifier`` (held-out accuracy overall) and
        ``classes``: per class with fakes, ``n_fake``, ``fd_fake``, ``fd_real``, ``fd_ratio``,
        ``fake_accuracy``, ``real_accuracy`` (and ``n_real_heldout``), ``accuracy_margin`` and
        ``memorised_share_allowed`` (the rule at these counts), ``nn_fake_median``,
        ``nn_real_median``, ``memorised_share``, ``passed`` and ``failed`` (the checks that failed).

    Raises:
        ImageContentError: shapes that differ between real and fake, NaN, labels that do not match.
        DatasetError: too few real images of a class to measure (fewer than 8).
    """
    from sklearn.decomposition import PCA
    from sklearn.model_selection import train_test_split

    from meddx.errors import DatasetError

    rx = real_x if isinstance(real_x, torch.Tensor) else torch.as_tensor(np.asarray(real_x))
    if rx.ndim not in (4, 5):
        raise ImageContentError(f"quality_check: real images must be (N, C, *spatial) 2D or 3D, got {tuple(rx.shape)}")
    dims, ch = rx.ndim - 2, rx.shape[1]
    rx, ry = _check_xy(rx, real_y, "quality_check (real)", dims, ch, None)
    fx, fy = _check_xy(fake_x, fake_y, "quality_check (fake)", dims, ch, None)
    if fx.shape[2:] != rx.shape[2:]:
        raise ImageContentError(f"quality_check: fake images are {tuple(fx.shape[2:])}, real ones "
                                f"{tuple(rx.shape[2:])}", fix="generate at the real images' size")
    n_classes = int(ry.max()) + 1
    unknown = sorted(set(fy.tolist()) - set(ry.tolist()))
    if unknown:
        raise ImageContentError(f"quality_check: fake labels {unknown} have no real images")
    counts = torch.bincount(ry, minlength=n_classes)
    if int(counts[counts > 0].min()) < 2:
        raise DatasetError("quality_check: every class needs at least 2 real images (the check splits them in two)")
    for c in sorted(set(fy.tolist())):
        if counts[c] < 8:
            raise DatasetError(f"quality_check: class {c} has only {int(counts[c])} real images; at least 8 are "
                               "needed to measure its fakes")
    rng = np.random.default_rng(seed)
    idx_a, idx_b = train_test_split(np.arange(len(ry)), test_size=0.5, random_state=seed, stratify=ry.numpy())
    model = _train_classifier(rx[idx_a], ry[idx_a], n_classes, seed, classifier_epochs, classifier_time_budget_s)
    fa, _ = _features_and_preds(model, rx[idx_a])
    fb, pb = _features_and_preds(model, rx[idx_b])
    ff, pf = _features_and_preds(model, fx)
    yb = ry[idx_b].numpy()
    k = int(min(pca_dims, fa.shape[1], fa.shape[0] - 1))
    pca = PCA(n_components=k, random_state=seed).fit(fa)
    fb, ff = pca.transform(fb), pca.transform(ff)
    result = {"rule": {"fd_ratio_max": fd_ratio_max, "class_accuracy_margin": class_accuracy_margin,
                       "memorisation_quantile": memorisation_quantile, "memorised_share_max": memorised_share_max,
                       "z": z},
              "classifier": {"heldout_accuracy": float((pb == yb).mean()), "n_train": len(idx_a),
                             "n_heldout": len(idx_b)},
              "classes": {}}
    fyn = fy.numpy()
    for c in sorted(set(fyn.tolist())):
        bc, fc = fb[yb == c], ff[fyn == c]
        h = len(bc) // 2
        kc = int(min(k, max(1, h - 2)))  # a covariance needs more samples than dimensions
        fd_real, fd_fake = [], []
        for _ in range(repeats):
            perm = rng.permutation(len(bc))
            b1, b2 = bc[perm[:h], :kc], bc[perm[h:2 * h], :kc]
            fsub = fc[rng.choice(len(fc), size=h, replace=len(fc) < h), :kc]
            fd_real.append(frechet_distance(b1, b2))
            fd_fake.append(frechet_distance(fsub, b2))
        fd_r, fd_f = float(np.mean(fd_real)), float(np.mean(fd_fake))
        ratio = fd_f / fd_r if fd_r > 0 else math.inf
        n_real_b = int((yb == c).sum())
        real_acc = float((pb[yb == c] == c).mean())
        fake_acc = float((pf[fyn == c] == c).mean())
        rc = rx[ry == c]
        nn_real = _nn_dist(rc, rc, exclude_self=True)
        nn_fake = _nn_dist(fx[fy == c], rc)
        tau = float(np.quantile(nn_real, memorisation_quantile))
        memorised = float((nn_fake < tau).mean())
        acc_margin, mem_allowed = pass_margins(fake_acc, len(fc), real_acc, n_real_b,
                                               class_accuracy_margin=class_accuracy_margin,
                                               memorisation_quantile=memorisation_quantile,
                                               memorised_share_max=memorised_share_max, z=z)
        failed = []
        if not ratio <= fd_ratio_max:
            failed.append(f"FD ratio {ratio:.2f} > {fd_ratio_max:g}")
        if not fake_acc >= real_acc - acc_margin:
            failed.append(f"fake accuracy {fake_acc:.2f} < held-out real {real_acc:.2f} - {acc_margin:.2f}")
        if not memorised <= mem_allowed:
            failed.append(f"memorised share {memorised:.2f} > {mem_allowed:.2f}")
        result["classes"][int(c)] = {
            "n_fake": int(len(fc)), "n_real": int(counts[c]), "pca_dims": kc, "fd_fake": fd_f, "fd_real": fd_r,
            "fd_ratio": ratio, "fake_accuracy": fake_acc, "real_accuracy": real_acc, "n_real_heldout": n_real_b,
            "accuracy_margin": acc_margin, "memorised_share_allowed": mem_allowed,
            "nn_fake_median": float(np.median(nn_fake)), "nn_real_median": float(np.median(nn_real)),
            "memorisation_threshold": tau, "memorised_share": memorised, "passed": not failed, "failed": failed}
    result["passed"] = all(v["passed"] for v in result["classes"].values())
    return result
