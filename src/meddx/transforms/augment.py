"""Batch augmentation for 2D and 3D tensors, replayable.

Each random transform only *samples* parameters (``sample``); a deterministic function
applies them (``apply``), so the parameters can be recorded, replayed and used for
test-time augmentation. It works on whole batches with ``affine_grid``/``grid_sample``
because per-sample Python transforms (MONAI's dictionary transforms) dominate the step
time for 28-64 px images on CPU; MONAI has no batched equivalent, hence our own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def _rot2(a: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(a), torch.sin(a)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def _rot3(ax: torch.Tensor, ay: torch.Tensor, az: torch.Tensor) -> torch.Tensor:
    n = ax.shape[0]
    one, zero = torch.ones(n), torch.zeros(n)
    cx, sx, cy, sy, cz, sz = ax.cos(), ax.sin(), ay.cos(), ay.sin(), az.cos(), az.sin()
    rx = torch.stack([torch.stack([one, zero, zero], -1), torch.stack([zero, cx, -sx], -1),
                      torch.stack([zero, sx, cx], -1)], -2)
    ry = torch.stack([torch.stack([cy, zero, sy], -1), torch.stack([zero, one, zero], -1),
                      torch.stack([-sy, zero, cy], -1)], -2)
    rz = torch.stack([torch.stack([cz, -sz, zero], -1), torch.stack([sz, cz, zero], -1),
                      torch.stack([zero, zero, one], -1)], -2)
    return rz @ ry @ rx


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with a per-sample sigma (pixels; 0 leaves a sample as it is)."""
    n, c = x.shape[:2]
    d = x.ndim - 2
    radius = max(1, int(math.ceil(3 * float(sigma.max()))))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    s = sigma.to(x.dtype).clamp_min(1e-3).view(-1, 1)
    k = torch.exp(-0.5 * (t.view(1, -1) / s) ** 2)
    k = k / k.sum(1, keepdim=True)
    k = torch.where(sigma.view(-1, 1) > 1e-3, k, (t == 0).to(x.dtype).expand_as(k))
    k = k.repeat_interleave(c, 0)  # (n*c, taps): one kernel per sample and channel (grouped conv)
    out = x.reshape(1, n * c, *x.shape[2:])
    conv = (F.conv1d, F.conv2d, F.conv3d)[d - 1]
    for ax in range(d):
        shape = [n * c, 1] + [1] * d
        shape[2 + ax] = k.shape[1]
        pad = [0, 0] * d
        pad[2 * (d - 1 - ax)] = pad[2 * (d - 1 - ax) + 1] = radius
        out = conv(F.pad(out, pad, mode="replicate"), k.view(shape), groups=n * c)
    return out.reshape(x.shape)


