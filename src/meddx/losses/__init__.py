"""Losses by name (``create_loss``)."""

from meddx.losses.classification import LOSSES, create_loss

__all__ = ["LOSSES", "create_loss"]
