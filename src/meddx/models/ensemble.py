"""Ensembles, swapped heads and a fitted input denoiser as ordinary modules, so every consumer
of a run's model (predict, evaluate, Grad-CAM, ONNX export) handles them without special cases."""

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


class DenoisedInput(nn.Module):
    """A fitted self-supervised denoiser (``SelfSupervisedDenoiser``) in front of a network.

    Reproduces ``SelfSupervisedDenoiser.transform`` as part of the forward pass: standardise with
    the denoiser's statistics, pad to a multiple of 4 (replicate), predict every pixel with its
    own value hidden (``blind_spot_predict``, grid stride ``stride``), crop, undo the
    standardisation. The denoiser stays frozen and in eval mode.
    """

    MULTIPLE = 4

    def __init__(self, denoiser_net: nn.Module, mean: float, std: float, net: nn.Module, stride: int = 4):
        super().__init__()
        self.denoiser = denoiser_net
        for p in self.denoiser.parameters():
            p.requires_grad_(False)
        self.register_buffer("den_mean", torch.tensor(float(mean)))
        self.register_buffer("den_std", torch.tensor(float(std)))
        self.register_buffer("den_stride", torch.tensor(int(stride)))
        self.net = net
        for attr in ("cam_layer", "classifier_layer"):
            if getattr(net, attr, None):
                setattr(self, attr, f"net.{getattr(net, attr)}")
        if hasattr(net, "model_config"):
            self.model_config = {**net.model_config, "learned_denoise": True}

    def train(self, mode: bool = True):
        super().train(mode)
        self.denoiser.eval()  # frozen: its batch-norm statistics must not move
        return self

    def denoise(self, x: torch.Tensor) -> torch.Tensor:
        spatial = x.shape[2:]
        z = (x - self.den_mean) / self.den_std
        pads = []
        for s in reversed(list(spatial)):
            pads += [0, max(s + (-s) % self.MULTIPLE, self.MULTIPLE) - s]
        zp = nn.functional.pad(z, pads, mode="replicate") if any(pads) else z
        from meddx.transforms.learned_denoise import blind_spot_predict

        y = blind_spot_predict(self.denoiser, zp, int(self.den_stride))
        y = y[(slice(None), slice(None)) + tuple(slice(0, s) for s in spatial)]
        return y * self.den_std + self.den_mean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x = self.denoise(x)
        return self.net(x)
