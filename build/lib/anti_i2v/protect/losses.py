"""Losses on block features and on the denoiser's prediction: plain callables, smaller is closer.

Features arrive in the probe's layout `(B, F, H, W, C)`. Layers of a DiT share one layout; UNet
layers differ in resolution and width, so when shapes differ the features are compared through
their token self-similarity structure on a common grid instead of value by value.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _common_grid(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Area-resample `(B, F, H, W, C)` features to the smaller of the two grids."""
    h, w = min(a.shape[2], b.shape[2]), min(a.shape[3], b.shape[3])

    def resample(x: torch.Tensor) -> torch.Tensor:
        bf = x.shape[0] * x.shape[1]
        y = x.reshape(bf, *x.shape[2:]).permute(0, 3, 1, 2)
        y = F.adaptive_avg_pool2d(y, (h, w)).permute(0, 2, 3, 1)
        return y.reshape(x.shape[0], x.shape[1], h, w, x.shape[-1])

    return resample(a), resample(b)


def _normed(x: torch.Tensor) -> torch.Tensor:
    """Per-token layer normalisation: losses compare directions, not the scale of massive channels."""
    return F.layer_norm(x.float(), x.shape[-1:])


def feature_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance of two block outputs, differentiable in both.

    Args:
        a, b: `(B, F, H, W, C)` features (the adapters' `layout`).

    Returns:
        A scalar: the mean squared distance of layer-normalised features when the shapes agree;
        otherwise of their token-by-token cosine-similarity matrices on a common grid (layers of
        different width, e.g. a UNet's down and up blocks).
    """
    if a.shape == b.shape:
        return (_normed(a) - _normed(b)).pow(2).mean()
    a, b = _common_grid(a, b)
    if a.shape[1] != b.shape[1]:
        frames = min(a.shape[1], b.shape[1])
        a, b = a[:, :frames], b[:, :frames]

    def similarity(x: torch.Tensor) -> torch.Tensor:
        t = F.normalize(x.reshape(x.shape[0], -1, x.shape[-1]).float(), dim=-1)
        return t @ t.transpose(1, 2)

    return (similarity(a) - similarity(b)).pow(2).mean()


def irc_loss(
    anchor_feats: dict[str, torch.Tensor], collapse_feats: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Internal Representation Collapse: anchors pulled toward the collapse layers' features.

    Args:
        anchor_feats, collapse_feats: layer name -> `(B, F, H, W, C)` features.

    Returns:
        A scalar, the mean `feature_distance` over every (anchor, collapse) pair: minimised.

    The collapse target is detached (stop-gradient): the low-level layer is the destination,
    not something to move.
    """
    terms = [
        feature_distance(a, c.detach())
        for a in anchor_feats.values()
        for c in collapse_feats.values()
    ]
    return torch.stack(terms).mean()


def ira_loss(
    anchor_feats: dict[str, torch.Tensor], reference_feats: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Internal Representation Anchor distance: anchors to a target's (or the clean image's) features."""
    return torch.stack(
        [feature_distance(anchor_feats[k], reference_feats[k].detach()) for k in anchor_feats]
    ).mean()


def diffusion_loss(predicted_clean: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """The vanilla diffusion loss in x0 form: error of the denoiser's clean-latent estimate."""
    return (predicted_clean.float() - clean.detach().float()).pow(2).mean()
