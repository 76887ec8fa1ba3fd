"""``ride-hailing``: order dispatch in the synthetic hexagonal city of paper 002 (DyPS).

One agent per cell of an ``n x n`` grid with the hexagonal offset adjacency of the public DyPS
simulator (``tsinghua-fib-lab/DyPS``, ``simulator/``; ``tools/create_envs.py``). Drivers serve
orders that start in their own cell; a served driver is busy for the order's duration and then
reappears idle at the order's destination. ``docs/envs/ride-hailing.md`` states every rule with
its source, the observation, the action, the reward scale and the baselines.

Timeline of one step ``t`` (10 minutes; 144 steps make a day), per copy:

1. the agents see the city: idle drivers and the candidate orders of each cell (orders created
   at ``t`` and at ``t - 1`` that nobody served yet);
2. each cell sends a score per candidate slot (slot 0 is "stay"); the dispatch rule turns the
   scores into served orders, at most ``min(idle, max_drivers)`` per cell;
3. every served order earns its price (the cell's reward) and sends its driver on a trip of
   ``duration`` steps to the destination;
4. unserved orders created at ``t - 1`` expire (an order waits at most 2 decision steps);
5. ``t`` advances: drivers whose trips end at ``t + 1`` become idle at their destinations, and
   the orders of step ``t + 1`` arrive (Poisson counts per cell).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from .base import (
    ActionSpec,
    Baseline,
    EnvError,
    EnvSpec,
    MultiAgentEnv,
    _writable,
    check_choice,
    check_int,
    check_number,
)
from .rng import _GOLDEN, _STREAM, CounterRNG, splitmix64

__all__ = [
    "RideHailingEnv",
    "CityRecipe",
    "CITIES",
    "ORDER_DURATION_WEIGHTS",
    "ORDER_PRICE",
    "CELL_FEATURES",
    "SLOT_FEATURES",
    "PRIORITY_BASELINES",
    "hex_neighbours",
    "ring_distances",
    "public_order_rates",
]


@dataclass(frozen=True)
class CityRecipe:
    """How the public code builds a city: ``size x size`` cells, a base order rate per cell drawn
    from ``randint(base_low, base_high)`` and a maximum order duration (its ``l_max``)."""

    size: int
    base_low: int
    base_high: int
    max_duration: int


#: The two cities of paper 002 Table 1: ``"1"`` is ``create_OD_36`` (6x6, l_max 3), ``"2"`` is
#: ``create_OD`` (10x10, l_max 5) of the public ``tools/create_envs.py``.
CITIES = {
    "1": CityRecipe(size=6, base_low=2, base_high=10, max_duration=3),
    "2": CityRecipe(size=10, base_low=0, base_high=10, max_duration=5),
}
#: Probabilities of order durations 1..9 steps in the public code (``order_time``); a city uses
#: the first ``max_duration`` of them, renormalised.
ORDER_DURATION_WEIGHTS = (0.2, 0.2, 0.15, 0.15, 0.1, 0.1, 0.05, 0.04, 0.01)
#: (mean, std) of an order's price by duration 1..5 steps (the public ``order_price``).
ORDER_PRICE = ((10.17, 3.34), (15.02, 6.90), (23.22, 11.63), (32.14, 16.20), (40.99, 20.69))
#: Width of the price bins of the observation, in price units (the public code's 1.5 on its
#: prices scaled by 0.1).
PRICE_BIN = 15.0
#: Histogram bins of the observation (prices, durations, destination rings), the same in both
#: cities so that one policy layout fits both.
BINS = 5
#: Decision steps an order waits for a driver (its creation step and the next).
WAIT_STEPS = 2
#: Per-cell features of the observation, in order (see ``docs/envs/ride-hailing.md``).
CELL_FEATURES = (
    "time",
    "cell",
    "idle_drivers",
    "orders",
    "supply_demand",  # idle / max(1, orders)
    "supply_demand_gap",  # |idle / max(1, orders) - city idle / max(1, city orders)|
    *(f"price_bin_{i}" for i in range(BINS)),
    *(f"duration_{i + 1}" for i in range(BINS)),
    *(f"ring_{i + 1}" for i in range(BINS)),
)
#: Features of each candidate order slot (``slot_features=True``), in order.
SLOT_FEATURES = ("valid", "price", "duration", "ring", "waited", "balance_gain")
#: Rule-based baselines that serve orders by a priority (besides ``random``).
PRIORITY_BASELINES = ("greedy", "nearest", "shortest", "fifo", "none")

#: columns of the per-slot order table (the first four are the fixed slot features)
_FIELDS = ("one", "price_100", "duration_5", "ring_5", "price", "duration", "dest", "ring",
           "target", "bin_price", "bin_duration", "bin_ring")  # fmt: skip
_SCORE_BOUND = 20.0  # action bounds: e^-40 separates a baseline's "serve" from its "skip"
_U24 = 2.0**-24


# --------------------------------------------------------------------------- the map
def hex_neighbours(row: int, col: int, size: int) -> list[int]:
    """The up to 6 neighbours of cell ``(row, col)`` of a ``size x size`` grid with the public
    code's hexagonal offset layout (``get_neighbor_index``: even columns reach the row below on
    their diagonals, odd columns the row above), as flat indices ``row * size + col``."""
    if col % 2 == 0:
        candidates = [(row - 1, col), (row, col + 1), (row + 1, col + 1), (row + 1, col),
                      (row + 1, col - 1), (row, col - 1)]  # fmt: skip
    else:
        candidates = [(row - 1, col), (row - 1, col + 1), (row, col + 1), (row + 1, col),
                      (row, col - 1), (row - 1, col - 1)]  # fmt: skip
    return [r * size + c for r, c in candidates if 0 <= r < size and 0 <= c < size]


def ring_distances(size: int) -> np.ndarray:
    """Ring (hop) distance between every pair of cells ``(size**2, size**2)`` int64, by
    breadth-first search over :func:`hex_neighbours` (the public ``get_layers_neighbors``)."""
    n = size * size
    neighbours = [hex_neighbours(i // size, i % size, size) for i in range(n)]
    dist = np.full((n, n), -1, dtype=np.int64)
    for source in range(n):
        dist[source, source] = 0
        queue = deque([source])
        while queue:
            cell = queue.popleft()
            for other in neighbours[cell]:
                if dist[source, other] < 0:
                    dist[source, other] = dist[source, cell] + 1
                    queue.append(other)
    return dist


def public_order_rates(recipe: CityRecipe, steps: int = 144) -> np.ndarray:
    """The Poisson order rate of every cell at every step ``(steps, size**2)`` float64, as the
    public code draws it: ``np.random.seed(0)``, a base ``randint(base_low, base_high)`` per
    cell, then per step a disturbance ``randint(-2, 3)`` per cell, clipped at 0."""
    legacy = np.random.RandomState(0)  # the public create_OD / create_OD_36 seed
    n = recipe.size * recipe.size
    base = legacy.randint(recipe.base_low, recipe.base_high, n)
    rates = np.empty((steps, n))
    for step in range(steps):
        rates[step] = np.maximum(base + legacy.randint(-2, 3, n), 0)
    return rates


# --------------------------------------------------------------------------- random draws
class _IndexedRNG(CounterRNG):
    """:class:`CounterRNG` with draws at explicit ``(row, index)`` positions, so that only the
    entries needed this step are computed while each keeps the value it would have in a full
    ``(num_envs, *shape)`` draw of :meth:`CounterRNG.bits`."""

    def bits_at(
        self, rows: torch.Tensor, index: torch.Tensor, counter: torch.Tensor, stream: int
    ) -> torch.Tensor:
        """Uniform int64 at copies ``rows`` and flat positions ``index`` (1-D, same length);
        ``counter`` ``(num_envs,)``."""
        base = splitmix64(self.keys ^ splitmix64(counter * _STREAM + int(stream)))
        return splitmix64(base[rows] + index * _GOLDEN)


def _two_uniforms(bits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent float32 uniforms in ``[0, 1)`` with 24 random bits each (exact in
    float32) from one int64 draw."""
    high = (bits >> 40) & ((1 << 24) - 1)
    low = (bits >> 16) & ((1 << 24) - 1)
    return high.to(torch.float32) * _U24, low.to(torch.float32) * _U24


