"""A learned CNN denoiser trained self-supervised on the dataset's own noisy images.

Blind-spot training (Noise2Void, Krull et al. 2019; Noise2Self, Batson & Royer 2019): in
every training patch a random ``mask_fraction`` of the pixels is replaced by the mean of
their immediate neighbours (the "donut" interpolation of Noise2Self), the network sees the
altered patch, and the loss is the squared error against the original values at the
replaced pixels only. The network never sees a pixel's own value when predicting it, so
for noise that is independent between pixels it cannot learn the identity; the best it
can do is predict the pixel's clean value from its surroundings. No clean images are needed.

The network is a small MONAI ``UNet`` (residual units) that predicts a correction added to its
input: in 2D a full-resolution first level, then two down-samplings; in 3D two down-samplings
from the start, which, trained for the same time, denoised noisy MRI volumes a little better
(24.5 against 24.2 dB) and denoises a volume 11x faster (each voxel costs 27 passes in 3D, see
below; ``benchmarks/results/denoise_3d.md``). Images are
standardised with the training set's mean and standard deviation and trained on random
patches with random flips. At inference every pixel is predicted the way it was trained: with
its own value hidden. The pixels are split into the phases of a regular grid (stride 4 in 2D,
3 in 3D, so that about ``mask_fraction`` of them are hidden per pass); each pass replaces one
phase by its neighbours' mean and keeps the prediction at that phase only ("J-invariant"
inference, Noise2Self). Feeding the unmasked image instead lets the residual connection carry
each pixel's own noise straight through: the network only ever learned corrections for pixels
whose value equals their neighbours' mean, and the denoised PSNR stays at the noisy input's.

Written here because MONAI has the networks but no blind-spot training; the masking and
the loss are the only parts of our own.
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import torch
import torch.nn.functional as F

from meddx.errors import ImageContentError, MeddxError, ParameterError
from meddx.io.state import StateFile

_MULTIPLE = 4  # two stride-2 levels
# UNet channels per level by spatial dims (``features=None``); measured in benchmarks/results/denoise*.md
DEFAULT_FEATURES = {2: (16, 32, 64, 64), 3: (16, 32, 64)}


def _as_tensor(x, what: str, spatial_dims: int, channels: int) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.ndim != spatial_dims + 2 or t.shape[1] != channels:
        raise ImageContentError(
            f"{what}: expected a batch (N, {channels}, {', '.join(['size'] * spatial_dims)}), got shape "
            f"{tuple(t.shape)}", fix=f"pass N images with {channels} channel(s) and {spatial_dims} spatial axes")
    if min(t.shape) == 0:
        raise ImageContentError(f"{what}: the batch is empty (shape {tuple(t.shape)})")
    t = t.detach().to(torch.float32).cpu()
    bad = int((~torch.isfinite(t)).sum())
    if bad:
        raise ImageContentError(f"{what}: {bad} value(s) are NaN or infinite", fix="clean the images first")
    return t


def _donut_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of each pixel's 8 (2D) or 26 (3D) neighbours, edges replicated."""
    nd = x.ndim - 2
    c = int(x.shape[1])  # a constant, so that the ONNX exporter sees a kernel of known shape
    k = torch.full((c, 1) + (3,) * nd, 1.0 / (3**nd - 1), dtype=x.dtype)
    k[(slice(None), 0) + (1,) * nd] = 0.0
    xp = F.pad(x, (1, 1) * nd, mode="replicate")
    conv = F.conv2d if nd == 2 else F.conv3d
    return conv(xp, k, groups=c)


def grid_stride(mask_fraction: float, spatial_dims: int) -> int:
    """Grid stride of J-invariant inference: about ``mask_fraction`` of the pixels hidden per pass."""
    return max(2, int(round((1.0 / float(mask_fraction)) ** (1.0 / spatial_dims))))


