"""Explanations: Grad-CAM, Grad-CAM++ and occlusion heatmaps (MONAI), and their faithfulness and
localisation scores."""

from meddx.explain.cam import METHODS, SEG_METHODS, Explainer
from meddx.explain.scores import deletion_insertion, energy_inside, pointing_game

__all__ = ["METHODS", "SEG_METHODS", "Explainer", "deletion_insertion", "energy_inside", "pointing_game"]
