"""Ensembles and swapped heads as ordinary modules, so every consumer of a run's model
(predict, evaluate, Grad-CAM, ONNX export) handles them without special cases."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def replace_module(model: nn.Module, dotted: str, new: nn.Module) -> nn.Module:
    """Swap the submodule at a dotted path (``"class_layers.out"``); returns the old one."""
    parent_name, _, leaf = dotted.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, leaf)
    setattr(parent, leaf, new)
    return old


class EnsembleModel(nn.Module):
    """Average of the members' softmax outputs, returned as log-probabilities.

    ``softmax(output)`` equals the mean of the members' probabilities (the log of a
    probability vector is a valid logit vector), so downstream code that applies a
    softmax needs no change. Works per image (classifiers) and per voxel (dim 1 = classes).
    """

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        first = self.members[0]
        for attr in ("cam_layer", "classifier_layer"):
            if hasattr(first, attr):
                setattr(self, attr, f"members.0.{getattr(first, attr)}")
        if hasattr(first, "model_config"):
            self.model_config = {**first.model_config, "ensemble_members": len(self.members)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.stack([torch.softmax(m(x).float(), dim=1) for m in self.members]).mean(0)
        return torch.log(p.clamp_min(1e-12))

    def member_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """``(members, N, K, ...)`` softmax of each member (for ensemble-variance uncertainty)."""
        return torch.stack([torch.softmax(m(x).float(), dim=1) for m in self.members])


class PCALinearHead(nn.Module):
    """A trained network's pooled features -> fixed PCA projection -> linear classifier.

    The light alternative for tiny datasets (issue 4's feature selection): the projection
    and the logistic-regression weights are fitted with scikit-learn on the training
    features and stored as two ``nn.Linear`` layers, so the result stays one torch module.
    Ours: neither MONAI nor scikit-learn joins the two.
    """

    def __init__(self, backbone: nn.Module, in_features: int, n_components: int, num_classes: int):
        super().__init__()
        self.backbone = backbone
        replace_module(backbone, backbone.classifier_layer, nn.Identity())  # features instead of logits
        self.pca = nn.Linear(in_features, n_components)
        self.fc = nn.Linear(n_components, num_classes)
        if hasattr(backbone, "cam_layer"):
            self.cam_layer = f"backbone.{backbone.cam_layer}"
        self.classifier_layer = "fc"
        if hasattr(backbone, "model_config"):
            self.model_config = {**backbone.model_config, "head": "pca_linear", "pca_components": n_components}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pca(self.backbone(x)))
