"""Counter-based random numbers for batched environments.

A batched environment must give every copy its own reproducible random stream while stepping
all copies with tensor operations. One ``torch.Generator`` shared by all copies would couple
them (a copy's draws would depend on when the others reset), and one generator per copy needs a
Python loop. Instead every draw is a pure function of ``(copy key, counters, index)``: the key
comes from the copy's ``SeedSequence`` (so it follows marra's seeding scheme), the counters are
e.g. the step and a stream number, and the index is the position in the drawn tensor. The mixing
function is SplitMix64 (Steele, Lea and Flood 2014), evaluated in int64 tensor arithmetic.

Draws are therefore identical on every device and machine, independent between copies, and do
not depend on the order in which anything is computed.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["splitmix64", "CounterRNG", "copy_keys"]

_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)
_MUL1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_MUL2 = 0x94D049BB133111EB - (1 << 64)
_STREAM = 0xD1B54A32D192ED03 - (1 << 64)


def _shr(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's ``>>`` is arithmetic)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def splitmix64(x: torch.Tensor) -> torch.Tensor:
    """The SplitMix64 finaliser of ``x + golden`` on int64 tensors (wrapping arithmetic)."""
    z = x + _GOLDEN
    z = (z ^ _shr(z, 30)) * _MUL1
    z = (z ^ _shr(z, 27)) * _MUL2
    return z ^ _shr(z, 31)


def copy_keys(seeds: list[np.random.SeedSequence]) -> list[int]:
    """One signed 64-bit key per seed sequence."""
    keys = []
    for sequence in seeds:
        value = int(sequence.generate_state(1, np.uint64)[0])
        keys.append(value - (1 << 64) if value >= 1 << 63 else value)
    return keys


class CounterRNG:
    """Random draws ``(num_envs, *shape)`` from per-copy keys and counters.

    ``keys`` ``(num_envs,)`` int64; set the keys of re-seeded copies with :meth:`set_keys`.
    Every method takes ``counter``: an int or an ``(num_envs,)`` int64 tensor (e.g. each copy's
    step) and ``stream``: an int distinguishing the draws made at one counter value.
    """

    def __init__(self, num_envs: int, device: torch.device) -> None:
        self.keys = torch.zeros(num_envs, dtype=torch.int64, device=device)
        self.device = device

    def set_keys(self, rows: np.ndarray, keys: list[int]) -> None:
        index = torch.as_tensor(rows, device=self.device)
        if self.keys.is_inference() and not torch.is_inference_mode_enabled():
            self.keys = self.keys.clone()
        self.keys[index] = torch.as_tensor(keys, dtype=torch.int64, device=self.device)

    def bits(
        self, shape: tuple[int, ...], counter: int | torch.Tensor, stream: int = 0
    ) -> torch.Tensor:
        """Uniform random int64 ``(num_envs, *shape)``."""
        e = self.keys.shape[0]
        counter_t = torch.as_tensor(counter, dtype=torch.int64, device=self.device)
        counter_t = counter_t.expand(e) if counter_t.ndim == 0 else counter_t
        base = splitmix64(self.keys ^ splitmix64(counter_t * _STREAM + int(stream)))
        count = int(np.prod(shape)) if shape else 1
        index = torch.arange(count, dtype=torch.int64, device=self.device)
        out = splitmix64(base.unsqueeze(1) + index.unsqueeze(0) * _GOLDEN)
        return out.reshape((e, *shape))

    def uniform(
        self, shape: tuple[int, ...], counter: int | torch.Tensor, stream: int = 0
    ) -> torch.Tensor:
        """Uniform float64 in ``[0, 1)``, ``(num_envs, *shape)`` (53 random bits each)."""
        return _shr(self.bits(shape, counter, stream), 11).to(torch.float64) * (2.0**-53)

    def normal(
        self, shape: tuple[int, ...], counter: int | torch.Tensor, stream: int = 0
    ) -> torch.Tensor:
        """Standard normal float64 ``(num_envs, *shape)`` (Box-Muller on the uniform streams
        ``2 * stream + 1`` and ``2 * stream + 2``: do not draw uniforms from those streams at the
        same counter, or keep normal and uniform stream numbers in separate ranges)."""
        u1 = self.uniform(shape, counter, 2 * stream + 1).clamp_min(2.0**-53)
        u2 = self.uniform(shape, counter, 2 * stream + 2)
        return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * torch.pi * u2)

    def poisson(
        self,
        rate: torch.Tensor,
        counter: int | torch.Tensor,
        stream: int = 0,
        max_count: int = 64,
    ) -> torch.Tensor:
        """Poisson counts with ``rate`` ``(num_envs, *shape)`` by inversion of the CDF, capped at
        ``max_count`` (choose it far above the largest rate: the capped mass is then tiny)."""
        u = self.uniform(tuple(rate.shape[1:]), counter, stream)
        rate = rate.to(torch.float64)
        k = torch.arange(max_count + 1, dtype=torch.float64, device=self.device)
        # log pmf(k) = k log(rate) - rate - log(k!)
        log_pmf = (
            k * torch.log(rate.unsqueeze(-1).clamp_min(1e-300)) - rate.unsqueeze(-1)
        ) - torch.lgamma(k + 1.0)
        cdf = torch.cumsum(torch.exp(log_pmf), dim=-1)
        count = (cdf < u.unsqueeze(-1)).sum(dim=-1)
        return torch.where(rate > 0, count, 0).clamp(max=max_count)
