"""Classical allocation strategies, integer rounding and transfer plans.

Every allocator is called the same way, ``allocate(network, strategy, *, transfer_budget=None,
integer=True, shortfall=False, **options) -> y``; ``plan(network, y)`` then says who sends how
many staff to whom. ``allocate_within_mre(network, max_mre, tau=...)`` (or
``MREConstrainedQP(max_mre, tau).allocate(network, ...)``) is the QP with a bound on the
normalised MRE of coverage. Definitions and formulas: ``docs/strategies.md``.
"""

from marra.hospital.strategies.allocators import (
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
from marra.hospital.strategies.equity import (
    EquityPlan,
    MREConstrainedQP,
    MREInfeasibleError,
    allocate_within_mre,
    smallest_max_mre,
)
from marra.hospital.strategies.integer import (
    quadratic_marginal_cost,
    round_largest_remainder,
    round_separable_convex,
)
from marra.hospital.strategies.transfer_plan import Plan, haversine_km, plan, write_plan_csv

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
    "quadratic_marginal_cost",
    "round_largest_remainder",
    "round_separable_convex",
    "shortfall_spread",
    "water_fill",
    "Plan",
    "haversine_km",
    "plan",
    "write_plan_csv",
    "EquityPlan",
    "MREConstrainedQP",
    "MREInfeasibleError",
    "allocate_within_mre",
    "smallest_max_mre",
]
