"""The hospital environment: clearing rule, reward, observation, seeding, auto-reset, views."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import gymnasium
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pettingzoo.test import parallel_api_test, parallel_seed_test

import marra.envs
from marra.envs import HospitalEnv, HospitalGymEnv, RewardWeights, clear_transfers
from marra.envs.views import hospital_parallel_env
from marra.network import HospitalNetwork
from marra.scenarios import make_scenario

INF = math.inf

# The worked example of docs/environment.md: four hospitals, budget 6.
EXAMPLE_CURRENT = [10.0, 8.0, 3.0, 6.0]
EXAMPLE_MINIMUM = [6.0, 7.0, 5.0, 2.0]
EXAMPLE_TARGET = [7.0, 7.0, 6.0, 8.0]
EXAMPLE_CAPACITY = [INF, INF, 6.0, 12.0]
EXAMPLE_ACTION = [-5.0, -3.0, 2.0, 10.0]


def example_network() -> HospitalNetwork:
    return HospitalNetwork(
        current=np.array(EXAMPLE_CURRENT),
        minimum=np.array(EXAMPLE_MINIMUM),
        target=np.array(EXAMPLE_TARGET),
        capacity=np.array(EXAMPLE_CAPACITY),
    )


def example_env(**kwargs) -> HospitalEnv:
    kwargs.setdefault("transfer_budget", 6.0)
    return HospitalEnv(network=example_network(), scenario="static", horizon=3, **kwargs)


def rows(values: list[float]) -> torch.Tensor:
    return torch.tensor([values], dtype=torch.float64)


# ---------------------------------------------------------------------- clearing rule
@pytest.mark.parametrize(
    ("budget", "integer", "given_expected", "received_expected"),
    [
        (6.0, False, [4.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.25, 3.75]),
        (6.0, True, [4.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 4.0]),
        (3.0, False, [2.4, 0.6, 0.0, 0.0], [0.0, 0.0, 0.75, 2.25]),
        (3.0, True, [2.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 2.0]),
    ],
)
def test_clearing_rule_matches_the_worked_example(
    budget, integer, given_expected, received_expected
):
    given_, received, volume = clear_transfers(
        rows(EXAMPLE_CURRENT),
        rows(EXAMPLE_MINIMUM),
        rows(EXAMPLE_CAPACITY),
        rows(EXAMPLE_ACTION),
        budget,
        integer=integer,
    )
    torch.testing.assert_close(given_[0], torch.tensor(given_expected, dtype=torch.float64))
    torch.testing.assert_close(received[0], torch.tensor(received_expected, dtype=torch.float64))
    assert float(volume[0]) == min(5.0, budget)


def test_clearing_rule_moves_nothing_when_nobody_offers_or_nobody_asks():
    for action in ([1.0, 2.0, 3.0, 4.0], [-1.0, -2.0, -3.0, -4.0], [0.0, 0.0, 0.0, 0.0]):
        given_, received, volume = clear_transfers(
            rows(EXAMPLE_CURRENT), rows(EXAMPLE_MINIMUM), rows(EXAMPLE_CAPACITY), rows(action)
        )
        assert float(volume[0]) == 0.0
        assert float(given_.abs().sum()) == 0.0 and float(received.abs().sum()) == 0.0


def test_hospital_at_or_below_its_minimum_offers_nothing():
    given_, _, volume = clear_transfers(
        rows([5.0, 3.0, 1.0]), rows([5.0, 4.0, 0.0]), rows([INF] * 3), rows([-9.0, -9.0, 9.0])
    )
    assert float(volume[0]) == 0.0
    assert float(given_.sum()) == 0.0


# ---------------------------------------------------------------------- reward and info
def test_reward_terms_match_the_hand_worked_case():
    env = example_env()
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(rows(EXAMPLE_ACTION))
    # y = [6, 7, 4.25, 9.75] against t = [7, 7, 6, 8], m = [6, 7, 5, 2]
    assert float(info["target_error"][0]) == pytest.approx(1.0 + 0.0 + 3.0625 + 3.0625)
    assert float(info["minima_violation"][0]) == pytest.approx(0.75)
    # net transfers [-4, -1, 1.25, 3.75]: mean 0, population variance 32.625 / 4
    assert float(info["fairness"][0]) == pytest.approx(8.15625)
    assert float(info["reward_raw"][0]) == pytest.approx(-(7.125 + 100 * 0.75 + 8.15625))
    assert float(info["mae"][0]) == pytest.approx(1.125)
    assert float(info["moved"][0]) == pytest.approx(5.0)
    assert float(info["total"][0]) == pytest.approx(27.0)
    # auto scale: n * s^2 with s = mean target = 7
    assert reward.shape == (1, 4)  # the team reward, given to every hospital
    assert torch.equal(reward, info["team_reward"].unsqueeze(1).expand(1, 4))
    assert float(reward[0, 0]) == pytest.approx(-90.28125 / (4 * 49), rel=1e-6)
    assert reward.dtype == torch.float32
    assert not bool(terminated[0]) and not bool(truncated[0])
    torch.testing.assert_close(
        env.current[0], torch.tensor([6.0, 7.0, 4.25, 9.75], dtype=torch.float64)
    )


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        (RewardWeights(target=0.0), -(75.0 + 8.15625)),
        (RewardWeights(minima=0.0), -(7.125 + 8.15625)),
        (RewardWeights(fairness=0.0), -(7.125 + 75.0)),
        (RewardWeights(0.0, 0.0, 0.0), 0.0),
        (RewardWeights(2.0, 1.0, 0.5), -(2 * 7.125 + 75.0 + 0.5 * 8.15625)),
    ],
)
def test_reward_weights_switch_terms_off(weights, expected):
    env = example_env(reward_weights=weights, reward_scale=1.0)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(rows(EXAMPLE_ACTION))
    assert float(info["reward_raw"][0]) == pytest.approx(expected)
    assert float(reward[0, 0]) == pytest.approx(expected, rel=1e-6)
    # the terms themselves are always reported, whatever their weight
    assert float(info["minima_violation"][0]) == pytest.approx(0.75)


def test_agent_rewards_split_the_team_reward_exactly():
    env = example_env(reward_weights=RewardWeights(2.0, 1.0, 0.5))
    env.reset(seed=0)
    _, reward, _, _, info = env.step(rows(EXAMPLE_ACTION))
    # y = [6, 7, 4.25, 9.75], t = [7, 7, 6, 8], m = [6, 7, 5, 2], d = [-4, -1, 1.25, 3.75]
    y, t, d = [6.0, 7.0, 4.25, 9.75], [7.0, 7.0, 6.0, 8.0], [-4.0, -1.0, 1.25, 3.75]
    expected = [
        -(2 * (y[i] - t[i]) ** 2 + 100 * (0.75 if i == 2 else 0.0) + 0.5 * d[i] ** 2 / 4)
        for i in range(4)
    ]
    assert info["agent_reward_raw"].shape == (1, 4)
    torch.testing.assert_close(
        info["agent_reward_raw"][0], torch.tensor(expected, dtype=torch.float64)
    )
    assert float(info["agent_reward_raw"].sum()) == pytest.approx(float(info["reward_raw"][0]))
    assert info["agent_reward"].dtype == torch.float32
    assert float(info["agent_reward"].sum()) == pytest.approx(float(reward[0, 0]), rel=1e-5)


@settings(deadline=None, max_examples=20)
@given(seed=st.integers(0, 10_000), budget=st.sampled_from([None, 3.0, 50.0]))
def test_agent_rewards_sum_to_the_team_reward_on_random_steps(seed, budget):
    env = HospitalEnv(n_hospitals=12, num_envs=3, horizon=3, scenario="shifting+shock",
                      transfer_budget=budget, seed=seed)  # fmt: skip
    env.reset()
    generator = torch.Generator().manual_seed(seed)
    for _ in range(3):
        action = 10 * torch.randn((3, 12), generator=generator, dtype=torch.float64)
        _, reward, _, _, info = env.step(action)
        torch.testing.assert_close(info["agent_reward_raw"].sum(dim=1), info["reward_raw"])
        torch.testing.assert_close(
            info["agent_reward"].sum(dim=1), reward[:, 0], rtol=1e-4, atol=1e-6
        )


def test_eta_weighs_the_minima_violation():
    env = example_env(eta=10.0, reward_scale=1.0)
    env.reset(seed=0)
    _, _, _, _, info = env.step(rows(EXAMPLE_ACTION))
    assert float(info["reward_raw"][0]) == pytest.approx(-(7.125 + 7.5 + 8.15625))


def test_reward_scale_divides_the_raw_reward():
    env = example_env(reward_scale=4.0)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(rows(EXAMPLE_ACTION))
    assert float(reward[0, 0]) == pytest.approx(float(info["reward_raw"][0]) / 4.0, rel=1e-6)


def test_observation_features_of_the_worked_example():
    env = example_env()
    obs = env.reset(seed=0)
    assert obs.shape == (1, 4, env.obs_dim) and obs.dtype == torch.float32
    s = 7.0  # mean target
    first = obs[0, 0].double()
    local = [10 / s, 6 / s, 7 / s, 3 / s, 4 / s, 1.0]  # no capacity: headroom 1
    # surplus (3 + 1) / (4 s), deficit (3 + 2) / (4 s), minima deficit 2 / (4 s), time left 1,
    # budget min(1, 6 / (4 s))
    context = [4 / 28, 5 / 28, 2 / 28, 1.0, 6 / 28]
    torch.testing.assert_close(first, torch.tensor(local + context, dtype=torch.float64))
    # hospital 3 (c=6, u=12): headroom 6 / (6 + 7); context identical for every hospital
    assert float(obs[0, 3, 5]) == pytest.approx(6 / 13)
    assert torch.equal(obs[0, :, env.local_dim :], obs[0, :1, env.local_dim :].expand(4, -1))
    state = env.global_state()
    assert state.shape == (1, env.state_dim)
    torch.testing.assert_close(state[0, : env.context_dim].double(), first[env.local_dim :])


def test_global_state_has_the_same_size_for_any_number_of_hospitals():
    small = HospitalEnv(n_hospitals=5, num_envs=2, seed=0)
    large = HospitalEnv(n_hospitals=300, num_envs=2, seed=0)
    small.reset()
    large.reset()
    assert small.global_state().shape == large.global_state().shape == (2, small.state_dim)
    assert small.obs_dim == large.obs_dim


def test_time_left_falls_to_zero_and_truncates_at_the_horizon():
    env = example_env()
    obs = env.reset(seed=0)
    time_left = [float(obs[0, 0, 9])]
    for step in range(3):
        obs, _, terminated, truncated, _ = env.step(torch.zeros(1, 4))
        time_left.append(float(obs[0, 0, 9]))
        assert bool(truncated[0]) == (step == 2)
        assert not bool(terminated[0])
    assert time_left == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0])
    with pytest.raises(RuntimeError, match="horizon"):
        env.step(torch.zeros(1, 4))


def test_non_finite_actions_are_a_no_op():
    env = example_env()
    env.reset(seed=0)
    before = env.current.clone()
    action = torch.tensor([[math.nan, -math.inf, math.inf, math.nan]])
    obs, reward, _, _, info = env.step(action)
    assert float(info["moved"][0]) == 0.0
    assert torch.equal(env.current, before)
    assert torch.isfinite(obs).all() and torch.isfinite(reward).all()


# ---------------------------------------------------------------------- scenarios
def test_sudden_shock_removes_staff_who_leave_the_system():
    network = example_network()
    env = HospitalEnv(network=network, scenario="shock", horizon=4, seed=3)
    env.reset()
    realisation = env.realisations[0]
    step = int(realisation.shock_step[0])
    hospital = int(realisation.shock_hospital[0])
    totals, losses = [float(env.current.sum())], []
    for _ in range(4):
        _, _, _, _, info = env.step(torch.zeros(1, 4))
        totals.append(float(env.current.sum()))
        losses.append(float(info["shock_loss"][0]))
    c, m = EXAMPLE_CURRENT[hospital], EXAMPLE_MINIMUM[hospital]
    expected = max(0.0, min(math.floor(0.5 * c), c - m))
    assert step == 2
    assert losses == [0.0, expected, 0.0, 0.0]  # the events of step 2 follow step 1
    assert totals[2] == pytest.approx(27.0 - expected)


def test_shifting_targets_follow_the_realisation():
    env = HospitalEnv(n_hospitals=7, num_envs=2, scenario="shifting", horizon=12, seed=5)
    env.reset()
    for t in range(12):
        for copy in range(2):
            expected = torch.tensor(env.realisations[copy].target[t])
            assert torch.equal(env.target[copy], expected)
        env.step(torch.zeros(2, 7))


def test_scenario_object_sets_the_horizon():
    env = HospitalEnv(n_hospitals=4, scenario=make_scenario("shifting+shock", horizon=7))
    assert env.horizon == 7
    with pytest.raises(ValueError, match="horizon"):
        HospitalEnv(n_hospitals=4, scenario=make_scenario("static", horizon=7), horizon=8)


# ---------------------------------------------------------------------- invariants
special = st.sampled_from(
    [math.nan, math.inf, -math.inf, 1e300, -1e300, 1e-300, -1e-300, 0.0, 0.5, -0.5, 1e9]
)
action_values = st.one_of(special, st.floats(-60, 60), st.floats(-2, 2))


@settings(deadline=None, max_examples=60)
@given(
    num_envs=st.sampled_from([1, 2, 5]),
    n=st.integers(1, 12),
    integer=st.booleans(),
    budget=st.one_of(st.none(), st.floats(0, 40), st.integers(0, 40)),
    capacity_factor=st.sampled_from([None, 1.0, 1.3]),
    seed=st.integers(0, 2**31 - 1),
    auto_reset=st.booleans(),
    data=st.data(),
)
def test_every_step_conserves_staff_and_respects_minima_capacity_and_budget(
    num_envs, n, integer, budget, capacity_factor, seed, auto_reset, data
):
    network_kwargs = {} if capacity_factor is None else {"capacity_factor": capacity_factor}
    env = HospitalEnv(
        n_hospitals=n,
        num_envs=num_envs,
        scenario="shifting+shock",
        horizon=6,
        transfer_budget=budget,
        integer=integer,
        auto_reset=auto_reset,
        network_kwargs=network_kwargs,
        max_action=50.0,
    )
    obs = env.reset(seed=seed)
    assert torch.isfinite(obs).all()
    for _ in range(data.draw(st.integers(1, 9), label="steps")):
        if not auto_reset and bool((env.t >= env.horizon).any()):
            break
        action = data.draw(arrays(np.float64, (num_envs, n), elements=action_values))
        current, minimum = env.current.clone(), env.minimum.clone()
        capacity = env.capacity.clone()
        obs, reward, terminated, truncated, info = env.step(torch.from_numpy(action))
        net = info["net_transfer"]
        allocation = current + net
        # conservation: transfers never change the total
        if integer:
            assert torch.equal(allocation.sum(1), current.sum(1))
            assert torch.equal(allocation, torch.round(allocation))
            assert torch.equal(env.current, torch.round(env.current))
        else:
            assert torch.allclose(allocation.sum(1), current.sum(1), rtol=0, atol=1e-6)
        torch.testing.assert_close(info["total"], allocation.sum(1))
        # minima: a transfer never takes a hospital below its minimum; below it, only receive
        senders = net < 0
        assert bool((allocation[senders] >= minimum[senders] - 1e-9).all())
        assert bool((net[current < minimum] >= 0).all())
        # capacity and budget
        receivers = net > 0
        assert bool((allocation[receivers] <= capacity[receivers] + 1e-9).all())
        moved_out = torch.clamp(-net, min=0).sum(1)
        moved_in = torch.clamp(net, min=0).sum(1)
        torch.testing.assert_close(moved_out, info["moved"], atol=1e-9, rtol=0)
        torch.testing.assert_close(moved_in, info["moved"], atol=1e-9, rtol=0)
        if budget is not None:
            assert bool((info["moved"] <= budget + 1e-9).all())
        # shocks are the only other change of the total
        if not auto_reset:
            torch.testing.assert_close(
                env.current.sum(1), info["total"] - info["shock_loss"], atol=1e-9, rtol=0
            )
        assert bool((info["shock_loss"] >= 0).all())
        # nothing non-finite anywhere
        assert torch.isfinite(obs).all() and torch.isfinite(reward).all()
        for key, value in info.items():
            if key == "episode_metrics":  # the contract's dict of (num_envs,) tensors
                assert all(torch.isfinite(v).all() for v in value.values())
                continue
            assert torch.isfinite(value.double()).all(), key
        assert not bool(terminated.any())


@settings(deadline=None, max_examples=25)
@given(
    n=st.integers(1, 30),
    integer=st.booleans(),
    budget=st.one_of(st.none(), st.floats(0, 100)),
    seed=st.integers(0, 2**31 - 1),
)
def test_clearing_rule_guarantees_on_random_states(n, integer, budget, seed):
    rng = np.random.default_rng(seed)
    minimum = rng.integers(0, 20, size=(3, n)).astype(float)
    current = np.maximum(0.0, minimum + rng.integers(-5, 15, size=(3, n)))
    capacity = np.where(rng.random((3, n)) < 0.5, INF, current + rng.integers(0, 6, size=(3, n)))
    if not integer:
        current = current + rng.random((3, n))
        minimum = minimum + rng.random((3, n))
    action = rng.normal(0.0, 10.0, size=(3, n))
    c, m, u, a = (torch.from_numpy(x) for x in (current, minimum, capacity, action))
    given_, received, volume = clear_transfers(c, m, u, a, budget, integer=integer)
    allocation = c - given_ + received
    assert bool(((given_ == 0) | (received == 0)).all())
    assert bool((given_ >= 0).all() and (received >= 0).all())
    assert bool((allocation[given_ > 0] >= m[given_ > 0] - 1e-9).all())
    assert bool((allocation[received > 0] <= u[received > 0] + 1e-9).all())
    if integer:
        assert torch.equal(given_.sum(1), volume) and torch.equal(received.sum(1), volume)
        assert torch.equal(given_, torch.round(given_)) and torch.equal(volume, volume.floor())
    else:
        torch.testing.assert_close(given_.sum(1), volume)
        torch.testing.assert_close(received.sum(1), volume)
    if budget is not None:
        assert bool((volume <= budget + 1e-9).all())
    # nobody gives or gets more than asked (rounded up to whole staff in integer mode)
    offered, requested = torch.clamp(-a, min=0), torch.clamp(a, min=0)
    if integer:
        offered, requested = torch.ceil(offered), torch.ceil(requested)
    assert bool((given_ <= offered + 1e-9).all())
    assert bool((received <= requested + 1e-9).all())


# ---------------------------------------------------------------------- seeding and resets
def rollout(env: HospitalEnv, seed: int, steps: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1234)
    out = [env.reset(seed=seed)]
    for _ in range(steps):
        action = torch.randn(env.num_envs, env.n, generator=generator) * 5
        obs, reward, _, _, info = env.step(action)
        out += [obs, reward, info["reward_raw"], info["net_transfer"]]
    return out


def test_same_seed_gives_identical_trajectories():
    kwargs = {"n_hospitals": 9, "num_envs": 3, "scenario": "shifting+shock", "horizon": 8}
    first = rollout(HospitalEnv(**kwargs), seed=11, steps=8)
    second = rollout(HospitalEnv(**kwargs), seed=11, steps=8)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
    other = rollout(HospitalEnv(**kwargs), seed=12, steps=8)
    assert not torch.equal(first[0], other[0])


def test_constructor_seed_is_the_default_reset_seed():
    a = HospitalEnv(n_hospitals=6, seed=9).reset()
    b = HospitalEnv(n_hospitals=6, seed=9).reset()
    c = HospitalEnv(n_hospitals=6).reset(seed=9)
    assert torch.equal(a, b) and torch.equal(a, c)


def test_copies_get_different_draws_and_episodes_differ():
    env = HospitalEnv(n_hospitals=8, num_envs=4, scenario="shifting+shock", seed=2)
    obs = env.reset()
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.equal(obs[i], obs[j])
    assert not torch.equal(env.reset(), obs)  # an unseeded reset starts a new episode


def test_fixed_network_is_shared_by_every_copy():
    env = HospitalEnv(network=example_network(), num_envs=3, scenario="shock", horizon=4)
    obs = env.reset(seed=1)
    assert torch.equal(obs[0], obs[1]) and torch.equal(obs[1], obs[2])
    hit = {int(r.shock_hospital[0]) for r in env.realisations}
    assert all(r.shock_step.tolist() == [2] for r in env.realisations)
    assert len(hit) >= 1


def test_auto_reset_restarts_finished_copies_and_reports_the_final_observation():
    env = HospitalEnv(n_hospitals=5, num_envs=2, horizon=3, auto_reset=True, seed=4)
    first = env.reset()
    networks = list(env.networks)
    for _ in range(3):
        obs, _, _, truncated, info = env.step(torch.zeros(2, 5))
    assert bool(truncated.all()) and bool(info["reset_mask"].all())
    assert torch.allclose(info["final_obs"][..., 9], torch.zeros(2, 5))  # time left 0
    assert torch.allclose(obs[..., 9], torch.ones(2, 5))  # a new episode
    assert env.t.tolist() == [0, 0]
    assert all(a is not b for a, b in zip(networks, env.networks, strict=True))
    assert not torch.equal(obs, first)
    obs, _, _, truncated, _ = env.step(torch.zeros(2, 5))  # keeps going
    assert not bool(truncated.any())


def test_reset_done_resets_only_the_masked_copies():
    env = HospitalEnv(n_hospitals=5, num_envs=3, horizon=4, seed=8)
    env.reset()
    env.step(torch.zeros(3, 5))
    kept = env.current[[0, 2]].clone()
    env.reset_done(torch.tensor([False, True, False]))
    assert env.t.tolist() == [1, 0, 1]
    assert torch.equal(env.current[[0, 2]], kept)


# ---------------------------------------------------------------------- validation
def test_invalid_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="n_hospitals"):
        HospitalEnv(network=example_network(), n_hospitals=5)
    with pytest.raises(ValueError, match="transfer_budget"):
        HospitalEnv(n_hospitals=3, transfer_budget=-1)
    with pytest.raises(ValueError, match="num_envs"):
        HospitalEnv(n_hospitals=3, num_envs=0)
    with pytest.raises(ValueError, match="reward_scale"):
        HospitalEnv(n_hospitals=3, reward_scale=0.0)
    with pytest.raises(ValueError, match="max_action"):
        HospitalEnv(n_hospitals=3, max_action=math.inf)
    with pytest.raises(ValueError, match="reward_weights.fairness"):
        RewardWeights(fairness=-1.0)
    with pytest.raises(ValueError, match="reward_weights: unknown term 'fair'"):
        HospitalEnv(n_hospitals=3, reward_weights={"fair": 0.0})
    assert HospitalEnv(n_hospitals=3, reward_weights={"fairness": 0}).reward_weights == (
        RewardWeights(fairness=0.0)
    )
    env = HospitalEnv(n_hospitals=3, num_envs=2)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(torch.zeros(3))


def test_integer_mode_rejects_fractional_staff():
    network = HospitalNetwork(current=[2.5, 3.0], minimum=[1.0, 1.0], target=[3.0, 3.0])
    with pytest.raises(ValueError, match="current"):
        HospitalEnv(network=network, integer=True)


# ---------------------------------------------------------------------- views
def test_gymnasium_view_passes_the_official_checker():
    from gymnasium.utils.env_checker import check_env

    env = HospitalGymEnv(n_hospitals=6, scenario="shifting+shock", horizon=8, transfer_budget=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # unbounded / un-normalised Box advice
        check_env(env, skip_render_check=True)
    assert env.observation_space.shape == (6 * env.core.obs_dim,)
    assert env.action_space.shape == (6,)


def test_gymnasium_make_builds_the_registered_environment():
    env = gymnasium.make("marra/Hospital-v0", n_hospitals=10)
    obs, info = env.reset(seed=0)
    assert obs.shape == (10 * env.unwrapped.core.obs_dim,) and obs.dtype == np.float32
    total = 0
    while True:
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        total += 1
        assert isinstance(reward, float) and np.isfinite(reward)
        if terminated or truncated:
            break
    assert total == 50
    assert info["net_transfer"].shape == (10,)
    env.close()


def test_gymnasium_view_matches_the_batched_environment():
    view = HospitalGymEnv(n_hospitals=7, scenario="shifting+shock", horizon=5, flatten=False)
    core = HospitalEnv(n_hospitals=7, scenario="shifting+shock", horizon=5)
    obs_view, _ = view.reset(seed=3)
    obs_core = core.reset(seed=3)
    np.testing.assert_array_equal(obs_view, obs_core[0].numpy())
    rng = np.random.default_rng(0)
    for _ in range(5):
        action = rng.normal(0, 8, size=7).astype(np.float32)
        obs_view, reward_view, _, _, _ = view.step(action)
        obs_core, reward_core, _, _, _ = core.step(torch.from_numpy(action[None]))
        np.testing.assert_array_equal(obs_view, obs_core[0].numpy())
        assert reward_view == float(reward_core[0, 0])


def test_registration_is_not_repeated():
    import importlib

    importlib.reload(marra.envs)
    assert "marra/Hospital-v0" in gymnasium.envs.registry


def test_pettingzoo_view_passes_the_parallel_api_test():
    env = hospital_parallel_env(n_hospitals=5, scenario="shifting+shock", horizon=10)
    parallel_api_test(env, num_cycles=30)
    assert env.possible_agents == [f"hospital_{i}" for i in range(5)]
    assert env.observation_space("hospital_0").shape == (env.core.obs_dim,)
    assert env.action_space("hospital_0").shape == (1,)


def test_pettingzoo_view_passes_the_seed_test():
    parallel_seed_test(
        lambda: hospital_parallel_env(n_hospitals=4, scenario="shifting+shock", horizon=6),
        num_cycles=10,
    )


def test_pettingzoo_agents_share_the_team_reward():
    env = hospital_parallel_env(n_hospitals=4, horizon=2, integer=True)
    env.reset(seed=0)
    actions = {agent: np.array([(-1) ** i * 3.0], np.float32) for i, agent in enumerate(env.agents)}
    obs, rewards, terminations, truncations, infos = env.step(actions)
    assert len(set(rewards.values())) == 1
    assert set(obs) == set(env.possible_agents)
    assert sum(info["net_transfer"] for info in infos.values()) == 0
    _, _, _, truncations, _ = env.step(actions)
    assert all(truncations.values()) and env.agents == []
    assert env.state().shape == (env.core.state_dim,)


def test_importing_marra_envs_does_not_load_torch():
    code = "import sys, marra.envs; print('torch' in sys.modules, 'pettingzoo' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("spec", ["static", "shifting", "shock", "seasonal", "outbreak"])
def test_every_built_in_scenario_runs_on_random_networks(spec):
    env = HospitalEnv(n_hospitals=12, num_envs=2, scenario=spec, horizon=10, seed=0)
    obs = env.reset()
    for _ in range(10):
        obs, reward, _, truncated, info = env.step(torch.randn(2, 12) * 5)
        assert torch.isfinite(obs).all() and torch.isfinite(reward).all()
    assert bool(truncated.all())


def test_environment_stepped_under_inference_mode_can_be_reset_outside_it():
    env = HospitalEnv(n_hospitals=5, num_envs=2, horizon=3, auto_reset=True, seed=0)
    with torch.inference_mode():
        env.reset()
        for _ in range(4):
            env.step(torch.zeros(2, 5))
    env.reset()
    env.reset_done([True, False])
    env.step(torch.zeros(2, 5))
    assert env.t.tolist() == [1, 1]
