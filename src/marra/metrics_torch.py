"""Batched versions of the equity metrics of :mod:`marra.metrics` for torch tensors.

Every function takes ``(..., n)`` tensors (one row per environment copy, one entry per agent)
and returns ``(...)``: one value per row, with no Python loop. They follow exactly the
definitions and edge cases of :mod:`marra.metrics` (tested against it): all-equal rows give 0,
no NaN. Inputs must be finite and >= 0 (the environments guarantee it; nothing is validated
here, these run inside ``step``).
"""

from __future__ import annotations

import torch

from marra.metrics import EXCESS_RTOL

__all__ = ["gini", "coverage", "mre", "mre_normalised", "cv"]


def gini(values: torch.Tensor) -> torch.Tensor:
    """Gini index per row (paper 000 Eq. 9, :func:`marra.metrics.gini`), ``(...)``."""
    x = values.to(torch.float64)
    n = x.shape[-1]
    top = x.amax(dim=-1, keepdim=True)
    scaled = x / top.clamp_min(1e-300)
    y = torch.sort(scaled, dim=-1).values
    weights = 2.0 * torch.arange(1, n + 1, dtype=torch.float64, device=x.device) - (n + 1)
    total = y.sum(dim=-1)
    value = (y * weights).sum(dim=-1) / (n * total.clamp_min(1e-300))  # paper 000 Eq. (9)
    constant = x.amax(dim=-1) == x.amin(dim=-1)
    value = value.clamp(0.0, 1.0 - 1.0 / n)
    return torch.where(constant, torch.zeros_like(value), value)


def coverage(allocation: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``y / t`` where ``t > 0``, else 1 (:func:`marra.metrics.coverage`)."""
    ratio = allocation / torch.where(target > 0, target, torch.ones_like(target))
    return torch.where(target > 0, ratio, torch.ones_like(ratio))


def mre(values: torch.Tensor, tau: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(H, E, inc_rate)`` per row: the minimum reallocation of excess, the total excess and the
    share of agents outside the band (paper 003 Eq. 2-3 and section 3.2.3)."""
    x = values.to(torch.float64)
    n = x.shape[-1]
    mean = x.mean(dim=-1, keepdim=True)
    excess = (x - mean).abs() - tau * mean  # paper 003 Eq. (2), before the [.]_+
    excess = torch.where(excess <= EXCESS_RTOL * (1.0 + tau) * mean, 0.0, excess)
    total = excess.sum(dim=-1)
    h = 0.5 * (excess - total.unsqueeze(-1) / n).abs().sum(dim=-1)  # paper 003 section 3.2.3
    inc_rate = (excess > 0).to(torch.float64).mean(dim=-1)  # paper 003 Eq. (3)
    return h, total, inc_rate


def mre_normalised(values: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """``H / N`` per row (paper 003 section 3.2.3)."""
    return mre(values, tau)[0] / values.shape[-1]


def cv(values: torch.Tensor) -> torch.Tensor:
    """Coefficient of variation per row (population std / mean; paper 003 Eq. 7a); 0 for a
    row of zeros or of equal values."""
    x = values.to(torch.float64)
    mean = x.mean(dim=-1)
    std = x.std(dim=-1, correction=0)
    value = std / mean.abs().clamp_min(1e-300)
    constant = x.amax(dim=-1) == x.amin(dim=-1)
    return torch.where(constant, torch.zeros_like(value), value)
