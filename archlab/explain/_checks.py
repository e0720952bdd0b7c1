"""The checks that tell a faithful explanation from a picture.

- completeness (integrated gradients): Σ attributions = f(x) − f(baseline), per sample
  (computed in `_methods.completeness_error`);
- the model-randomisation test (Adebayo et al. 2018, "Sanity checks for saliency maps"):
  attributions of the trained model against those of a copy with freshly initialised
  weights; an explanation that still looks the same explains the input, not the model, so
  the Spearman rank correlation between the two should be low;
- deletion curves (Petsiuk et al. 2018): remove the most-attributed features first and watch
  the target's probability fall; a faithful ranking makes it fall faster (a smaller area under
  the curve) than removing features in random order.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ._methods import pick

DELETION_POINTS = 64      # at most this many deletion steps per curve (every feature for digits)
RANDOM_ORDERS = 8         # random deletion orders averaged per sample


def rank_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's ρ per sample between two attribution batches (N, ...); NaN where either map
    is constant (a rank correlation is undefined there)."""
    from scipy.stats import rankdata

    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)   # ties share their mean rank
    ra, rb = ra - ra.mean(1, keepdims=True), rb - rb.mean(1, keepdims=True)
    den = np.sqrt((ra ** 2).sum(1) * (rb ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ra * rb).sum(1) / np.where(den > 0, den, 1), np.nan)


def feature_scores(attributions: torch.Tensor, image_like: bool) -> torch.Tensor:
    """One score per deletable feature (N, F): a pixel's attributions summed over its channels
    for images (C, H, W) or (C, L); each input on its own for a table."""
    if image_like:
        return attributions.sum(1).reshape(len(attributions), -1)
    return attributions.reshape(len(attributions), -1)


def deletion_curves(model: nn.Module, x: torch.Tensor, target: torch.Tensor, order: torch.Tensor,
                    baseline: torch.Tensor, image_like: bool, probability: bool, batch: int = 4096
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The target's score as features are deleted (set to the baseline) in `order` (N, F), most
    important first: returns the fractions deleted (K+1,) and the scores (N, K+1). The score
    is the target's softmax probability for a classifier, the output itself otherwise."""
    n, f = order.shape
    counts = np.unique(np.round(np.linspace(0, f, min(f, DELETION_POINTS) + 1)).astype(int))
    # rank[i, j]: when feature j of sample i is deleted (0 = first).
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(f).expand(n, f).contiguous())
    variants = []
    for c in counts:
        gone = (rank < int(c))                                   # (N, F)
        if image_like:
            gone = gone.view(n, 1, *x.shape[2:]).expand_as(x)     # every channel of a pixel
        else:
            gone = gone.view_as(x)
        variants.append(torch.where(gone, baseline, x))
    stacked = torch.stack(variants, 1).reshape(n * len(counts), *x.shape[1:])  # (N*(K+1), ...)
    targets = target.repeat_interleave(len(counts))
    scores = []
    with torch.no_grad():
        for i in range(0, len(stacked), batch):
            out = model(stacked[i:i + batch])
            if probability:
                out = out.softmax(-1)
            scores.append(pick(out, targets[i:i + batch]))
    return counts / f, torch.cat(scores).reshape(n, len(counts)).double().numpy()


def curve_area(fractions: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Area under each deletion curve over the fraction deleted, 0..1 (trapezoids)."""
    widths = np.diff(fractions)
    return ((scores[:, 1:] + scores[:, :-1]) / 2 * widths).sum(1)


def random_orders(n: int, f: int, seed: int, repeats: int = RANDOM_ORDERS) -> list[torch.Tensor]:
    """`repeats` random deletion orders (N, F), each row its own permutation, seeded."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(n, f, generator=gen).argsort(1) for _ in range(repeats)]
