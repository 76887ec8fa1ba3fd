"""The ``ride-hailing`` environment: the public city (map, rates, order draws), hand-worked
dispatch steps, the sampled rule against the public code's sequential draws, invariants,
baselines, determinism, the contract and the Gymnasium / PettingZoo views."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from hypothesis import given, settings
from hypothesis import strategies as st
from pettingzoo.test import parallel_api_test, parallel_seed_test

import marra.envs
from marra.envs import EnvError, check_env
from marra.envs.ride_hailing import (
    CELL_FEATURES,
    CITIES,
    ORDER_DURATION_WEIGHTS,
    ORDER_PRICE,
    SLOT_FEATURES,
    RideHailingEnv,
    _poisson,
    hex_neighbours,
    public_order_rates,
    ring_distances,
)

HIGH, LOW = 20.0, -20.0


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: on the shared 2-core machine a 144-step day of city 1 took 28 s
    with 2 threads and 1.2 s with one (OpenMP hand-offs on small tensors)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def quiet_city(**options) -> RideHailingEnv:
    """A 3x3 city without random orders (orders are put in by hand), one driver per cell."""
    defaults = dict(city="2", size=3, drivers_per_cell=1, demand_scale=0.0, dispatch="topk",
                    max_orders=4, horizon=3, num_envs=1, seed=0)  # fmt: skip
    defaults.update(options)
    return RideHailingEnv(**defaults)


def scores(env: RideHailingEnv, serve: dict[int, list[int]] | None = None) -> torch.Tensor:
    """Every cell stays, except the order slots listed per cell, which score high."""
    actions = torch.full((env.num_envs, env.n, env.max_orders + 1), LOW)
    actions[..., 0] = 0.0
    for cell, slots in (serve or {}).items():
        for slot in slots:
            actions[:, cell, slot + 1] = HIGH
    return actions


def conserved(env: RideHailingEnv) -> bool:
    total = env.n * env.drivers_per_cell
    return bool(((env.idle.sum(1) + env.busy.sum(dim=(1, 2))) == total).all())


# --------------------------------------------------------------------------- the city
def test_hexagonal_neighbours_follow_the_public_offset_layout():
    # even column 0 reaches the row below on its diagonal, odd column 1 the row above
    assert sorted(hex_neighbours(0, 0, 6)) == [1, 6, 7]
    assert sorted(hex_neighbours(1, 1, 6)) == [0, 1, 2, 6, 8, 13]
    assert sorted(hex_neighbours(1, 2, 6)) == [2, 7, 9, 13, 14, 15]
    ring = ring_distances(6)
    assert (ring == ring.T).all() and (np.diag(ring) == 0).all()
    assert sorted(np.flatnonzero(ring[7] == 1).tolist()) == sorted(hex_neighbours(1, 1, 6))
    assert ring[0, 35] == 7 and ring[5, 30] == ring.max() == 8  # the far corners


def test_order_rates_are_the_public_recipe():
    rates = public_order_rates(CITIES["2"])
    legacy = np.random.RandomState(0)
    base = legacy.randint(0, 10, 100)
    assert np.array_equal(rates[0], np.maximum(base + legacy.randint(-2, 3, 100), 0))
    assert rates.shape == (144, 100) and rates.sum() == 63_527  # paper Table 1: ~70,000
    city1 = public_order_rates(CITIES["1"])
    assert city1.shape == (144, 36) and city1.sum() == 27_763  # paper Table 1: ~30,000
    assert city1.min() == 0 and city1.max() == 11


def test_the_two_cities_have_the_papers_sizes():
    one, two = RideHailingEnv(city="1"), RideHailingEnv(city="2")
    assert (one.n, one.max_duration, one.drivers_per_cell) == (36, 3, 10)
    assert (two.n, two.max_duration, int(two.reset().shape[1])) == (100, 5, 100)
    one.reset()
    assert int(two.idle.sum()) == 1000 and int(one.idle.sum()) == 360  # paper Table 1
    assert one.spec.obs_dim == len(CELL_FEATURES) + len(SLOT_FEATURES) * 50 == 321
    assert one.spec.action.dim == 51 and one.spec.horizon == 144


def test_poisson_counts_have_the_right_mean_and_variance():
    u = torch.rand((1, 200_000), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    counts = _poisson(torch.full_like(u, 4.4), u, 60).to(torch.float64)
    assert abs(float(counts.mean()) - 4.4) < 0.03 and abs(float(counts.var()) - 4.4) < 0.08
    assert int(_poisson(torch.zeros_like(u), u, 60).sum()) == 0


def test_generated_orders_follow_the_public_distributions():
    env = RideHailingEnv(city="2", num_envs=64, seed=3, horizon=2, max_orders=50)
    env.reset()
    valid = env.order_valid
    duration = env.order_duration[valid]
    price = env.order_price[valid].to(torch.float64)
    ring = env.order_ring[valid]
    assert ((ring >= 1) & (ring <= duration)).all()  # destinations within d rings
    weights = np.asarray(ORDER_DURATION_WEIGHTS[:5]) / sum(ORDER_DURATION_WEIGHTS[:5])
    share = torch.bincount(duration - 1, minlength=5).to(torch.float64) / duration.numel()
    assert np.allclose(share.numpy(), weights, atol=0.01)
    assert (price > 0).all()
    for d, (mean, std) in enumerate(ORDER_PRICE, start=1):
        chosen = price[duration == d]
        # draws <= 0 are replaced by the mean (the public code), which lifts the mean a little
        assert abs(float(chosen.mean()) - mean) < 4 * std / math.sqrt(chosen.numel()) + 0.6
    # every order the city makes is counted once
    assert float(env._totals[:, 1].sum()) == float(valid.sum())


# --------------------------------------------------------------------------- hand-worked steps
def test_a_served_order_pays_its_cell_and_its_driver_returns_at_the_destination():
    env = quiet_city()
    env.reset()
    slot = int(env.add_order(4, price=20.0, duration=2, dest=5)[0])
    assert slot == 0 and int(env.waiting_orders()[0, 4]) == 1
    step = env.step(scores(env, {4: [slot]}))
    # the cell earns the price / reward_scale; GMV in price units
    expected = torch.zeros(env.n)
    expected[4] = 20.0 / 50.0
    assert torch.allclose(step.reward[0], expected)
    assert float(step.info["gmv"][0]) == 20.0 and float(step.info["served"][0]) == 1.0
    # the driver left cell 4 and is on a 2-step trip to cell 5: 1 step left
    assert int(env.idle[0, 4]) == 0 and int(env.idle[0, 5]) == 1
    assert int(env.busy[0, 0, 5]) == 1 and int(env.busy.sum()) == 1
    assert not bool(env.order_valid[0, 4].any()) and conserved(env)
    step = env.step(scores(env))
    assert int(env.idle[0, 5]) == 2 and int(env.idle[0, 4]) == 0 and int(env.busy.sum()) == 0
    assert float(step.reward.sum()) == 0.0 and conserved(env)


def test_an_unserved_order_waits_two_decision_steps_then_expires():
    env = quiet_city()
    env.reset()
    env.add_order(0, price=7.5, duration=1, dest=1)
    step = env.step(scores(env))  # everyone stays
    assert bool(env.order_valid[0, 0, 0]) and bool(env.order_waited[0, 0, 0])
    assert float(step.info["expired"][0]) == 0.0
    step = env.step(scores(env))
    assert not bool(env.order_valid[0, 0].any()) and float(step.info["expired"][0]) == 1.0
    step = env.step(scores(env))  # the horizon
    metrics = step.info["episode_metrics"]
    assert float(metrics["orders"][0]) == 1.0 and float(metrics["expired"][0]) == 1.0
    assert float(metrics["orr"][0]) == 0.0 and float(metrics["gmv"][0]) == 0.0


def test_an_order_served_on_its_second_step_still_counts():
    env = quiet_city(horizon=2)
    env.reset()
    env.add_order(0, price=12.0, duration=1, dest=1)
    env.step(scores(env))
    step = env.step(scores(env, {0: [0]}))
    metrics = step.info["episode_metrics"]
    assert float(metrics["gmv"][0]) == 12.0 and float(metrics["orr"][0]) == 1.0
    assert float(metrics["expired"][0]) == 0.0
    assert torch.allclose(step.info["episode_outcome"][0, 0], torch.tensor(12.0))


def test_topk_serves_the_best_orders_above_stay_up_to_the_drivers():
    env = quiet_city(drivers_per_cell=2)
    env.reset()
    for price in (10.0, 30.0, 20.0):
        env.add_order(4, price=price, duration=1, dest=5)
    actions = scores(env)
    actions[0, 4, 1:4] = torch.tensor([1.0, 3.0, 2.0])  # prefer 30, then 20, then 10
    actions[0, 4, 0] = 0.5  # stay scores below all three: both drivers take orders
    step = env.step(actions)
    assert float(step.info["gmv"][0]) == 50.0  # 30 + 20: two drivers
    assert env.order_valid[0, 4, :3].tolist() == [True, False, False]
    env = quiet_city(drivers_per_cell=2)
    env.reset()
    for price in (10.0, 30.0):
        env.add_order(4, price=price, duration=1, dest=5)
    actions = scores(env)
    actions[0, 4, 1:3] = torch.tensor([-1.0, 3.0])
    actions[0, 4, 0] = 0.0  # the 10 order scores below stay: the second driver stays
    assert float(env.step(actions).info["gmv"][0]) == 30.0


def test_max_drivers_caps_the_drivers_that_take_orders():
    env = quiet_city(drivers_per_cell=3, max_drivers=1)
    env.reset()
    for price in (10.0, 20.0):
        env.add_order(4, price=price, duration=1, dest=5)
    step = env.step(scores(env, {4: [0, 1]}))
    assert float(step.info["served"][0]) == 1.0 and int(env.idle[0, 4]) == 2


def test_observation_features_of_a_hand_built_city():
    env = quiet_city()
    env.reset()
    env.add_order(4, price=20.0, duration=2, dest=5)
    env.add_order(0, price=50.0, duration=1, dest=1)
    obs = env._observe()[0]
    names = list(CELL_FEATURES)
    col = names.index
    assert obs[4, col("orders")] == 1.0 and obs[8, col("orders")] == 0.0
    assert obs[8, col("cell")] == 1.0 and obs[4, col("cell")] == 0.5
    assert obs[4, col("idle_drivers")] == 1.0  # every cell has 1: max-normalised to 1
    assert obs[4, col("price_bin_1")] == 1.0 and obs[0, col("price_bin_3")] == 1.0
    assert obs[4, col("duration_2")] == 1.0 and obs[4, col("ring_1")] == 1.0
    # supply/demand: 1 idle / 1 order in cells 0 and 4, 1 / max(1, 0) elsewhere; city 9 / 2
    assert torch.allclose(obs[:, col("supply_demand")], torch.ones(9))
    slot = obs[4, len(names) : len(names) + len(SLOT_FEATURES)]
    # valid, price/100, duration/5, ring/5, waited, balance gain (cell 5: min(1,0)/max(1,0) = 0
    # against cell 4's min(1,1)/max(1,1) = 1)
    assert torch.allclose(slot, torch.tensor([1.0, 0.2, 0.4, 0.2, 0.0, -1.0]))
    empty = obs[8, len(names) :]
    assert float(empty.abs().sum()) == 0.0
    state = env.state()[0]
    assert state.shape == (1 + 9 * (2 + 5),) and float(state[1 + 4]) == 1.0


# --------------------------------------------------------------------------- sampled dispatch
def sequential_served_sets(logits: list[float], drivers: int) -> dict[frozenset, float]:
    """Exact law of the served set under the public code's rule: each driver draws from
    softmax over stay (index 0) and the remaining orders; an order drawn leaves the pool."""
    law: dict[frozenset, float] = {}

    def walk(left: frozenset, taken: frozenset, drivers_left: int, p: float) -> None:
        if drivers_left == 0 or not left:
            law[taken] = law.get(taken, 0.0) + p
            return
        weights = {i: math.exp(logits[i]) for i in left | {0}}
        total = sum(weights.values())
        for i, w in weights.items():
            if i == 0:
                walk(left, taken, drivers_left - 1, p * w / total)
            else:
                walk(left - {i}, taken | {i}, drivers_left - 1, p * w / total)

    walk(frozenset(range(1, len(logits))), frozenset(), drivers, 1.0)
    return law


@pytest.mark.parametrize("drivers", [1, 2, 3])
def test_sampled_dispatch_has_the_law_of_the_public_sequential_draws(drivers):
    copies = 20_000
    logits = [0.3, 1.0, -0.5, 0.0]  # stay, then three orders
    env = RideHailingEnv(city="2", size=2, drivers_per_cell=drivers, demand_scale=0.0,
                         dispatch="sample", max_orders=3, horizon=2, num_envs=copies,
                         seed=11)  # fmt: skip
    env.reset()
    for price in (1.0, 2.0, 4.0):
        env.add_order(0, price=price, duration=1, dest=1)
    actions = torch.full((copies, 4, 4), LOW)
    actions[:, 0] = torch.tensor(logits)
    env.step(actions)
    served = ~env.order_valid[:, 0, :3]
    code = (served.to(torch.int64) * torch.tensor([1, 2, 4])).sum(-1)
    observed = torch.bincount(code, minlength=8).to(torch.float64) / copies
    law = sequential_served_sets(logits, drivers)
    for subset in range(8):
        members = frozenset(i + 1 for i in range(3) if subset >> i & 1)
        expected = law.get(members, 0.0)
        tolerance = 4.5 * math.sqrt(max(expected * (1 - expected), 1e-4) / copies)
        assert abs(float(observed[subset]) - expected) < tolerance, (members, expected)


# --------------------------------------------------------------------------- invariants
@settings(deadline=None, max_examples=25)
@given(
    city=st.sampled_from(["1", "2"]),
    size=st.integers(2, 4),
    drivers=st.integers(0, 6),
    dispatch=st.sampled_from(["sample", "topk"]),
    demand=st.floats(0.0, 3.0),
    max_orders=st.integers(1, 8),
    max_drivers=st.sampled_from([None, 1, 3]),
    seed=st.integers(0, 2**31),
)
def test_drivers_are_conserved_and_counts_stay_consistent(
    city, size, drivers, dispatch, demand, max_orders, max_drivers, seed
):
    env = RideHailingEnv(city=city, size=size, drivers_per_cell=drivers, dispatch=dispatch,
                         demand_scale=demand, max_orders=max_orders, max_drivers=max_drivers,
                         horizon=6, num_envs=3, seed=seed)  # fmt: skip
    obs = env.reset()
    generator = torch.Generator().manual_seed(seed)
    served_total = torch.zeros(3, dtype=torch.float64)
    for _ in range(6):
        waiting = env.waiting_orders().clone()
        available = env.available_drivers().clone()
        actions = torch.rand((3, env.n, max_orders + 1), generator=generator) * 40 - 20
        step = env.step(actions)
        assert conserved(env)
        assert (env.idle >= 0).all() and (env.busy >= 0).all()
        assert (step.info["cell_served"] <= torch.minimum(waiting, available)).all()
        assert torch.equal(step.info["cell_served"].sum(1).double(), step.info["served"])
        assert torch.equal(env.waiting_orders(), env.order_valid.sum(-1))
        assert (env.order_ring[env.order_valid] >= 1).all()
        assert torch.isfinite(step.obs).all() and (step.obs[..., : len(CELL_FEATURES)] >= 0).all()
        assert (step.obs[..., : len(CELL_FEATURES)] <= 1.0 + 1e-6).all()
        assert (step.reward >= 0).all()
        served_total += step.info["served"]
        obs = step.obs
    metrics = step.info["episode_metrics"]
    assert torch.equal(metrics["served"].double(), served_total)
    assert ((metrics["orr"] >= 0) & (metrics["orr"] <= 1)).all()
    assert obs.shape == (3, env.n, env.spec.obs_dim)


@settings(deadline=None, max_examples=20)
@given(dispatch=st.sampled_from(["sample", "topk"]), seed=st.integers(0, 2**31))
def test_scores_of_empty_slots_are_ignored(dispatch, seed):
    """Masks respected: garbage scores on slots without an order change nothing."""
    runs = []
    for garbage in (False, True):
        env = RideHailingEnv(city="1", size=3, dispatch=dispatch, max_orders=6, horizon=5,
                             num_envs=2, seed=seed, drivers_per_cell=2)  # fmt: skip
        env.reset()
        generator = torch.Generator().manual_seed(seed)
        noise = torch.Generator().manual_seed(seed + 1)
        record = []
        for _ in range(5):
            actions = torch.rand((2, env.n, 7), generator=generator) * 10 - 5
            if garbage:
                empty = ~env.slot_mask()
                actions = torch.where(empty, torch.rand(actions.shape, generator=noise) * 40 - 20,
                                      actions)  # fmt: skip
            step = env.step(actions)
            record.append((step.reward.clone(), env.idle.clone(), env.order_valid.clone()))
        runs.append(record)
    for a, b in zip(*runs, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_topk_never_serves_an_order_scored_at_or_below_stay(seed):
    env = RideHailingEnv(city="1", dispatch="topk", num_envs=2, seed=seed, horizon=4)
    env.reset()
    before = env.order_valid.clone()  # fresh orders: one that leaves now was served
    actions = torch.rand((2, env.n, 51), generator=torch.Generator().manual_seed(seed)) * 2 - 1
    step = env.step(actions)
    served = before & ~(env.order_valid & env.order_waited)  # the rest are the next step's
    assert bool(served.any())
    assert not bool((served & (actions[..., 1:] <= actions[..., :1])).any())
    assert torch.equal(served.sum(-1), step.info["cell_served"])


# --------------------------------------------------------------------------- baselines
PINNED = {  # city 1, one day, seed 0, copies 0 and 1 (sampled dispatch)
    "greedy": (229_099.4, 233_011.8),
    "fifo": (176_350.7, 168_143.0),
    "nearest": (161_316.1, 157_369.0),
    "shortest": (145_221.2, 142_140.2),
    "random": (133_338.1, 129_649.1),
    "none": (0.0, 0.0),
}


def test_baselines_rank_as_pinned_on_a_fixed_seed():
    env = RideHailingEnv(city="1", num_envs=2, seed=0)
    gmv, orr = {}, {}
    for name in env.spec.baselines:
        obs = env.reset(seed=0)
        method = env.baseline(name, seed=0)
        method.reset()
        for _ in range(env.horizon):
            step = env.step(method.act(obs))
            obs = step.obs
        gmv[name] = step.info["episode_metrics"]["gmv"]
        orr[name] = step.info["episode_metrics"]["orr"]
        # The rules are pinned to float precision. ``random``'s GMV is not reproducible across
        # machines (copy 0 gave 133,338 on the machine that pinned it and 135,455 on another
        # with the same torch and seed; copy 1 agreed): its continuous scores feed the sampled
        # dispatch, where one different low bit sends a driver elsewhere and the episode forks.
        # It is checked to a few percent and by its rank below.
        rtol = 0.03 if name == "random" else 1e-5
        assert np.allclose(gmv[name].numpy(), PINNED[name], rtol=rtol), (name, gmv[name])
    for better, worse in (("greedy", "fifo"), ("fifo", "nearest"), ("nearest", "random"),
                          ("shortest", "random"), ("random", "none")):  # fmt: skip
        assert (gmv[better] > gmv[worse]).all(), (better, worse)
    # short trips free drivers sooner: more orders served, less GMV
    assert (orr["nearest"] > orr["greedy"]).all() and (orr["shortest"] > orr["greedy"]).all()


def test_priority_baselines_act_the_same_under_both_dispatch_rules():
    results = []
    for dispatch in ("sample", "topk"):
        env = RideHailingEnv(city="1", dispatch=dispatch, num_envs=2, seed=5, horizon=24)
        obs = env.reset()
        method = env.baseline("greedy")
        for _ in range(24):
            step = env.step(method.act(obs))
            obs = step.obs
        results.append(step.info["episode_metrics"]["gmv"])
    assert torch.equal(results[0], results[1])


def test_greedy_serves_the_highest_prices_first():
    env = quiet_city(drivers_per_cell=2)
    env.reset()
    for price in (10.0, 30.0, 20.0):
        env.add_order(4, price=price, duration=1, dest=5)
    step = env.step(env.baseline("greedy").act(env._observe()))
    assert float(step.info["gmv"][0]) == 50.0
    env = quiet_city(drivers_per_cell=1)
    env.reset()
    env.add_order(4, price=40.0, duration=2, dest=3)
    env.add_order(4, price=10.0, duration=1, dest=5)
    step = env.step(env.baseline("shortest").act(env._observe()))
    assert float(step.info["gmv"][0]) == 10.0  # the 1-step trip, not the dearer 2-step one


def test_nearest_serves_the_closest_destination_first():
    env = RideHailingEnv(city="2", size=4, drivers_per_cell=1, demand_scale=0.0,
                         dispatch="topk", max_orders=3, horizon=2, seed=0)  # fmt: skip
    env.reset()
    ring = ring_distances(4)
    far = int(np.flatnonzero(ring[0] == 3)[0])
    near = int(np.flatnonzero(ring[0] == 1)[0])
    env.add_order(0, price=50.0, duration=3, dest=far)
    env.add_order(0, price=5.0, duration=3, dest=near)
    step = env.step(env.baseline("nearest").act(env._observe()))
    assert float(step.info["gmv"][0]) == 5.0
    env.reset()
    env.add_order(0, price=50.0, duration=3, dest=far)
    env.add_order(0, price=5.0, duration=3, dest=near)
    assert float(env.step(env.baseline("greedy").act(env._observe())).info["gmv"][0]) == 50.0


def test_none_serves_nothing_and_random_respects_the_bounds():
    env = RideHailingEnv(city="1", size=3, num_envs=2, seed=0, horizon=4)
    obs = env.reset()
    for _ in range(4):
        step = env.step(env.baseline("none").act(obs))
        obs = step.obs
        assert float(step.reward.sum()) == 0.0
    actions = env.baseline("random").act(obs)
    assert actions.shape == (2, 9, 51) and float(actions.abs().max()) <= 20.0


# --------------------------------------------------------------------------- seeds
def first_orders(env: RideHailingEnv) -> torch.Tensor:
    prices = torch.where(env.order_valid, env.order_price, 0.0).to(torch.float64)
    return torch.stack([env.order_valid.sum(-1).to(torch.float64), prices.sum(-1)], dim=-1)


def test_same_seed_same_episode_and_new_streams_per_episode_by_default():
    a = RideHailingEnv(city="1", num_envs=3, seed=7, horizon=10)
    b = RideHailingEnv(city="1", num_envs=3, seed=7, horizon=10)
    generator = torch.Generator().manual_seed(1)
    plan = [torch.rand((3, 36, 51), generator=generator) * 4 - 2 for _ in range(10)]
    for env in (a, b):
        env.reset()
    for actions in plan:
        sa, sb = a.step(actions), b.step(actions)
        assert torch.equal(sa.obs, sb.obs) and torch.equal(sa.reward, sb.reward)
    a.reset(seed=7)
    first = first_orders(a)
    assert not torch.equal(first[0], first[1])  # copies differ
    a.reset()  # the next episode
    assert not torch.equal(first, first_orders(a))


def test_fixed_orders_repeat_the_stream_in_every_episode_and_copy():
    env = RideHailingEnv(city="1", num_envs=3, seed=7, horizon=6, fixed_orders=True)
    env.reset()
    first = first_orders(env)
    assert torch.equal(first[0], first[1]) and torch.equal(first[0], first[2])
    generator = torch.Generator().manual_seed(2)
    created = []
    for episode in range(2):
        if episode:
            env.reset()  # the next episode: same orders
            assert torch.equal(first_orders(env), first)
        total = torch.zeros(3, dtype=torch.float64)
        for _ in range(6):
            step = env.step(torch.rand((3, 36, 51), generator=generator) * 40 - 20)
            total += step.info["new_orders"]
        created.append(total)
    # the order stream does not depend on the actions: same counts every episode and copy
    assert torch.equal(created[0], created[1]) and bool((created[0] == created[0][0]).all())
    other = RideHailingEnv(city="1", num_envs=1, seed=8, horizon=6, fixed_orders=True)
    other.reset()
    assert not torch.equal(first_orders(other)[0], first[0])  # another seed, another stream


# --------------------------------------------------------------------------- options
@pytest.mark.parametrize(
    ("options", "word"),
    [
        ({"city": "3"}, "city"),
        ({"size": 1}, "size"),
        ({"drivers_per_cell": -1}, "drivers_per_cell"),
        ({"horizon": 0}, "horizon"),
        ({"dispatch": "best"}, "dispatch"),
        ({"fixed_orders": "yes"}, "fixed_orders"),
        ({"demand_scale": -1.0}, "demand_scale"),
        ({"max_orders": 0}, "max_orders"),
        ({"max_drivers": 0}, "max_drivers"),
        ({"slot_features": 1}, "slot_features"),
        ({"reward": "global"}, "reward"),
        ({"reward_scale": 0.0}, "reward_scale"),
    ],
)
def test_bad_options_name_the_option(options, word):
    with pytest.raises(EnvError, match=word):
        marra.envs.make("ride-hailing", **options)


def test_add_order_checks_its_arguments():
    env = quiet_city(max_orders=1)
    env.reset()
    with pytest.raises(EnvError, match="duration"):
        env.add_order(0, price=1.0, duration=9, dest=1)
    with pytest.raises(EnvError, match="cell"):
        env.add_order(99, price=1.0, duration=1, dest=1)
    env.add_order(0, price=1.0, duration=1, dest=1)
    with pytest.raises(EnvError, match="free order slot"):
        env.add_order(0, price=1.0, duration=1, dest=1)


def test_options_of_the_registry_and_the_team_reward():
    options = marra.envs.env_options("ride-hailing")
    assert {"city", "dispatch", "fixed_orders", "max_orders", "reward"} <= set(options)
    assert all(info.help for info in options.values())
    env = RideHailingEnv(city="1", reward="team", num_envs=2, seed=0, horizon=3)
    obs = env.reset()
    step = env.step(env.baseline("greedy").act(obs))
    assert torch.allclose(step.reward, step.reward[:, :1].expand_as(step.reward))
    assert torch.allclose(step.reward[:, 0].double() * 36 * 50, step.info["gmv"], rtol=1e-5)
    small = RideHailingEnv(city="1", slot_features=False)
    assert small.spec.obs_dim == 21 and small.reset().shape == (1, 36, 21)


# --------------------------------------------------------------------------- the contract
SMALL = dict(city="1", size=3, horizon=8, max_orders=6)


def test_check_env_on_a_small_city_both_dispatch_rules():
    for dispatch in ("sample", "topk"):
        env = marra.envs.make("ride-hailing", num_envs=3, seed=0, dispatch=dispatch, **SMALL)
        check_env(env)
    check_env(marra.envs.make("ride-hailing", num_envs=2, seed=0, fixed_orders=True, **SMALL))


def test_gymnasium_and_pettingzoo_checkers_on_a_small_city():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gym_check_env(marra.envs.gym_env("ride-hailing", **SMALL), skip_render_check=True)
    parallel_api_test(marra.envs.parallel_env("ride-hailing", **SMALL), num_cycles=10)
    parallel_seed_test(lambda: marra.envs.parallel_env("ride-hailing", **SMALL))


def test_autoreset_starts_a_fresh_day():
    env = RideHailingEnv(city="1", size=3, horizon=3, num_envs=2, seed=0, autoreset=True)
    obs = env.reset()
    for _ in range(3):
        step = env.step(env.baseline("greedy").act(obs))
        obs = step.obs
    assert "final_obs" in step.info and bool((env.t == 0).all()) and conserved(env)
    assert float(env._totals[:, 0].sum()) == 0.0  # the new episode's totals


def test_render_text_names_the_city():
    env = RideHailingEnv(city="1", seed=0)
    env.reset()
    assert "36 cells" in env.render_text() and "idle 360" in env.render_text()


def test_every_combination_of_dispatch_and_reward_runs_a_step():
    for dispatch, reward in itertools.product(("sample", "topk"), ("agent", "team")):
        env = RideHailingEnv(city="2", size=3, dispatch=dispatch, reward=reward, num_envs=2,
                             seed=0, horizon=2)  # fmt: skip
        obs = env.reset()
        step = env.step(env.baseline("fifo").act(obs))
        assert step.reward.dtype == torch.float32 and step.reward.shape == (2, 9)


# --------------------------------------------------------------------------- learning
def test_a_trained_policy_beats_random(tmp_path):
    """MAPPO with full sharing, 3,072 env-steps (~12 s on 2 busy cores) on a 3x3 city of
    12 steps, evaluated deterministically on the same 64 seeded episodes as ``random``.
    Measured: GMV 5,845 against random's 4,604 here (greedy about 6,800)."""
    from marra.rl import PPOConfig, evaluate_policy, load_policy, train

    options = dict(size=3, horizon=12)
    config = PPOConfig(algo="mappo", sharing="full", total_steps=3_072, num_envs=16, seed=0)
    result = train(config, options, env="ride-hailing", out_dir=tmp_path, progress=False)
    policy = load_policy(result.policy_path)
    env = marra.envs.make("ride-hailing", num_envs=64, **options)
    learned = evaluate_policy(policy.act, env, seed=123)["episode_gmv"]
    method = env.baseline("random", seed=0)
    method.reset()
    random = evaluate_policy(method.act, env, seed=123)["episode_gmv"]
    assert learned > 1.1 * random, (learned, random)


# --------------------------------------------------------------------------- benchmark
def test_benchmark_script_runs_and_writes_its_json(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "envs.py"), "--env", "ride-hailing",
         "--quick", "--out-dir", str(tmp_path)],
        cwd=root, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "envs_ride_hailing.json").read_text(encoding="utf-8"))
    assert [r["num_envs"] for r in report["rows"]] == [1, 16, 16, 16]
    assert all(r["agent_steps_per_s"] > 0 and r["ratio"] > 0 for r in report["rows"])
    assert report["peer"]["source"].startswith("issue figure") and report["meta"]["threads"] == 1
