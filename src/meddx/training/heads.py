"""The PCA + linear head: the light alternative for tiny datasets (plan ``train.head``)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from meddx.models.ensemble import PCALinearHead, replace_module


@torch.no_grad()
def deep_features(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Pooled features a classifier feeds its final linear layer, ``(N, F)``."""
    device = next(model.parameters()).device
    model.eval()
    old = replace_module(model, model.classifier_layer, nn.Identity())
    try:
        return torch.cat([model(x[i:i + batch_size].to(device)).float().cpu()
                          for i in range(0, x.shape[0], batch_size)]).numpy()
    finally:
        replace_module(model, model.classifier_layer, old)


def head_class_weight(train) -> str | None:
    """``"balanced"`` when the plan's training balances the classes (``class_weights``, a
    ``sampler``, ``logit_adjust``): the refitted head must too, or it undoes that balance by
    learning the training prior again. ``train.class_weights: balanced`` is scikit-learn's
    ``"balanced"`` (w_c = N / (K * n_c))."""
    if train.class_weights or train.sampler != "none" or train.logit_adjust > 0:
        return "balanced"
    return None


def fit_pca_head(model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor,
                 y_val: torch.Tensor, n_components: int, num_classes: int, seed: int = 0,
                 class_weight: str | None = None) -> tuple[PCALinearHead, dict]:
    """Replace a trained classifier's linear layer by PCA (fitted on training features) and an
    L2 logistic regression whose strength is chosen on validation log-loss (scikit-learn).

    Args:
        class_weight: scikit-learn's ``class_weight`` of the logistic regression
            (:func:`head_class_weight` of the plan).

    Returns:
        The new model and a record of the fit (training cases, components kept, explained
        variance, chosen C, validation log-loss per C, class weighting).
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    f_tr = deep_features(model, x_train)
    f_va = deep_features(model, x_val)
    ytr, yva = y_train.numpy(), y_val.numpy()
    k = int(min(n_components, f_tr.shape[1], max(1, f_tr.shape[0] - 1)))
    pca = PCA(n_components=k, whiten=True, random_state=seed).fit(f_tr)
    z_tr, z_va = pca.transform(f_tr), pca.transform(f_va)
    scores = {}
    best = None
    for c in (0.01, 0.1, 1.0, 10.0):
        lr = LogisticRegression(C=c, max_iter=5000, class_weight=class_weight).fit(z_tr, ytr)
        p = np.zeros((len(yva), num_classes))
        p[:, lr.classes_] = lr.predict_proba(z_va)
        p = np.clip(p, 1e-7, 1)
        scores[c] = float(log_loss(yva, p / p.sum(1, keepdims=True), labels=list(range(num_classes))))
        if best is None or scores[c] < scores[best[0]]:
            best = (c, lr)
    c, lr = best
    head = PCALinearHead(model, f_tr.shape[1], k, num_classes)
    # PCA with whitening as one affine map: z = (f - mean) @ W.T with W = components / sqrt(var)
    w = pca.components_ / np.sqrt(pca.explained_variance_)[:, None]
    head.pca.weight.data = torch.from_numpy(w).float()
    head.pca.bias.data = torch.from_numpy(-(w @ pca.mean_)).float()
    coef = np.zeros((num_classes, k))
    inter = np.zeros(num_classes)
    if len(lr.classes_) == 2 and lr.coef_.shape[0] == 1:  # binary: logit of the second class vs the first
        coef[lr.classes_[1]] = lr.coef_[0]
        inter[lr.classes_[1]] = lr.intercept_[0]
    else:
        coef[lr.classes_] = lr.coef_
        inter[lr.classes_] = lr.intercept_
        inter[np.setdiff1d(np.arange(num_classes), lr.classes_)] = -30.0  # unseen class: never predicted
    head.fc.weight.data = torch.from_numpy(coef).float()
    head.fc.bias.data = torch.from_numpy(inter).float()
    head.to(next(model.parameters()).device).eval()
    record = {"train_cases": int(f_tr.shape[0]), "components": k, "explained_variance": round(float(pca.explained_variance_ratio_.sum()), 4),
              "C": c, "val_log_loss": {str(kk): round(v, 5) for kk, v in scores.items()}, "class_weight": class_weight}
    return head, record
