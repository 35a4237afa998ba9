"""Model registry: builders are registered by name and created from a plan.

A builder is ``fn(*, spatial_dims, in_channels, num_classes, input_size, **options)``
whose options are explicit keyword arguments, so unknown options can be
reported by name. Every classifier accepts ``attention``, ``dropout`` and ``width``
and sets ``cam_layer`` (the module Grad-CAM should hook) and
``classifier_layer`` (the final ``nn.Linear``); segmenters (``task="segment"``)
accept ``dropout`` and ``width`` and set ``divisor`` (see ``models/segmenters.py``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from meddx.errors import PlanError

Builder = Callable[..., nn.Module]

_REGISTRY: dict[str, Builder] = {}
_TASKS: dict[str, str] = {}
_FIXED_ARGS = ("spatial_dims", "in_channels", "num_classes", "input_size")


def register_model(name: str, task: str = "classify") -> Callable[[Builder], Builder]:
    """Decorator that registers a model builder under ``name``.

    Args:
        name: the name plans use, e.g. ``"resnet18"``.
        task: ``classify`` (logits per image) or ``segment`` (logits per pixel/voxel).

    Returns:
        The decorator; it returns the builder unchanged.
    """

    def decorator(fn: Builder) -> Builder:
        old = _REGISTRY.get(name)
        # same function re-registered (module reload) is fine; two different builders is a bug
        if old is not None and old.__qualname__ != fn.__qualname__:
            raise ValueError(f"model {name!r} is already registered by {old.__module__}.{old.__qualname__}")
        params = inspect.signature(fn).parameters
        missing = [a for a in _FIXED_ARGS if a not in params]
        if missing:
            raise TypeError(f"model builder {fn.__qualname__} lacks keyword arguments {missing}")
        _REGISTRY[name] = fn
        _TASKS[name] = task
        return fn

    return decorator


def list_models(task: str | None = None) -> list[str]:
    """Names of the registered models (of one task, if given), sorted."""
    return sorted(n for n in _REGISTRY if task is None or _TASKS[n] == task)


def model_task(name: str) -> str:
    """``classify`` or ``segment`` for a registered model."""
    _get(name)
    return _TASKS[name]


def model_options(name: str) -> dict[str, Any]:
    """The options (beyond the fixed arguments) a model accepts, with their defaults."""
    fn = _get(name)
    return {
        k: p.default
        for k, p in inspect.signature(fn).parameters.items()
        if k not in _FIXED_ARGS and p.kind is p.KEYWORD_ONLY
    }


def _get(name: str) -> Builder:
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise PlanError(
            f"unknown model {name!r}", fix=f"set model to one of: {', '.join(list_models())}"
        ) from None


def normalize_input_size(input_size: int | tuple[int, ...] | list[int], spatial_dims: int) -> tuple[int, ...]:
    """Turn an int or sequence into a ``spatial_dims``-tuple of positive ints.

    Raises:
        PlanError: wrong length or non-positive sizes.
    """
    if isinstance(input_size, int):
        size = (input_size,) * spatial_dims
    else:
        size = tuple(int(s) for s in input_size)
        if len(size) == 1:
            size = size * spatial_dims
    if len(size) != spatial_dims or min(size) < 1:
        raise PlanError(
            f"input_size {input_size!r} does not fit spatial_dims={spatial_dims}",
            fix=f"give one positive int or {spatial_dims} of them",
        )
    return size


def _number(name: str, option: str, value: Any) -> float:
    """A numeric model option (a plan's, a --set or --student value) as a float, or a PlanError."""
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):  # YAML true, a list, null
            raise ValueError(value)
        return float(value)
    except ValueError:
        raise PlanError(f"model {name!r}: {option} must be a number, got {value!r}",
                        fix=f"set {option} to a number, e.g. {option}=0.5") from None


def _check_common(name: str, spatial_dims: int, in_channels: int, num_classes: int, options: dict) -> None:
    if spatial_dims not in (2, 3):
        raise PlanError(f"model {name!r}: spatial_dims must be 2 or 3, got {spatial_dims!r}")
    if int(in_channels) < 1 or int(num_classes) < 1:
        raise PlanError(
            f"model {name!r}: in_channels and num_classes must be >= 1, got {in_channels!r} and {num_classes!r}"
        )
    if "attention" in options:
        att = options["attention"]
        if isinstance(att, str):
            att = att.lower()
            att = None if att == "none" else att
        if att not in (None, "se", "spatial", "cbam"):
            raise PlanError(f"model {name!r}: unknown attention {options['attention']!r}",
                            fix="use none, se, spatial or cbam")
        options["attention"] = att
    if "dropout" in options:
        p = _number(name, "dropout", options["dropout"])
        if not 0.0 <= p < 1.0:
            raise PlanError(f"model {name!r}: dropout must be in [0, 1), got {options['dropout']!r}")
        options["dropout"] = p
    if "width" in options:
        w = _number(name, "width", options["width"])
        if not w > 0:
            raise PlanError(f"model {name!r}: width must be > 0, got {options['width']!r}")
        options["width"] = w


def create_model(
    name: str,
    *,
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    input_size: int | tuple[int, ...] = 28,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: registered name (see ``list_models()``).
        spatial_dims: 2 or 3.
        in_channels: image channels.
        num_classes: output logits.
        input_size: training image size (int or per-axis tuple); picks the stem.
        **kwargs: model options: ``attention``, ``dropout``, ``width`` and
            model-specific ones (see ``model_options(name)``).

    Returns:
        The model, with ``cam_layer``, ``classifier_layer`` and ``model_config``
        (the arguments that rebuild it) set.

    Raises:
        PlanError: unknown name, unknown or invalid option, incompatible input size.
    """
    fn = _get(name)
    allowed = model_options(name)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise PlanError(
            f"model {name!r} has no option(s) {', '.join(unknown)}",
            fix=f"remove them; {name} accepts: {', '.join(sorted(allowed))}",
        )
    size = normalize_input_size(input_size, spatial_dims)
    options = dict(kwargs)
    _check_common(name, spatial_dims, in_channels, num_classes, options)
    try:
        model = fn(
            spatial_dims=int(spatial_dims),
            in_channels=int(in_channels),
            num_classes=int(num_classes),
            input_size=size,
            **options,
        )
    except (MemoryError, RuntimeError) as e:  # e.g. width=1e9: torch cannot allocate the weights
        if not isinstance(e, MemoryError) and "allocate" not in str(e) and "out of memory" not in str(e):
            raise
        shown = ", ".join(f"{k}={v}" for k, v in options.items()) or "its defaults"
        raise PlanError(f"model {name!r} with {shown} has more weights than this machine's memory holds",
                        fix="use a smaller width (or depth)") from None
    model.model_config = {
        "name": name,
        "spatial_dims": int(spatial_dims),
        "in_channels": int(in_channels),
        "num_classes": int(num_classes),
        "input_size": list(size),
        **{k: options.get(k, v) for k, v in allowed.items()},
    }
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
