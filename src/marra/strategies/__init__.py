"""Classical allocation strategies, integer rounding and transfer plans.

Minimal re-exports so the allocators can be used; the lead engineer extends this module.
"""

from marra.strategies.allocators import (
    DEFAULT_BRACKETS,
    STRATEGIES,
    WEIGHTS,
    Allocator,
    GreedyAllocator,
    HoldAllocator,
    HybridAllocator,
    NashWelfareAllocator,
    QPAllocator,
    StrategyOptionError,
    TaxationAllocator,
    allocate,
    get_strategy,
    progressive_tax,
    shortfall_spread,
    water_fill,
)
from marra.strategies.integer import round_largest_remainder, round_separable_convex

__all__ = [
    "DEFAULT_BRACKETS",
    "STRATEGIES",
    "WEIGHTS",
    "Allocator",
    "GreedyAllocator",
    "HoldAllocator",
    "HybridAllocator",
    "NashWelfareAllocator",
    "QPAllocator",
    "StrategyOptionError",
    "TaxationAllocator",
    "allocate",
    "get_strategy",
    "progressive_tax",
    "round_largest_remainder",
    "round_separable_convex",
    "shortfall_spread",
    "water_fill",
]
