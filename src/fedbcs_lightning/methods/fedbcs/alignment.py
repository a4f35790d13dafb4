"""Multi-prototype alignment loss of FedBCS (per level).

For an anchor feature ``f`` of class ``c``: ``P+`` = the centroids of ``c``, ``P-`` = all
other classes' centroids (background included), ``s(f, p) = cos(f, p) / tau``.

    L_contra = -log( sum_{P+} exp s / sum_{P+ and P-} exp s )
    L_consis = mean squared error between f and the mean of c's centroids
    L        = mean over anchor classes of mean over its anchors of (L_contra + L_consis)

``mode="stable"`` (default) evaluates ``L_contra`` with log-sum-exp: finite with useful
gradients even at ``tau = 0.005``. ``mode="paper"`` reproduces the reference code, which
clamps similarities at 20 and exponentials at 1e6 (with small ``tau`` almost every term
saturates and the contrastive gradient vanishes) and adds 1e-9 to both sums (so the loss
stays finite where every positive similarity underflows).

Examples
--------
>>> import torch
>>> from fedbcs_lightning.methods.prototypes import PrototypeBank
>>> bank = PrototypeBank({("enc", 0): torch.tensor([[1.0, 0.0]]),
...                      ("enc", 1): torch.tensor([[0.0, 1.0]])})
>>> on = alignment_loss(torch.tensor([[0.0, 1.0]]), torch.tensor([1]), bank, "enc", tau=0.1)
>>> off = alignment_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([1]), bank, "enc", tau=0.1)
>>> bool(on < 1e-3 < off)
True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fedbcs_lightning.methods.prototypes import PrototypeBank


def alignment_loss(
    features: torch.Tensor,
    labels: torch.Tensor,
    bank: PrototypeBank,
    level: str,
    tau: float,
    mode: str = "stable",
) -> torch.Tensor:
    """Loss for anchors ``features (N, D)`` with classes ``labels (N,)`` at ``level``."""
    if mode not in ("stable", "paper"):
        raise ValueError(f"alignment mode must be 'stable' or 'paper', got {mode!r}")
    classes = bank.classes(level)
    if not classes or features.numel() == 0:
        return features.sum() * 0
    device, dtype = features.device, features.dtype
    protos = torch.cat([bank.centroids(level, c) for c in classes]).to(device, dtype)
    proto_class = torch.cat(
        [torch.full((len(bank.centroids(level, c)),), c, device=device) for c in classes]
    )
    unbiased = torch.stack([bank.unbiased(level, c) for c in classes]).to(device, dtype)
    known = torch.isin(labels, torch.tensor(classes, device=device))
    features, labels = features[known], labels[known]
    if features.numel() == 0:
        return protos.sum() * 0
    sim = F.normalize(features, dim=1) @ F.normalize(protos, dim=1).T / tau
    positive = proto_class[None, :] == labels[:, None]
    if mode == "stable":
        contra = torch.logsumexp(sim, 1) - torch.logsumexp(
            sim.masked_fill(~positive, -torch.inf), 1
        )
    else:
        e = torch.exp(sim.clamp(max=20.0)).clamp(max=1e6)
        contra = -torch.log(((e * positive).sum(1) + 1e-9) / (e.sum(1) + 1e-9))
    index = torch.searchsorted(torch.tensor(classes, device=device), labels)
    consis = ((features - unbiased[index]) ** 2).mean(dim=1)
    per_anchor = contra + consis
    per_class = [per_anchor[labels == c].mean() for c in labels.unique()]
    return torch.stack(per_class).mean()