def _poisson(rate: torch.Tensor, u: torch.Tensor, cap: int) -> torch.Tensor:
    """Poisson counts by inversion of the CDF, ``min {k: F(k) > u}``, capped at ``cap``; one
    ``(num_envs, n)`` pass per value of k (the loop stops when every count is found)."""
    pmf = torch.exp(-rate)
    cdf = pmf.clone()
    count = torch.zeros(rate.shape, dtype=torch.int64, device=rate.device)
    for k in range(cap):
        below = cdf <= u
        if k % 4 == 0 and not bool(below.any()):
            break
        count += below.to(torch.int64)
        pmf = pmf * rate / (k + 1)
        cdf = cdf + pmf
    return count


def _poisson_table(rates: torch.Tensor, cap: int, limit: int = 64 * 2**20) -> torch.Tensor | None:
    """The Poisson CDF ``F(0..cap)`` of every rate ``(period, n, cap + 1)`` float64 (None when
    it would take more than ``limit`` bytes; the counts are then found by :func:`_poisson`)."""
    if rates.numel() * (cap + 1) * 8 > limit:
        return None
    k = torch.arange(cap + 1, dtype=torch.float64, device=rates.device)
    lam = rates.unsqueeze(-1)
    log_pmf = k * torch.log(lam.clamp_min(1e-300)) - lam - torch.lgamma(k + 1.0)
    cdf = torch.cumsum(torch.exp(log_pmf), dim=-1)
    return torch.where(lam > 0, cdf, 1.0).contiguous()  # rate 0: always no order


def _copy_words(sequence: np.random.SeedSequence) -> tuple[int, int]:
    """Two signed 64-bit keys from a seed sequence (dispatch draws, order draws)."""
    words = [int(w) for w in sequence.generate_state(2, np.uint64)]
    return tuple(w - (1 << 64) if w >= 1 << 63 else w for w in words)  # type: ignore[return-value]


