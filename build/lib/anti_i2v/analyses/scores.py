"""Semantic scores of block features: pure functions over `(F, H, W, C)` token grids.

Three families (see the README): unsupervised (spatial coherence, CKA to the first / last
block, temporal stability), mask-supervised (a linear probe predicting part labels on held-out
samples), and reference-encoder alignment (CKA to a vision encoder's patch features).
Features are float tensors; massive-activation channels should be clamped first
(:func:`clamp_massive`), since a handful of huge channels otherwise dominates every cosine.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import RidgeClassifier
from sklearn.metrics import balanced_accuracy_score
from sklearn.preprocessing import StandardScaler


def clamp_massive(x: torch.Tensor, ratio: float = 8.0) -> torch.Tensor:
    """Scale down channels whose RMS exceeds `ratio` x the median channel RMS, over `(..., C)`.

    Diffusion transformers carry a few "massive activation" channels orders of magnitude larger
    than the rest; they carry little spatial information but dominate PCA and similarities.
    """
    rms = x.reshape(-1, x.shape[-1]).float().pow(2).mean(0).sqrt()
    cap = ratio * rms.median().clamp_min(1e-12)
    scale = torch.where(rms > cap, cap / rms, torch.ones_like(rms))
    return x * scale.to(x.dtype)


def spatial_coherence(x: torch.Tensor) -> float:
    """Mean cosine of 4-neighbour tokens minus mean cosine of all token pairs, for `(F, H, W, C)`.

    High when nearby tokens agree more than distant ones do: features organised by image
    regions (objects, parts) rather than noise or one global vector.
    """
    u = F.normalize(x.float() - x.float().mean(dim=(0, 1, 2)), dim=-1)
    near = []
    if u.shape[1] > 1:
        near.append((u[:, 1:] * u[:, :-1]).sum(-1).flatten())
    if u.shape[2] > 1:
        near.append((u[:, :, 1:] * u[:, :, :-1]).sum(-1).flatten())
    if not near:
        return 0.0
    flat = u.reshape(-1, u.shape[-1])
    n = flat.shape[0]
    total = flat.sum(0)
    # Mean cosine over distinct pairs in closed form: (|sum u|^2 - n) / (n (n - 1)).
    far = (total.dot(total) - (flat * flat).sum()) / (n * (n - 1))
    return float(torch.cat(near).mean() - far)


def temporal_stability(x: torch.Tensor) -> float:
    """Mean cosine similarity of each token with itself in the next frame, for `(F, H, W, C)`."""
    if x.shape[0] < 2:
        return 1.0
    u = F.normalize(x.float(), dim=-1)
    return float((u[1:] * u[:-1]).sum(-1).mean())


class LinearCKA:
    """Streaming linear CKA between two feature sets with the same rows (tokens).

    CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) with column-centred X, Y
    (Kornblith et al. 2019). Accumulating X^T X, Y^T Y, Y^T X and the column sums lets rows
    arrive in batches, so memory is bounded by C x C, not by the number of tokens.
    """

    def __init__(self) -> None:
        self.n = 0
        self.sx = self.sy = self.xx = self.yy = self.yx = None

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add rows: `x (N, Cx)`, `y (N, Cy)` (float64 inside for stable sums)."""
        x, y = x.double(), y.double()
        if self.sx is None:
            self.sx, self.sy = x.sum(0), y.sum(0)
            self.xx, self.yy, self.yx = x.T @ x, y.T @ y, y.T @ x
        else:
            self.sx += x.sum(0)
            self.sy += y.sum(0)
            self.xx += x.T @ x
            self.yy += y.T @ y
            self.yx += y.T @ x
        self.n += x.shape[0]

    def value(self) -> float:
        """CKA of everything added so far (1 for identical features, near 0 for unrelated)."""
        n = self.n
        mx, my = self.sx / n, self.sy / n
        xx = self.xx - n * torch.outer(mx, mx)
        yy = self.yy - n * torch.outer(my, my)
        yx = self.yx - n * torch.outer(my, mx)
        denom = torch.linalg.matrix_norm(xx) * torch.linalg.matrix_norm(yy)
        return float(yx.pow(2).sum() / denom) if denom > 0 else 0.0


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of `x (N, Cx)` and `y (N, Cy)` in one call."""
    cka = LinearCKA()
    cka.update(x, y)
    return cka.value()


def labels_to_grid(labels: torch.Tensor, size: tuple[int, int], classes: int) -> torch.Tensor:
    """Majority part label of each token cell: `(H, W)` int labels -> `(h, w)`."""
    onehot = F.one_hot(labels.long(), classes).permute(2, 0, 1).float()[None]
    return F.adaptive_avg_pool2d(onehot, size)[0].argmax(0)


def mask_readout_score(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray
) -> float:
    """Balanced accuracy of a ridge linear readout (classifier) predicting part labels from tokens.

    Stored under the measure name `mask_probe` (the name profiles already carry).

    Trained on some samples' tokens, scored on other samples' tokens, so a layer scores high
    only when the mapping from features to parts generalises across portraits.
    """
    if len(np.unique(train_y)) < 2 or len(test_y) == 0:
        return float("nan")
    scaler = StandardScaler().fit(train_x)
    probe = RidgeClassifier(alpha=10.0).fit(scaler.transform(train_x), train_y)
    with warnings.catch_warnings():  # a part absent from the test portraits is not an error
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(test_y, probe.predict(scaler.transform(test_x))))