def blind_spot_predict(net: torch.nn.Module, z: torch.Tensor, stride: int) -> torch.Tensor:
    """J-invariant prediction ``z + net(.)`` for a standardised, padded batch ``z``: each grid
    phase is hidden (replaced by its neighbours' mean) in turn, and only its own pixels are kept."""
    donut = _donut_mean(z)
    y = torch.empty_like(z)
    for phase in itertools.product(range(int(stride)), repeat=z.ndim - 2):
        sel = (slice(None), slice(None)) + tuple(slice(o, None, int(stride)) for o in phase)
        inp = z.clone()
        inp[sel] = donut[sel]
        y[sel] = (inp + net(inp))[sel]
    return y


class SelfSupervisedDenoiser(StateFile):
    """Noise2Void / Noise2Self-style denoiser (scikit-learn style: ``fit`` then ``transform``).

    Args:
        spatial_dims: 2 or 3.
        channels: image channels (each predicted from all of them).
        mask_fraction: share of pixels replaced (and scored) per training patch.
        epochs: passes over the training images at most.
        time_budget_s: training stops after this many seconds (checked after each step).
        batch_size: patches per step.
        patch_size: training patch side in pixels (None: 64 in 2D, 32 in 3D, at most the image),
            rounded down to a multiple of 4.
        features: UNet channels at full resolution, 1/2, 1/4 and the bottom (also 1/4); three
            values leave out the full-resolution level (1/2, 1/4, bottom), the layout of the
            first version (whose saved denoisers still load). None: ``DEFAULT_FEATURES`` for
            ``spatial_dims``, four levels in 2D, three in 3D.
        lr: Adam learning rate.
        seed: seeds the initial weights, batches, patches, flips and masks.

    Attributes (after ``fit``):
        mean_, std_: standardisation of the training images.
        loss_history_: mean masked loss of each epoch (standardised units).
        epochs_run_, train_seconds_: what training did.
    """

    STATE_NOUN = "denoiser file"

    def __init__(self, spatial_dims: int = 2, channels: int = 1, mask_fraction: float = 0.05, epochs: int = 100,
                 time_budget_s: float | None = 60.0, batch_size: int = 32, patch_size: int | None = None,
                 features: tuple[int, ...] | None = None, lr: float = 2e-3, seed: int = 0):
        if spatial_dims not in (2, 3):
            raise ParameterError(f"SelfSupervisedDenoiser: spatial_dims must be 2 or 3, got {spatial_dims!r}")
        if not isinstance(channels, int) or channels < 1:
            raise ParameterError(f"SelfSupervisedDenoiser: channels must be a positive int, got {channels!r}")
        if not 0 < float(mask_fraction) <= 0.5:
            raise ParameterError(f"SelfSupervisedDenoiser: mask_fraction must be in (0, 0.5], got {mask_fraction!r}")
        if not isinstance(epochs, int) or epochs < 1:
            raise ParameterError(f"SelfSupervisedDenoiser: epochs must be a positive int, got {epochs!r}")
        if time_budget_s is not None and not float(time_budget_s) > 0:
            raise ParameterError(f"SelfSupervisedDenoiser: time_budget_s must be > 0, got {time_budget_s!r}")
        if patch_size is not None and (not isinstance(patch_size, int) or patch_size < _MULTIPLE):
            raise ParameterError(f"SelfSupervisedDenoiser: patch_size must be an int >= 4, got {patch_size!r}")
        if features is None:
            features = DEFAULT_FEATURES[spatial_dims]
        if len(features) not in (3, 4) or not all(isinstance(f, int) and f > 0 for f in features):
            raise ParameterError(f"SelfSupervisedDenoiser: features must be 3 or 4 positive ints, got {features!r}")
        self.spatial_dims = spatial_dims
        self.channels = channels
        self.mask_fraction = float(mask_fraction)
        self.epochs = epochs
        self.time_budget_s = None if time_budget_s is None else float(time_budget_s)
        self.batch_size = int(batch_size)
        self.patch_size = patch_size
        self.features = tuple(features)
        self.lr = float(lr)
        self.seed = int(seed)
        self.net_: torch.nn.Module | None = None

    # --- model --------------------------------------------------------------------------------
    def _build(self) -> torch.nn.Module:
        from monai.networks.nets import UNet

        return UNet(spatial_dims=self.spatial_dims, in_channels=self.channels, out_channels=self.channels,
                    channels=self.features, strides=(1, 2, 2) if len(self.features) == 4 else (2, 2),
                    num_res_units=1, norm="batch")

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net_(x)  # residual: the network predicts the correction

    def _patch(self, spatial: tuple[int, ...]) -> int:
        default = 64 if self.spatial_dims == 2 else 32
        p = min(self.patch_size or default, min(spatial))
        return max(_MULTIPLE, p - p % _MULTIPLE)

    # --- sklearn-style API ----------------------------------------------------------------
    def fit(self, x, progress: bool = False) -> SelfSupervisedDenoiser:
        """Train on the noisy images ``x`` ``(N, C, *spatial)`` (no clean targets); returns self."""
        t = _as_tensor(x, "SelfSupervisedDenoiser.fit", self.spatial_dims, self.channels)
        self.mean_ = float(t.mean())
        self.std_ = float(t.std()) if float(t.std()) > 0 else 1.0
        z = (t - self.mean_) / self.std_
        n, spatial = z.shape[0], tuple(z.shape[2:])
        p = self._patch(spatial)
        if min(spatial) < p:  # images smaller than one patch: pad them up (edges replicated)
            z = self._pad_to(z, (p,) * self.spatial_dims)
            spatial = tuple(z.shape[2:])
        gen = torch.Generator().manual_seed(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.net_ = self._build()
        opt = torch.optim.Adam(self.net_.parameters(), lr=self.lr)
        steps_per_epoch = max(1, int(np.ceil(n / self.batch_size)))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.epochs * steps_per_epoch)
        self.loss_history_: list[float] = []
        t0 = time.perf_counter()
        bar = None
        if progress:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            bar = Progress(TextColumn("denoiser"), BarColumn(), TextColumn("{task.fields[loss]}"), TimeRemainingColumn())
            task = bar.add_task("fit", total=self.epochs, loss="")
            bar.start()
        self.net_.train()
        out_of_time = False
        try:
            for _ in range(self.epochs):
                order = torch.randperm(n, generator=gen)
                losses = []
                for s in range(steps_per_epoch):
                    idx = order[s * self.batch_size:(s + 1) * self.batch_size]
                    if idx.numel() < 2:  # BatchNorm needs two samples; the rest joins the next epoch
                        idx = torch.cat([idx, order[:1]])
                    batch = self._crop_flip(z[idx], p, gen)
                    mask = torch.rand((batch.shape[0], 1) + batch.shape[2:], generator=gen) < self.mask_fraction
                    if not mask.any():  # tiny patches: keep at least one scored pixel (else the loss is NaN)
                        mask.view(-1)[int(torch.randint(0, mask.numel(), (1,), generator=gen))] = True
                    mask = mask.expand_as(batch)  # all channels of a pixel are hidden together
                    inp = torch.where(mask, _donut_mean(batch), batch)
                    pred = self._forward(inp)
                    loss = ((pred - batch) ** 2)[mask].mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    losses.append(float(loss.detach()))
                    if self.time_budget_s is not None and time.perf_counter() - t0 > self.time_budget_s:
                        out_of_time = True
                        break
                self.loss_history_.append(float(np.mean(losses)))
                if bar is not None:
                    bar.update(task, advance=1, loss=f"loss {self.loss_history_[-1]:.4f}")
                if out_of_time:
                    break
        finally:
            if bar is not None:
                bar.stop()
        self.net_.eval()
        self.epochs_run_ = len(self.loss_history_)
        self.train_seconds_ = time.perf_counter() - t0
        return self

    def transform(self, x, batch_size: int = 64, progress=None) -> torch.Tensor:
        """Denoise ``x`` ``(N, C, *spatial)``; returns a float32 tensor of the same shape and units.
        ``progress``: called with the number of images done after each batch (for a progress bar)."""
        if self.net_ is None:
            raise MeddxError("SelfSupervisedDenoiser is not fitted", fix="call fit(x) or load_state_dict() first")
        t = _as_tensor(x, "SelfSupervisedDenoiser.transform", self.spatial_dims, self.channels)
        spatial = tuple(t.shape[2:])
        padded = tuple(max(s + (-s) % _MULTIPLE, _MULTIPLE) for s in spatial)
        out = []
        self.net_.eval()
        stride = self._grid_stride()
        with torch.no_grad():
            for i in range(0, t.shape[0], batch_size):
                z = self._pad_to((t[i:i + batch_size] - self.mean_) / self.std_, padded)
                y = blind_spot_predict(self.net_, z, stride)
                y = y[(slice(None), slice(None)) + tuple(slice(0, s) for s in spatial)]
                out.append(y * self.std_ + self.mean_)
                if progress is not None:
                    progress(int(z.shape[0]))
        return torch.cat(out).contiguous()

    def _grid_stride(self) -> int:
        return grid_stride(self.mask_fraction, self.spatial_dims)

    def fit_transform(self, x) -> torch.Tensor:
        """``fit(x)`` then ``transform(x)``."""
        return self.fit(x).transform(x)

    # --- state ---------------------------------------------------------------------------------
    def get_params(self) -> dict:
        return {"spatial_dims": self.spatial_dims, "channels": self.channels, "mask_fraction": self.mask_fraction,
                "epochs": self.epochs, "time_budget_s": self.time_budget_s, "batch_size": self.batch_size,
                "patch_size": self.patch_size, "features": list(self.features), "lr": self.lr, "seed": self.seed}

    def state_dict(self) -> dict:
        """Parameters, standardisation, training record and network weights (loadable with weights_only=True)."""
        if self.net_ is None:
            raise MeddxError("SelfSupervisedDenoiser is not fitted: nothing to save", fix="call fit(x) first")
        return {"kind": "SelfSupervisedDenoiser", "params": self.get_params(), "mean": self.mean_, "std": self.std_,
                "loss_history": list(self.loss_history_), "epochs_run": self.epochs_run_,
                "train_seconds": self.train_seconds_, "net": self.net_.state_dict()}

    def load_state_dict(self, state: dict) -> SelfSupervisedDenoiser:
        """Restore a fitted denoiser from ``state_dict()`` output; its parameters replace this one's."""
        if not isinstance(state, dict) or state.get("kind") != "SelfSupervisedDenoiser":
            raise MeddxError("not a SelfSupervisedDenoiser state", fix="pass what state_dict() or save() wrote")
        p = state["params"]
        self.__init__(**{**p, "features": tuple(p["features"])})
        self.mean_, self.std_ = float(state["mean"]), float(state["std"])
        self.loss_history_ = list(state["loss_history"])
        self.epochs_run_, self.train_seconds_ = int(state["epochs_run"]), float(state["train_seconds"])
        self.net_ = self._build()
        self.net_.load_state_dict(state["net"])
        self.net_.eval()
        return self

    # --- helpers -------------------------------------------------------------------------------
    @staticmethod
    def _pad_to(z: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        pads = []
        for have, want in reversed(list(zip(z.shape[2:], shape))):
            pads += [0, max(0, want - have)]
        return F.pad(z, pads, mode="replicate") if any(pads) else z

    def _crop_flip(self, b: torch.Tensor, p: int, gen: torch.Generator) -> torch.Tensor:
        spatial = b.shape[2:]
        if any(s > p for s in spatial):  # a random patch per image
            starts = [torch.randint(0, s - p + 1, (b.shape[0],), generator=gen).tolist() for s in spatial]
            b = torch.stack([b[(i, slice(None)) + tuple(slice(st[i], st[i] + p) for st in starts)]
                             for i in range(b.shape[0])])
        for ax in range(2, b.ndim):
            if bool(torch.rand(1, generator=gen) < 0.5):
                b = b.flip(ax)
        return b