# --------------------------------------------------------------------------- the environment
class RideHailingEnv(MultiAgentEnv):
    """Order dispatch in a hexagonal city, one agent per cell (see the module docstring).

    Action (``continuous(dim=max_orders + 1, [-20, 20])`` per cell): a score per candidate slot;
    slot 0 is "stay", slot ``k >= 1`` the cell's k-th order slot (``slot_mask()`` and the
    observation's slot features say which hold an order; scores of empty slots are ignored).
    ``dispatch="sample"`` (the public code's rule): the cell's up to ``max_drivers`` idle drivers
    draw one after another from ``softmax`` of the scores over the stay slot and the remaining
    orders; an order drawn is served and leaves the pool, "stay" stays in it.
    ``dispatch="topk"``: the same with each driver taking the highest remaining score, so a cell
    serves its orders that score above its stay slot, best first, up to its drivers.

    Reward: each cell's GMV served this step (sum of the prices of its served orders) divided
    by ``reward_scale`` (``reward="agent"``), or the mean over cells given to every cell
    (``reward="team"``). Metrics: ``gmv`` (the episode's GMV in the paper's units: price units,
    as paper 002 Tables 2, 3 and 7), ``orr`` (served orders / orders created), ``served``,
    ``orders``, ``expired``, ``overflow`` (orders that found every slot of their cell full).
    Outcome: each cell's GMV over the episode. Baselines: ``greedy`` (highest price first),
    ``nearest`` (nearest destination first), ``shortest`` (shortest trip first), ``fifo``
    (oldest order first), ``none`` (always stay) and ``random``.

    Args:
        city: ``"1"`` (6x6 cells, orders of 1-3 steps, the public ``create_OD_36``) or ``"2"``
            (10x10 cells, 1-5 steps, ``create_OD``): paper 002 Table 1's Ride-Hailing (1), (2).
        size: cells per side, overriding the city's (its rate recipe and durations are kept;
            for small test cities); 2 to 32.
        drivers_per_cell: idle drivers in every cell at the start of an episode (default 10).
        horizon: steps per episode (default 144: one day of 10-minute steps; longer horizons
            repeat the day's rates).
        dispatch: ``"sample"`` (default, the public code's per-driver draws) or ``"topk"``
            (deterministic: serve orders scored above "stay", best first).
        fixed_orders: True: every copy and every episode sees the same order stream (a
            function of the reset seed only), as the public code (its draws are re-seeded from
            cell and step); False (default): a new stream per copy and episode.
        demand_scale: factor on every order rate (default 1; 0 makes no orders).
        max_orders: candidate order slots per cell (default 50, the public code's); an order
            arriving at a full cell is lost (counted in ``overflow``).
        max_drivers: most drivers of one cell that take orders in one step (default 50, the
            public code's cap); None for no cap.
        slot_features: append the features of every order slot to the observation (default
            True: without them a policy cannot tell its slots apart).
        reward: ``"agent"`` (default: each cell its own GMV) or ``"team"`` (the mean over
            cells, for every cell).
        reward_scale: positive divisor of the reward in price units (default 50: the public
            training reward, its prices times 0.1 divided by its reward_scale 5).

    Attributes:
        idle: idle drivers per cell ``(num_envs, n)`` int64.
        busy: drivers on a trip ``(num_envs, max_duration, n)`` int64: ``busy[:, k, j]``
            become idle at cell ``j`` in ``k + 1`` steps (``idle + busy`` sums to the fleet).
        order_valid, order_waited: ``(num_envs, n, max_orders)`` bool: the slot holds an order;
            the order was created at the previous step (it expires if unserved now).
        order_price, order_duration, order_dest, order_ring: the orders' prices, durations,
            destinations and rings to the destination ``(num_envs, n, max_orders)``.
        ring: ring distance between cells ``(n, n)``; rates: order rates ``(144, n)``.
        width: order slots in use (the highest occupied slot + 1 over all copies).
    """

    def __init__(
        self,
        city: str = "1",
        size: int | None = None,
        drivers_per_cell: int = 10,
        horizon: int = 144,
        dispatch: Literal["sample", "topk"] = "sample",
        fixed_orders: bool = False,
        demand_scale: float = 1.0,
        max_orders: int = 50,
        max_drivers: int | None = 50,
        slot_features: bool = True,
        reward: Literal["agent", "team"] = "agent",
        reward_scale: float = 50.0,
        *,
        num_envs: int = 1,
        device: str | torch.device = "cpu",
        seed: int | None = None,
        autoreset: bool = False,
    ) -> None:
        super().__init__(num_envs=num_envs, device=device, seed=seed, autoreset=autoreset)
        if isinstance(city, int) and not isinstance(city, bool):
            city = str(city)
        self.city = check_choice("city", city, tuple(CITIES))
        recipe = CITIES[self.city]
        self.size = recipe.size if size is None else check_int("size", size, minimum=2,
                                                                maximum=32)  # fmt: skip
        self.n = self.size * self.size
        self.max_duration = recipe.max_duration
        self.drivers_per_cell = check_int("drivers_per_cell", drivers_per_cell, minimum=0,
                                          maximum=10**6)  # fmt: skip
        self._horizon = check_int("horizon", horizon, maximum=10**7)
        self.dispatch = check_choice("dispatch", dispatch, ("sample", "topk"))
        if not isinstance(fixed_orders, bool):
            raise EnvError(f"fixed_orders: must be True or False, got {fixed_orders!r}")
        self.fixed_orders = fixed_orders
        self.demand_scale = check_number("demand_scale", demand_scale, minimum=0.0)
        self.max_orders = check_int("max_orders", max_orders, maximum=10_000)
        self.max_drivers = (
            None if max_drivers is None else check_int("max_drivers", max_drivers, maximum=10**6)
        )
        if not isinstance(slot_features, bool):
            raise EnvError(f"slot_features: must be True or False, got {slot_features!r}")
        self.slot_features = slot_features
        self.reward_mode = check_choice("reward", reward, ("agent", "team"))
        self.reward_scale = check_number("reward_scale", reward_scale, minimum=0.0, strict=True)
        self.recipe = recipe

        n, s, dev = self.n, self.max_orders, self.device
        # ------------------------------------------------------------- the city, fixed
        ring = ring_distances(self.size)
        self.ring = torch.as_tensor(ring, device=dev)
        rates = public_order_rates(CityRecipe(self.size, recipe.base_low, recipe.base_high,
                                              recipe.max_duration))  # fmt: skip
        self.rates = torch.as_tensor(rates * self.demand_scale, device=dev)
        self._poisson_cap = int(math.ceil(float(rates.max()) * self.demand_scale * 2 + 40))
        self._count_cdf = _poisson_table(self.rates, self._poisson_cap)
        weights = np.asarray(ORDER_DURATION_WEIGHTS[: self.max_duration])
        self.duration_probs = torch.as_tensor(weights / weights.sum(), device=dev)
        self._duration_cdf = torch.cumsum(self.duration_probs, 0)
        self._duration_cdf[-1] = 1.0 + 1e-12
        price = np.asarray(ORDER_PRICE[: self.max_duration])
        self._price_mean = torch.as_tensor(price[:, 0], device=dev)
        self._price_std = torch.as_tensor(price[:, 1], device=dev)
        # destinations of an order of duration d from cell i: the cells 1..d rings away
        table = np.zeros((n, self.max_duration, n), dtype=np.int64)
        count = np.zeros((n, self.max_duration), dtype=np.int64)
        for cell in range(n):
            for d in range(1, self.max_duration + 1):
                cells = np.flatnonzero((ring[cell] >= 1) & (ring[cell] <= d))
                table[cell, d - 1, : cells.size] = cells
                count[cell, d - 1] = cells.size
        self._dest_table = torch.as_tensor(table.reshape(-1), device=dev)
        self._dest_count = torch.as_tensor(count, device=dev)

        slot_dim = len(SLOT_FEATURES) * s if self.slot_features else 0
        obs_dim = len(CELL_FEATURES) + slot_dim
        state_dim = 1 + n * (2 + self.max_duration)
        obs_names = list(CELL_FEATURES)
        if self.slot_features:
            obs_names += [f"slot{k + 1}_{f}" for k in range(s) for f in SLOT_FEATURES]
        self._spec = EnvSpec(
            name="ride-hailing",
            num_agents=n,
            agent_ids=tuple(f"cell_{i}" for i in range(n)),
            obs_dim=obs_dim,
            state_dim=state_dim,
            action=ActionSpec.continuous(s + 1, -_SCORE_BOUND, _SCORE_BOUND),
            horizon=self._horizon,
            reward=self.reward_mode,
            metrics=("gmv", "orr", "served", "orders", "expired", "overflow"),
            baselines=(*PRIORITY_BASELINES[:4], "random", "none"),
            obs_names=tuple(obs_names),
            outcome="each cell's GMV over the episode (price units)",
            any_num_agents=True,
        )

        # ------------------------------------------------------------- the state
        e = self.num_envs
        i64 = {"dtype": torch.int64, "device": dev}
        self.idle = torch.zeros((e, n), **i64)
        #: busy[:, k, j]: drivers on a trip that ends at cell j in k + 1 steps
        self.busy = torch.zeros((e, self.max_duration, n), **i64)
        self.order_valid = torch.zeros((e, n, s), dtype=torch.bool, device=dev)
        self.order_waited = torch.zeros((e, n, s), dtype=torch.bool, device=dev)
        # everything fixed about an order, written once when it arrives, one row of
        # ``_FIELDS`` float32 per slot (whole numbers are exact): its slot features, price,
        # duration, destination and ring, the busy-table index of its driver's arrival and its
        # three histogram bins (price, duration, ring) in the observation
        self._orders = torch.zeros((e, n, s, len(_FIELDS)), dtype=torch.float32, device=dev)
        # kept up to date as orders come and go: waiting orders and their histograms per cell
        self._waiting = torch.zeros((e, n), **i64)
        self._histogram = torch.zeros((e, n, 3 * BINS), dtype=torch.float32, device=dev)
        #: highest occupied order slot + 1 over all copies: slot tensors are used up to it
        self.width = 0
        self._dispatch_rng = _IndexedRNG(e, dev)
        self._order_rng = _IndexedRNG(e, dev)
        self._cell_gmv = torch.zeros((e, n), dtype=torch.float64, device=dev)
        # episode totals per copy: served, orders, expired, overflow, gmv
        self._totals = torch.zeros((e, 5), dtype=torch.float64, device=dev)
        self._cells = torch.arange(n, device=dev)
        self._slots = torch.arange(s, device=dev)
        self._rows = torch.arange(e, device=dev)

    _SLOT_TENSORS = (
        "order_valid", "order_waited", "_orders", "_waiting", "_histogram",
    )  # fmt: skip

    @property
    def spec(self) -> EnvSpec:
        return self._spec

    def _field(self, name: str, width: int | None = None) -> torch.Tensor:
        """One field of every order slot ``(num_envs, n, width)`` (a float32 view)."""
        return self._orders[:, :, :width, _FIELDS.index(name)]

    @property
    def order_price(self) -> torch.Tensor:
        """Price of the order in each slot ``(num_envs, n, max_orders)`` float32 (stale where
        ``order_valid`` is False)."""
        return self._field("price")

    @property
    def order_duration(self) -> torch.Tensor:
        """Duration in steps of the order in each slot ``(num_envs, n, max_orders)`` int64."""
        return self._field("duration").to(torch.int64)

    @property
    def order_dest(self) -> torch.Tensor:
        """Destination cell of the order in each slot ``(num_envs, n, max_orders)`` int64."""
        return self._field("dest").to(torch.int64)

    @property
    def order_ring(self) -> torch.Tensor:
        """Rings from the order's cell to its destination ``(num_envs, n, max_orders)`` int64."""
        return self._field("ring").to(torch.int64)

    def _make_writable(self, names: tuple[str, ...]) -> None:
        for name in names:
            setattr(self, name, _writable(getattr(self, name)))

    # ------------------------------------------------------------------ reset
    def _reset_copies(self, rows: np.ndarray, seeds: list[np.random.SeedSequence]) -> None:
        words = [_copy_words(sequence) for sequence in seeds]
        self._dispatch_rng.set_keys(rows, [w[0] for w in words])
        if self.fixed_orders:
            assert self._base_seed is not None
            order_key = _copy_words(np.random.SeedSequence(self._base_seed))[1]
            self._order_rng.set_keys(rows, [order_key] * len(rows))
        else:
            self._order_rng.set_keys(rows, [w[1] for w in words])
        index = torch.as_tensor(rows, device=self.device)
        self._make_writable(("idle", "busy", "order_valid", "order_waited", "_waiting",
                             "_histogram", "_cell_gmv", "_totals"))  # fmt: skip
        self.idle[index] = self.drivers_per_cell
        self.busy[index] = 0
        self.order_valid[index] = False
        self.order_waited[index] = False
        self._waiting[index] = 0
        self._histogram[index] = 0.0
        self._cell_gmv[index] = 0.0
        self._totals[index] = 0.0
        self._update_width()
        started = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        started[index] = True
        new, overflow = self._generate(started, torch.where(started, 0, self.t))
        self._totals[:, 1] += new.to(torch.float64)
        self._totals[:, 3] += overflow.to(torch.float64)

    def _update_width(self) -> None:
        """Shrink :attr:`width` to the highest slot any copy still uses."""
        used = self.order_valid[..., : self.width].any(dim=(0, 1)).nonzero()
        self.width = int(used.max()) + 1 if used.numel() else 0

    # ------------------------------------------------------------------ orders
    def _generate(self, active: torch.Tensor, step: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Orders of step ``step`` ``(num_envs,)`` for copies where ``active``: Poisson counts
        per cell, attributes per (cell, arrival index), placed in the free slots in arrival
        order. Returns the orders created and the orders lost to full cells ``(num_envs,)``."""
        period = self.rates.shape[0]
        rate = self.rates[step % period] * active.unsqueeze(1)  # (E, N)
        u = self._order_rng.uniform((self.n,), step, stream=0)
        counts = self._order_counts(step, active, rate, u)
        most = int(counts.max())
        if most == 0:
            zero = torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)
            return zero, zero
        width = min(self.max_orders, self.width + most)
        free = ~self.order_valid[..., :width]
        rank = torch.cumsum(free, dim=-1) - 1
        new = free & (rank < counts.unsqueeze(-1))
        overflow = (counts - new.sum(dim=-1)).sum(dim=1)
        e, cell, slot = new.nonzero(as_tuple=True)
        if e.numel():
            arrival = rank[e, cell, slot]
            index = cell * self.max_orders + arrival  # position in the (cell, arrival) stream
            u_duration, u_dest = _two_uniforms(self._order_rng.bits_at(e, index, step, 1))
            u1, u2 = _two_uniforms(self._order_rng.bits_at(e, index, step, 2))
            duration = torch.searchsorted(self._duration_cdf, u_duration.double(), right=True) + 1
            d0 = duration - 1
            choices = self._dest_count[cell, d0]
            pick = torch.minimum((u_dest * choices).to(torch.int64), choices - 1)
            dest = self._dest_table[(cell * self.max_duration + d0) * self.n + pick]
            normal = torch.sqrt(-2.0 * torch.log1p(-u1)) * torch.cos(2.0 * math.pi * u2)
            mean = self._price_mean[d0]
            price = mean + self._price_std[d0] * normal
            price = torch.where(price > 0, price, mean)  # the public code's replacement
            self._put_orders(e, cell, slot, price, duration, dest, waited=False)
        return counts.sum(dim=1), overflow

    def _order_counts(
        self, step: torch.Tensor, active: torch.Tensor, rate: torch.Tensor, u: torch.Tensor
    ) -> torch.Tensor:
        """Poisson counts ``(num_envs, n)`` by inversion, ``min {k: F(k) > u}``: a binary
        search in the precomputed CDF of every (step, cell) rate when it fits in memory."""
        if self._count_cdf is None:
            return _poisson(rate, u, self._poisson_cap)
        period = self.rates.shape[0]
        moment = step % period
        if bool((moment == moment[0]).all()):  # every copy at the same step: one table
            counts = torch.searchsorted(self._count_cdf[moment[0]], u.T.contiguous(), right=True).T
        else:
            table = self._count_cdf[moment]  # (E, N, cap + 1)
            counts = torch.searchsorted(table, u.unsqueeze(-1), right=True).squeeze(-1)
        return torch.where(active.unsqueeze(1), counts, 0)

    def _put_orders(
        self,
        e: torch.Tensor,
        cell: torch.Tensor,
        slot: torch.Tensor,
        price: torch.Tensor,
        duration: torch.Tensor,
        dest: torch.Tensor,
        waited: bool,
    ) -> None:
        self._make_writable(self._SLOT_TENSORS)
        n, s = self.n, self.max_orders
        where = e * n + cell  # flat (copy, cell)
        at = where * s + slot  # flat (copy, cell, slot)
        ring = self.ring.view(-1)[cell * n + dest]
        self.order_valid.view(-1)[at] = True
        self.order_waited.view(-1)[at] = waited
        price_bin = (price / PRICE_BIN).to(torch.int64).clamp(0, BINS - 1)
        bins = torch.stack([price_bin, duration.clamp(max=BINS) - 1 + BINS,
                            ring.clamp(1, BINS) - 1 + 2 * BINS], dim=-1)  # fmt: skip
        whole = torch.stack([duration, dest, ring, (duration - 1) * n + dest, *bins.unbind(-1)],
                            dim=-1).to(torch.float64)  # fmt: skip
        fixed = torch.stack([torch.ones_like(price), price / 100.0, duration / BINS, ring / BINS,
                             price], dim=-1)  # fmt: skip
        rows = torch.cat([fixed, whole], dim=-1)
        self._orders.view(-1, len(_FIELDS))[at] = rows.to(torch.float32)
        self._count_orders(where, bins, +1)
        self.width = max(self.width, int(slot.max()) + 1)

    def _count_orders(self, where: torch.Tensor, bins: torch.Tensor, sign: int) -> None:
        """Add (``sign=+1``) or remove (``-1``) orders at flat cells ``where`` ``(M,)`` with
        histogram bins ``bins`` ``(M, 3)`` in the per-cell counts."""
        ones = torch.full(where.shape, sign, dtype=torch.int64, device=self.device)
        self._waiting.view(-1).scatter_add_(0, where, ones)
        cells = (where.unsqueeze(1) * (3 * BINS) + bins).flatten()
        signs = torch.full(cells.shape, float(sign), device=self.device)
        self._histogram.view(-1).scatter_add_(0, cells, signs)

    def add_order(
        self,
        cell: int,
        price: float,
        duration: int,
        dest: int,
        *,
        copy: int | None = None,
        waited: bool = False,
    ) -> torch.Tensor:
        """Put one order into the first free slot of ``cell`` in copy ``copy`` (None: in every
        copy), for scripted scenarios and tests; it counts in the episode's ``orders``.
        ``waited=True`` marks an order created at the previous step (it expires if unserved
        now). Returns the slot of each copy touched ``(k,)`` int64 (action slot ``slot + 1``).

        Raises:
            EnvError: a bad copy, cell, duration, destination or price, or a full cell.
        """
        cell = check_int("cell", cell, minimum=0, maximum=self.n - 1)
        duration = check_int("duration", duration, minimum=1, maximum=self.max_duration)
        dest = check_int("dest", dest, minimum=0, maximum=self.n - 1)
        price = check_number("price", price, minimum=0.0)
        if copy is None:
            copies = self._rows
        else:
            copies = torch.tensor(
                [check_int("copy", copy, minimum=0, maximum=self.num_envs - 1)],
                device=self.device,
            )
        free = ~self.order_valid[copies, cell]  # (k, max_orders)
        if not bool(free.any(dim=-1).all()):
            raise EnvError(f"cell: cell {cell} has no free order slot (max_orders)")
        slots = free.to(torch.int8).argmax(dim=-1)  # the first free slot
        k = copies.numel()
        as_index = {"dtype": torch.int64, "device": self.device}
        self._put_orders(
            copies,
            torch.full((k,), cell, **as_index),
            slots,
            torch.full((k,), price, dtype=torch.float64, device=self.device),
            torch.full((k,), duration, **as_index),
            torch.full((k,), dest, **as_index),
            waited=bool(waited),
        )
        self._totals = _writable(self._totals)
        self._totals[copies, 1] += 1.0
        return slots

    def slot_mask(self) -> torch.Tensor:
        """Which action slots hold a choice ``(num_envs, num_agents, max_orders + 1)`` bool:
        slot 0 ("stay") always, slot k when the cell's k-th order slot holds an order."""
        stay = torch.ones((self.num_envs, self.n, 1), dtype=torch.bool, device=self.device)
        return torch.cat([stay, self.order_valid], dim=-1)

    def available_drivers(self) -> torch.Tensor:
        """Drivers of each cell that take orders this step ``(num_envs, num_agents)`` int64:
        ``min(idle, max_drivers)``."""
        if self.max_drivers is None:
            return self.idle
        return self.idle.clamp(max=self.max_drivers)

    # ------------------------------------------------------------------ dispatch
    def _dispatch(self, scores: torch.Tensor) -> torch.Tensor:
        """Served order slots ``(num_envs, n, width)`` bool from the scores
        ``(num_envs, n, max_orders + 1)`` (slot 0: stay). Only cells with both an available
        driver and an order are computed."""
        e, n, s, w = self.num_envs, self.n, self.max_orders, self.width
        served = torch.zeros((e * n, w), dtype=torch.bool, device=self.device)
        if w == 0:
            return served.view(e, n, w)
        available = self.available_drivers()
        active = ((available > 0) & (self._waiting > 0)).view(-1).nonzero().squeeze(1)
        if not active.numel():
            return served.view(e, n, w)
        valid = self.order_valid.view(e * n, s)[active, :w]  # (R, w)
        row_scores = scores.reshape(e * n, s + 1)[active, : w + 1]  # any strides
        stay, order_scores = row_scores[:, :1], row_scores[:, 1:]
        drivers = available.view(-1)[active].unsqueeze(1)
        if self.dispatch == "topk":
            # each driver takes the best remaining choice; once "stay" is best, all stay
            key = torch.where(valid & (order_scores > stay), order_scores, -math.inf)
            sorted_key, order = torch.sort(key, dim=-1, descending=True, stable=True)
            take = torch.isfinite(sorted_key) & (self._slots[:w] < drivers)
        else:
            take, order = self._sample(active, valid, stay, order_scores, drivers)
        served[active] = torch.zeros_like(valid).scatter(-1, order, take)
        return served.view(e, n, w)

    def _sample(
        self,
        active: torch.Tensor,
        valid: torch.Tensor,
        stay: torch.Tensor,
        order_scores: torch.Tensor,
        drivers: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The public code's rule on the active cells ``(R,)``: drivers draw in turn from
        softmax over {stay} + the remaining orders; a drawn order leaves the pool, "stay" does
        not. The orders come out in Plackett-Luce order (Gumbel keys), and the draws spent on
        the (k+1)-th order are geometric with success probability ``R_k / (R_k + p_stay)``,
        ``R_k`` the weight of the orders still in the pool. Returns which sorted positions are
        served and the sort order ``(R, width)``."""
        f32 = torch.float32
        logits = torch.where(valid, order_scores.to(f32), -math.inf)
        stay = stay.to(f32)
        top = torch.maximum(stay, logits.amax(dim=-1, keepdim=True))
        weight_stay = torch.exp(stay - top)
        weight = torch.exp(logits - top)  # 0 on empty slots
        # one draw per order, at position (cell, slot) of its copy's stream of this step
        row, slot = valid.nonzero(as_tuple=True)
        at = active[row]
        base = self._dispatch_rng.bits((), self.t, stream=0)  # one key per copy and step
        bits = splitmix64(base[at // self.n] + ((at % self.n) * self.max_orders + slot) * _GOLDEN)
        u_gumbel, u_tries = _two_uniforms(bits)
        gumbel = torch.zeros(valid.shape, dtype=f32, device=valid.device)
        gumbel[row, slot] = -torch.log(-torch.log(u_gumbel.clamp_min(_U24)))
        u_geometric = torch.zeros(valid.shape, dtype=f32, device=valid.device)
        u_geometric[row, slot] = u_tries
        sorted_key, order = torch.sort(logits + gumbel, dim=-1, descending=True, stable=True)
        sorted_weight = weight.gather(-1, order)
        before = torch.cumsum(sorted_weight, dim=-1) - sorted_weight
        remaining = (weight.sum(dim=-1, keepdim=True) - before).clamp_min(0.0)
        success = remaining / (remaining + weight_stay)
        # draws until a success: 1 + floor(log(1 - u) / log(1 - q)) (q = 1: exactly 1)
        u_sorted = u_geometric.gather(-1, order)  # the draw of the order at each position
        tries = 1.0 + torch.floor(torch.log1p(-u_sorted) / torch.log1p(-success))
        tries = torch.where(success > 0, tries, math.inf)
        take = torch.isfinite(sorted_key) & (torch.cumsum(tries, dim=-1) <= drivers)
        return take, order

    # ------------------------------------------------------------------ step
    def step(self, actions: Any) -> Any:
        """Dispatch in every copy: ``actions (num_envs, num_agents, max_orders + 1)`` scores
        (slot 0 stay); see :class:`RideHailingEnv`. ``info`` holds ``(num_envs,)`` tensors
        ``gmv`` (this step, price units), ``served``, ``new_orders`` (orders of the next step),
        ``expired``, ``overflow``, ``idle`` and ``busy`` (drivers after the step), and
        ``cell_gmv``, ``cell_served`` ``(num_envs, num_agents)``."""
        return super().step(actions)

    def _transition(
        self, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        e, n, w, L = self.num_envs, self.n, self.width, self.max_duration
        self._make_writable(self._SLOT_TENSORS)
        served = self._dispatch(actions)
        cell_gmv = (self._field("price", w) * served).sum(dim=-1).to(torch.float64)
        served_per_cell = served.sum(dim=-1)
        self.idle = self.idle - served_per_cell
        # a served driver reappears idle at the destination after the order's duration
        rows, cells, slots = served.nonzero(as_tuple=True)
        at = (rows * n + cells) * self.max_orders + slots
        target = self._orders.view(-1, len(_FIELDS))[at, _FIELDS.index("target")]
        arrivals = rows * (L * n) + target.to(torch.int64)
        busy = (
            self.busy.flatten()
            .index_put((arrivals,), torch.ones_like(arrivals), accumulate=True)
            .view(e, L, n)
        )
        # orders: served ones leave, the ones that waited their last step expire
        valid = self.order_valid[..., :w] & ~served
        expired_slots = valid & self.order_waited[..., :w]
        valid = valid & ~expired_slots
        self.order_valid[..., :w] = valid
        self.order_waited[..., :w] = valid  # every order left has now waited a step
        rows, cells, slots = (served | expired_slots).nonzero(as_tuple=True)
        where = rows * n + cells
        self._make_writable(("_waiting", "_histogram"))
        bins = self._orders.view(-1, len(_FIELDS))[where * self.max_orders + slots, -3:]
        self._count_orders(where, bins.to(torch.int64), -1)
        self._update_width()
        # the clock moves: trips ending at t + 1 release their drivers
        self.idle = self.idle + busy[:, 0]
        self.busy = torch.cat([busy[:, 1:], torch.zeros_like(busy[:, :1])], dim=1)
        next_step = self.t + 1
        new, overflow = self._generate(next_step < self._horizon, next_step)

        served_total = served_per_cell.sum(dim=1).to(torch.float64)
        gmv = cell_gmv.sum(dim=1)
        expired = expired_slots.sum(dim=(1, 2)).to(torch.float64)
        self._cell_gmv = self._cell_gmv + cell_gmv
        self._totals = self._totals + torch.stack(
            [served_total, new.to(torch.float64), expired, overflow.to(torch.float64), gmv], 1
        )
        if self.reward_mode == "agent":
            reward = cell_gmv / self.reward_scale
        else:
            reward = (gmv / (n * self.reward_scale)).unsqueeze(1).expand(e, n)
        info: dict[str, Any] = {
            "gmv": gmv,
            "served": served_total,
            "new_orders": new.to(torch.float64),
            "expired": expired,
            "overflow": overflow.to(torch.float64),
            "idle": self.idle.sum(dim=1).to(torch.float64),
            "busy": self.busy.sum(dim=(1, 2)).to(torch.float64),
            "cell_gmv": cell_gmv,
            "cell_served": served_per_cell,
        }
        terminated = torch.zeros(e, dtype=torch.bool, device=self.device)
        return reward.to(torch.float32).contiguous(), terminated, info

    def _episode_metrics(self, done: torch.Tensor) -> dict[str, torch.Tensor]:
        served, orders, expired, overflow, gmv = self._totals.unbind(dim=1)
        return {
            "gmv": gmv,
            "orr": served / orders.clamp_min(1.0),
            "served": served,
            "orders": orders,
            "expired": expired,
            "overflow": overflow,
        }

    def _episode_outcome(self, done: torch.Tensor) -> torch.Tensor:
        return self._cell_gmv.to(torch.float32)

    # ------------------------------------------------------------------ observation
    def waiting_orders(self) -> torch.Tensor:
        """Candidate orders of each cell ``(num_envs, num_agents)`` int64."""
        return self._waiting

    def _observe(self) -> torch.Tensor:
        e, n, s, w = self.num_envs, self.n, self.max_orders, self.width
        idle_f = self.idle.to(torch.float32)
        orders_f = self.waiting_orders().to(torch.float32)
        ratio = idle_f / orders_f.clamp_min(1.0)
        city = idle_f.sum(1, keepdim=True) / orders_f.sum(1, keepdim=True).clamp_min(1.0)
        k = len(CELL_FEATURES)
        obs_dim = k + (len(SLOT_FEATURES) * s if self.slot_features else 0)
        obs = torch.empty((e, n, obs_dim), dtype=torch.float32, device=self.device)
        obs[..., k + len(SLOT_FEATURES) * w :] = 0.0  # the empty slots (written once, below)
        cells = obs[..., :k]
        cells[..., 0] = (self.t.to(torch.float32) / self._horizon).unsqueeze(1)
        cells[..., 1] = self._cells.to(torch.float32)
        cells[..., 2] = idle_f
        cells[..., 3] = orders_f
        cells[..., 4] = ratio
        cells[..., 5] = (ratio - city).abs()
        cells[..., 6:] = self._histogram  # price bins, durations, destination rings
        # the public code's normalisation: every column but time divided by its max over cells
        scale = cells[..., 1:].amax(dim=1, keepdim=True)
        cells[..., 1:] /= torch.where(scale > 0, scale, 1.0)
        if not self.slot_features or w == 0:
            return obs
        # per slot: valid, price/100, duration/5, ring/5, waited, gain in supply-demand balance
        on = self.order_valid[..., :w].to(torch.float32)
        balance = torch.minimum(idle_f, orders_f) / torch.maximum(idle_f, orders_f).clamp_min(1e-5)
        dest = self._field("dest", w).to(torch.int64).view(e, n * w)
        gain = balance.gather(1, dest).view(e, n, w) - balance.unsqueeze(-1)
        slots = obs[..., k : k + len(SLOT_FEATURES) * w].view(e, n, w, len(SLOT_FEATURES))
        torch.mul(self._orders[:, :, :w, :4], on.unsqueeze(-1), out=slots[..., :4])
        slots[..., 4] = self.order_waited[..., :w]
        slots[..., 5] = gain * on
        return obs

    def state(self) -> torch.Tensor:
        """The whole city ``(num_envs, 1 + n * (2 + max_duration))`` float32: the time of day,
        then per cell idle drivers, waiting orders and the drivers arriving there in 1, 2, ...
        steps (drivers divided by ``max(1, drivers_per_cell)``, orders by ``max_orders``)."""
        per_driver = 1.0 / max(1, self.drivers_per_cell)
        parts = [
            (self.t.to(torch.float32) / self._horizon).unsqueeze(1),
            self.idle.to(torch.float32) * per_driver,
            self.waiting_orders().to(torch.float32) / self.max_orders,
            self.busy.to(torch.float32).reshape(self.num_envs, -1) * per_driver,
        ]
        return torch.cat(parts, dim=1)

    # ------------------------------------------------------------------ baselines
    def baseline(self, name: str, *, seed: int = 0) -> Baseline:
        """``random`` or a priority rule of :data:`PRIORITY_BASELINES` (see the class
        docstring and ``docs/envs/ride-hailing.md``)."""
        if name in PRIORITY_BASELINES:
            return PriorityBaseline(self, name)
        return super().baseline(name, seed=seed)

    def render_text(self, copy: int = 0) -> str:
        served, orders, _, _, gmv = (float(v) for v in self._totals[copy])
        return (
            f"ride-hailing: copy {copy}, step {int(self._t_host[copy])}/{self._horizon}, "
            f"{self.n} cells, idle {int(self.idle[copy].sum())}, "
            f"waiting orders {int(self.order_valid[copy].sum())}, GMV {gmv:,.0f}, "
            f"ORR {served / max(orders, 1.0):.3f}"
        )


class PriorityBaseline:
    """A rule that serves each cell's orders in the order of a priority, with all its available
    drivers (``available_drivers()``), never staying while an order is left: it scores the
    ``min(drivers, orders)`` chosen orders ``+20`` and everything else ``-20``, so both dispatch
    rules execute it (sampling deviates with probability about ``e^-40`` per driver). ``none``
    scores "stay" ``+20`` and serves nothing.

    Priorities (ties: the order that waited longer, then the lower slot): ``greedy`` the
    highest price; ``nearest`` the fewest rings to the destination; ``shortest`` the shortest
    duration; ``fifo`` the order that waited longer.
    """

    def __init__(self, env: RideHailingEnv, rule: str) -> None:
        if rule not in PRIORITY_BASELINES:
            raise EnvError(f"baseline: unknown rule {rule!r}; one of {PRIORITY_BASELINES}")
        self.env = env
        self.rule = rule

    def reset(self) -> None:
        """Stateless."""

    def priority(self) -> torch.Tensor:
        """Priority of every order slot ``(num_envs, n, width)`` float64 (higher first)."""
        env = self.env
        w = env.width
        waited = env.order_waited[..., :w].to(torch.float64)
        if self.rule == "greedy":
            return env._field("price", w).to(torch.float64)
        if self.rule == "nearest":
            return -env._field("ring", w).to(torch.float64) + 0.5 * waited
        if self.rule == "shortest":
            return -env._field("duration", w).to(torch.float64) + 0.5 * waited
        return waited  # fifo

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        env = self.env
        e, n, s, w = env.num_envs, env.n, env.max_orders, env.width
        actions = torch.full((e, n, s + 1), -_SCORE_BOUND, dtype=torch.float32, device=env.device)
        if self.rule == "none":
            actions[..., 0] = _SCORE_BOUND
            return actions
        valid = env.order_valid[..., :w]
        key = torch.where(valid, self.priority(), -math.inf)
        _, order = torch.sort(key, dim=-1, descending=True, stable=True)
        rank = torch.empty_like(order).scatter_(-1, order, env._slots[:w].expand_as(order))
        chosen = valid & (rank < env.available_drivers().unsqueeze(-1))
        actions[..., 1 : 1 + w] = torch.where(chosen, _SCORE_BOUND, -_SCORE_BOUND)
        return actions