@dataclass
class BatchAugment:
    """Random flips, affine (rotation, zoom, shift) and intensity jitter; see ``AugmentConfig``."""

    spatial_dims: int
    flip_axes: tuple[int, ...] = ()
    rotate_deg: float = 0.0
    scale: float = 0.0
    translate: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    noise_std: float = 0.0
    gamma: float = 0.0
    blur_sigma: float = 0.0
    elastic: float = 0.0
    elastic_grid: int = 4
    p: float = 1.0

    @classmethod
    def from_config(cls, cfg, spatial_dims: int) -> "BatchAugment":
        return cls(spatial_dims=spatial_dims, flip_axes=tuple(cfg.flip_axes), rotate_deg=cfg.rotate_deg,
                   scale=cfg.scale, translate=cfg.translate, brightness=cfg.brightness, contrast=cfg.contrast,
                   noise_std=cfg.noise_std, gamma=cfg.gamma, blur_sigma=cfg.blur_sigma, elastic=cfg.elastic,
                   elastic_grid=cfg.elastic_grid, p=cfg.p)

    @property
    def active(self) -> bool:
        return bool(self.flip_axes or self.rotate_deg or self.scale or self.translate or self.brightness
                    or self.contrast or self.noise_std or self.gamma or self.blur_sigma or self.elastic) and self.p > 0

    @property
    def _spatial(self) -> bool:
        return bool(self.rotate_deg or self.scale or self.translate or self.elastic)

    def sample(self, n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """Draw per-sample parameters for a batch of ``n``."""
        d = self.spatial_dims
        r = math.radians(self.rotate_deg)
        n_rot = 1 if d == 2 else 3
        g = self.gamma
        return {
            "apply": torch.rand(n, generator=gen) < self.p,
            "flip": torch.rand(n, max(len(self.flip_axes), 1), generator=gen) < 0.5,
            "angles": _uniform(n * n_rot, -r, r, gen).reshape(n, n_rot),
            "zoom": _uniform(n, 1 - self.scale, 1 + self.scale, gen),
            "shift": _uniform(n * d, -self.translate, self.translate, gen).reshape(n, d) * 2,
            "brightness": _uniform(n, -self.brightness, self.brightness, gen),
            "contrast": _uniform(n, 1 - self.contrast, 1 + self.contrast, gen),
            "noise_seed": torch.randint(0, 2**31 - 1, (1,), generator=gen),
            # log-uniform, so gamma < 1 and > 1 are equally likely
            "gamma": torch.exp(_uniform(n, -math.log1p(g), math.log1p(g), gen)),
            "blur": _uniform(n, 0.0, self.blur_sigma, gen),
            # coarse control-point displacements (fractions of the half-size), upsampled smoothly in ``apply``
            "elastic": _uniform(n * d * self.elastic_grid ** d, -1.0, 1.0, gen).reshape(
                n, d, *([self.elastic_grid] * d)) * (2 * self.elastic),
        }

    def _grid(self, params: dict[str, torch.Tensor], keep: torch.Tensor, shape, device, dtype) -> torch.Tensor:
        """Sampling grid of the sampled rotation, zoom and shift (identity where not applied)."""
        d = self.spatial_dims
        n = shape[0]
        a = params["angles"]
        rot = _rot2(a[:, 0]) if d == 2 else _rot3(a[:, 0], a[:, 1], a[:, 2])
        # affine_grid's coordinates run from -1 to 1 along every axis: a rotation there shears and
        # stretches a non-square image. Rotate in pixel units instead: S^-1 R S with S = diag(size / 2)
        # in the grid's (x, y[, z]) order, i.e. R[i, j] * size[j] / size[i] (exactly R when square)
        size = torch.tensor([float(s) for s in reversed(shape[2:])])
        rot = rot * (size[None, :] / size[:, None])
        theta = torch.cat([rot / params["zoom"].view(-1, 1, 1), params["shift"].unsqueeze(-1)], -1)
        ident = torch.cat([torch.eye(d).expand(n, d, d), torch.zeros(n, d, 1)], -1)
        theta = torch.where(keep.view(-1, 1, 1).cpu(), theta, ident).to(device, dtype)
        grid = F.affine_grid(theta, list(shape), align_corners=False)
        if self.elastic:
            # a smooth displacement field: control points upsampled with (tri)cubic-like interpolation
            mode = "bicubic" if d == 2 else "trilinear"
            disp = F.interpolate(params["elastic"].to(device, dtype), size=list(shape[2:]), mode=mode,
                                 align_corners=True)
            disp = disp * keep.view(-1, *([1] * (d + 1))).to(device, dtype)
            # grid's last axis is (x, y[, z]) = reversed spatial axes
            grid = grid + disp.permute(0, *range(2, d + 2), 1).flip(-1)
        return grid

    def apply(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Apply sampled parameters deterministically to ``x`` of shape ``(N, C, *spatial)``."""
        keep = params["apply"].to(x.device)
        sel = keep.view(-1, *([1] * (x.ndim - 1)))
        out = x
        for j, ax in enumerate(self.flip_axes):
            m = (params["flip"][:, j].to(x.device) & keep).view(-1, *([1] * (x.ndim - 1)))
            out = torch.where(m, out.flip(2 + ax), out)
        if self._spatial:
            grid = self._grid(params, keep, out.shape, x.device, x.dtype)
            out = F.grid_sample(out, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if self.blur_sigma:
            out = torch.where(sel, _blur(out, params["blur"].to(x.device)), out)
        if self.gamma:
            dims = tuple(range(1, x.ndim))
            lo, hi = out.amin(dim=dims, keepdim=True), out.amax(dim=dims, keepdim=True)
            span = (hi - lo).clamp_min(1e-6)
            gm = params["gamma"].to(x.device).view(-1, *([1] * (x.ndim - 1)))
            out = torch.where(sel, ((out - lo) / span).clamp(0, 1) ** gm * span + lo, out)
        if self.contrast or self.brightness:
            c = params["contrast"].to(x.device).view(-1, *([1] * (x.ndim - 1)))
            b = params["brightness"].to(x.device).view(-1, *([1] * (x.ndim - 1)))
            mean = out.mean(dim=tuple(range(1, x.ndim)), keepdim=True)
            out = torch.where(sel, (out - mean) * c + mean + b, out)
        if self.noise_std:
            g = torch.Generator().manual_seed(int(params["noise_seed"][0]))
            noise = torch.randn(out.shape, generator=g).to(x.device) * self.noise_std
            out = torch.where(sel, out + noise, out)
        return out

    def apply_labels(self, y: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Apply the *spatial* part of sampled parameters to label maps ``(N, *spatial)``.

        Same flips and affine as ``apply`` with nearest-neighbour sampling, so an image
        and its mask stay aligned; intensity parameters do not touch labels.
        """
        keep = params["apply"].to(y.device)
        out = y.unsqueeze(1)
        for j, ax in enumerate(self.flip_axes):
            m = (params["flip"][:, j].to(y.device) & keep).view(-1, *([1] * (out.ndim - 1)))
            out = torch.where(m, out.flip(2 + ax), out)
        if self._spatial:
            grid = self._grid(params, keep, out.shape, y.device, torch.float32)
            out = F.grid_sample(out.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
        return out[:, 0].to(y.dtype)

    def used_params(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The part of ``params`` that ``apply`` reads with this configuration (what a record keeps)."""
        keys = {"apply"}
        if self.flip_axes:
            keys.add("flip")
        if self._spatial:
            keys |= {"angles", "zoom", "shift"} | ({"elastic"} if self.elastic else set())
        if self.blur_sigma:
            keys.add("blur")
        if self.gamma:
            keys.add("gamma")
        if self.contrast or self.brightness:
            keys |= {"contrast", "brightness"}
        if self.noise_std:
            keys.add("noise_seed")
        return {k: v for k, v in params.items() if k in keys}

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        params = self.sample(x.shape[0], gen)
        return self.apply(x, params), params


class AugmentRecorder:
    """Records the parameters drawn for each training batch (plan ``augment.record``).

    ``add`` keeps one batch (the indices of its cases in the training data, the parameters
    ``BatchAugment.sample`` drew, any mixup/cutmix pairing and, for segmentation patches, each
    crop's corner in the zero-padded image); ``write`` saves the epoch's
    batches to ``<folder>/epoch_NNNN.pt`` (atomically) and starts the next. Replay a batch with
    ``BatchAugment.apply(x_train[case_index], params)``; ``load_augment_record`` reads a file back.
    An epoch cut short (a killed run, the time budget) writes nothing: a resumed run re-draws it.
    """

    def __init__(self, folder: str | Path | None):
        self.folder = None if folder is None else Path(folder)  # None: records nothing
        self._batches: list[dict] = []

    @classmethod
    def for_plan(cls, plan, run_dir: str | Path) -> "AugmentRecorder":
        """``RUN/augment`` when the plan sets ``augment.record``, else one that records nothing."""
        return cls(Path(run_dir) / "augment" if plan.augment.record else None)

    def add(self, augment: BatchAugment, case_index, params: dict[str, torch.Tensor], **extra) -> None:
        """One batch: its cases, the parameters ``augment`` drew and applies, and what else replaying
        it needs (``mix``: the mixup/cutmix pairing; ``crop_start``: segmentation patch corners)."""
        if self.folder is None:
            return

        def keep(v):
            if isinstance(v, dict):
                return {k: keep(x) for k, x in v.items()}
            return v.detach().cpu().clone() if isinstance(v, torch.Tensor) else v

        self._batches.append({"case_index": torch.as_tensor(case_index).detach().cpu().clone(),
                              "params": keep(augment.used_params(params) if params else {}),
                              **{k: keep(v) for k, v in extra.items()}})

    def write(self, epoch: int) -> Path | None:
        from meddx.io.state import save_state

        batches, self._batches = self._batches, []
        if not batches or self.folder is None:
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        return save_state({"epoch": int(epoch), "batches": batches}, self.folder / f"epoch_{int(epoch):04d}.pt")

    def discard(self) -> None:
        """Forget the batches of an epoch that did not finish."""
        self._batches = []


def load_augment_record(path: str | Path) -> dict:
    """Read one ``augment/epoch_NNNN.pt``: ``{"epoch": e, "batches": [{"case_index", "params"[, "mix"]}]}``."""
    from meddx.io.state import load_state

    return load_state(path, "augmentation record", "train with augment.record: true to write one")
