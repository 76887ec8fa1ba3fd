"""Tests of the PPO learner (marra.rl): GAE, determinism, checkpoints and resume, learning,
policy files, scale-free deployment and the NaN guard."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from marra.envs.base import ActionSpec, EnvSpec, MultiAgentEnv
from marra.envs.hospital import HospitalEnv
from marra.rl import (
    POLICY_FORMAT_VERSION,
    CheckpointError,
    PolicyFileError,
    PPOConfig,
    TrainingError,
    build_model,
    compute_gae,
    evaluate_policy,
    load_checkpoint,
    load_policy,
    train,
)
from marra.rl.networks import RunningNorm
from marra.rl.policy import save_policy

SMALL_ENV = {"n_hospitals": 10, "horizon": 10, "scenario": "shifting"}
# 4 copies x 10 steps = 40 env-steps per iteration
SMALL = PPOConfig(
    critic="pool",  # marra 0.1's centralised critic
    total_steps=120,
    num_envs=4,
    seed=3,
    actor_hidden=(16, 16),
    critic_encoder_hidden=(16,),
    critic_hidden=(16,),
    update_epochs=2,
    num_minibatches=2,
    checkpoint_every=1,
    torch_threads=1,  # tiny networks: one thread is faster, and immune to a busy machine
)


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- GAE
def test_gae_matches_hand_computed_case():
    """gamma = 0.9, lambda = 0.5, so gamma * lambda = 0.45.

    Column 0: rewards (1, 2, 3), values (0.5, 1.0, 1.5), the episode ends after step 2
    (dones = 0, 0, 1), so last_value = 10 is ignored:
        delta_2 = 3 - 1.5                  = 1.5    A_2 = 1.5
        delta_1 = 2 + 0.9 * 1.5 - 1.0      = 2.35   A_1 = 2.35 + 0.45 * 1.5   = 3.025
        delta_0 = 1 + 0.9 * 1.0 - 0.5      = 1.4    A_0 = 1.4  + 0.45 * 3.025 = 2.76125
    Column 1: same rewards and values, an episode ends after step 1 (dones = 0, 1, 0), and the
    next one is cut after step 2, bootstrapped with last_value = 10:
        delta_2 = 3 + 0.9 * 10 - 1.5       = 10.5   A_2 = 10.5
        delta_1 = 2 - 1.0                  = 1.0    A_1 = 1.0 (nothing carried across the end)
        delta_0 = 1 + 0.9 * 1.0 - 0.5      = 1.4    A_0 = 1.4 + 0.45 * 1.0   = 1.85
    Returns are A + V.
    """
    rewards = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]], dtype=torch.float64)
    values = torch.tensor([[0.5, 0.5], [1.0, 1.0], [1.5, 1.5]], dtype=torch.float64)
    dones = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    last_value = torch.tensor([10.0, 10.0], dtype=torch.float64)

    advantages, returns = compute_gae(rewards, values, dones, last_value, gamma=0.9, lam=0.5)

    expected = torch.tensor([[2.76125, 1.85], [3.025, 1.0], [1.5, 10.5]], dtype=torch.float64)
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, expected + values)


@settings(deadline=None, max_examples=30)
@given(
    rewards=st.lists(st.floats(-10, 10), min_size=1, max_size=8),
    gamma=st.floats(0.0, 1.0),
    seed=st.integers(0, 1000),
)
def test_gae_with_lambda_one_returns_discounted_return(rewards, gamma, seed):
    """With lambda = 1 and the episode ending at the last step, the returns are the Monte Carlo
    discounted returns sum_l gamma^l r_{t+l} (the target of paper 000 Eq. 7), whatever V is."""
    horizon = len(rewards)
    r = torch.tensor(rewards, dtype=torch.float64).unsqueeze(1)
    values = torch.randn((horizon, 1), generator=torch.Generator().manual_seed(seed)).double()
    dones = torch.zeros((horizon, 1), dtype=torch.float64)
    dones[-1] = 1.0
    _, returns = compute_gae(r, values, dones, torch.zeros(1, dtype=torch.float64), gamma, 1.0)
    expected = [sum(gamma**k * rewards[t + k] for k in range(horizon - t)) for t in range(horizon)]
    torch.testing.assert_close(returns[:, 0], torch.tensor(expected, dtype=torch.float64))


def test_per_hospital_gae_with_one_hospital_equals_the_team_gae():
    """reward_mode="agent" runs compute_gae on (T, E, n); with n = 1 the hospital's reward is
    the team reward, so its advantages and returns must be the team ones exactly."""
    generator = torch.Generator().manual_seed(5)
    rewards = torch.randn((6, 3), generator=generator, dtype=torch.float64)
    values = torch.randn((6, 3), generator=generator, dtype=torch.float64)
    dones = torch.zeros((6, 3), dtype=torch.float64)
    dones[2, 1] = dones[-1] = 1.0
    last_value = torch.randn(3, generator=generator, dtype=torch.float64)
    team = compute_gae(rewards, values, dones, last_value, gamma=0.9, lam=0.8)
    per_hospital = compute_gae(
        rewards.unsqueeze(-1), values.unsqueeze(-1), dones.unsqueeze(-1),
        last_value.unsqueeze(-1), gamma=0.9, lam=0.8,
    )  # fmt: skip
    for a, b in zip(per_hospital, team, strict=True):
        assert a.shape == (6, 3, 1)
        torch.testing.assert_close(a.squeeze(-1), b)


# --------------------------------------------------------------------------- networks
def _hospital_spec(n: int = 7) -> EnvSpec:
    return HospitalEnv(n_hospitals=n, horizon=5).spec


def test_actor_is_shared_per_hospital_and_critic_is_permutation_invariant():
    torch.manual_seed(0)
    config = PPOConfig(actor_hidden=(16, 16), critic="pool", obs_norm=False)
    model = build_model(_hospital_spec(), config)
    actor, critic = model.actor, model.critic
    obs = torch.randn(3, 7, 11)
    perm = torch.randperm(7)
    # the actor treats every hospital alike: permuting hospitals permutes the actions
    torch.testing.assert_close(actor(obs[:, perm], None), actor(obs, None)[:, perm])
    # each hospital's action depends on its own row only
    changed = obs.clone()
    changed[:, 0] += 1.0
    torch.testing.assert_close(actor(changed, None)[:, 1:], actor(obs, None)[:, 1:])
    # the centralised (pooled) critic sees a set of hospitals: order does not matter
    torch.testing.assert_close(critic(obs[:, perm], None, None), critic(obs, None, None))
    assert critic(obs, None, None).shape == (3,)


# --------------------------------------------------------------------------- determinism
def test_same_seed_gives_identical_parameters_and_metrics(tmp_path):
    first = train(SMALL, SMALL_ENV, out_dir=tmp_path / "a", progress=False)
    second = train(SMALL, SMALL_ENV, out_dir=tmp_path / "b", progress=False)
    other = train(SMALL.replace(seed=4), SMALL_ENV, out_dir=tmp_path / "c", progress=False)

    assert _same(_params(first.agent), _params(second.agent))
    timing = {"elapsed_s", "steps_per_s", "agent_steps_per_s", "rollout_s", "update_s"}
    strip = [{k: v for k, v in row.items() if k not in timing} for row in first.history]
    assert strip == [{k: v for k, v in row.items() if k not in timing} for row in second.history]
    assert not _same(_params(first.agent), _params(other.agent))


# --------------------------------------------------------------------------- checkpoints
class _Interrupt(Exception):
    pass


def _stop_after(iteration: int):
    def log_fn(row):
        if row["iteration"] == iteration:
            raise _Interrupt

    return log_fn


def test_resume_continues_the_run_and_ends_with_the_same_parameters(tmp_path):
    config = SMALL.replace(total_steps=160, checkpoint_every=2)  # 4 iterations
    whole = train(config, SMALL_ENV, out_dir=tmp_path / "whole", progress=False)

    # the run dies in iteration 3, after logging it but before its checkpoint (every 2)
    run = tmp_path / "interrupted"
    with pytest.raises(_Interrupt):
        train(config, SMALL_ENV, out_dir=run, progress=False, log_fn=_stop_after(3))
    saved = load_checkpoint(run / "checkpoint.pt")
    assert (saved["iteration"], saved["env_steps"]) == (2, 80)
    assert {"model", "optimizer", "rng", "config", "env_settings"} <= set(saved)
    assert {"generator", "torch", "numpy", "python"} <= set(saved["rng"])

    resumed = train(config, SMALL_ENV, out_dir=run, resume=True, progress=False)

    assert [row["iteration"] for row in resumed.history] == [3, 4]
    assert [row["env_steps"] for row in resumed.history] == [120, 160]
    assert resumed.env_steps == whole.env_steps == 160
    assert _same(_params(resumed.agent), _params(whole.agent))
    assert resumed.history[-1]["policy_loss"] == whole.history[-1]["policy_loss"]
    with (run / "train_log.csv").open() as handle:
        assert [int(row["iteration"]) for row in csv.DictReader(handle)] == [1, 2, 3, 4]
    assert not list(run.glob(".*.tmp"))  # atomic writes leave no temporary files
    features = load_policy(resumed.policy_path).obs_spec["features"]
    assert features[0] == "current/s" and len(features) == HospitalEnv.obs_dim


def test_resume_refuses_a_different_config_and_a_fresh_run_refuses_to_overwrite(tmp_path):
    train(SMALL, SMALL_ENV, out_dir=tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="learning_rate"):
        train(SMALL.replace(learning_rate=0.1), SMALL_ENV, out_dir=tmp_path, resume=True)
    with pytest.raises(ValueError, match="already holds a run"):
        train(SMALL, SMALL_ENV, out_dir=tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train(SMALL, SMALL_ENV, out_dir=tmp_path / "empty", resume=True, progress=False)
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="checkpoint.pt.*truncated or corrupt"):
        train(SMALL, SMALL_ENV, out_dir=tmp_path, resume=True, progress=False)


def test_train_writes_log_policy_and_notes(tmp_path):
    result = train(SMALL.replace(critic="local"), SMALL_ENV, out_dir=tmp_path, progress=False)
    with result.log_path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3
    for column in ("iteration", "env_steps", "return", "team_return", "mae", "gini",
                   "coverage_gini", "policy_loss", "value_loss", "entropy", "approx_kl",
                   "steps_per_s", "agent_steps_per_s", "rollout_s", "update_s"):  # fmt: skip
        assert column in rows[0] and math.isfinite(float(rows[-1][column]))
    assert result.policy_path.is_file() and result.checkpoint_path.is_file()
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        assert any("tensorboard" in note for note in result.notes)


# --------------------------------------------------------------------------- learning
def test_trained_policy_beats_doing_nothing_on_mae(tmp_path):
    env_kwargs = {"n_hospitals": 10, "horizon": 20, "scenario": "shifting"}
    config = PPOConfig(total_steps=16 * 20 * 25, num_envs=16, seed=0, torch_threads=1)
    result = train(config, env_kwargs, out_dir=tmp_path, progress=False)
    policy = load_policy(result.policy_path)

    env = HospitalEnv(n_hospitals=10, horizon=20, scenario="shifting", num_envs=64)
    learned = evaluate_policy(policy.act, env, seed=12345)
    hold = evaluate_policy(lambda obs: torch.zeros(obs.shape[:-1]), env, seed=12345)
    # measured: MAE about 2.2 against 9.7 for doing nothing (seeds 0, 1, 2), in about 3 s
    assert learned["mae"] < 0.4 * hold["mae"], (learned["mae"], hold["mae"])
    assert learned["episode_reward"] > hold["episode_reward"]


def test_agent_reward_mode_learns_on_a_small_network(tmp_path):
    env_kwargs = {"n_hospitals": 10, "horizon": 20, "scenario": "shifting"}
    config = PPOConfig(total_steps=16 * 20 * 25, num_envs=16, seed=0)
    result = train(config, {**env_kwargs, "agent_rewards": True}, out_dir=tmp_path, progress=False)
    assert result.agent.critic.per_agent  # one value per hospital
    policy = load_policy(result.policy_path)

    env = HospitalEnv(n_hospitals=10, horizon=20, scenario="shifting", num_envs=64)
    learned = evaluate_policy(policy.act, env, seed=12345)
    hold = evaluate_policy(lambda obs: torch.zeros(obs.shape[:-1]), env, seed=12345)
    assert learned["mae"] < 0.4 * hold["mae"], (learned["mae"], hold["mae"])
    assert learned["episode_reward"] > hold["episode_reward"]


def test_per_hospital_central_critic_is_permutation_equivariant():
    torch.manual_seed(0)
    spec = HospitalEnv(n_hospitals=7, horizon=5, agent_rewards=True).spec
    critic = build_model(spec, PPOConfig(critic="pool", critic_hidden=(16,))).critic
    obs = torch.randn(3, 7, 11)
    perm = torch.randperm(7)
    assert critic(obs, None, None).shape == (3, 7)
    torch.testing.assert_close(critic(obs[:, perm], None, None), critic(obs, None, None)[:, perm])


def test_policy_trained_on_20_hospitals_runs_on_500(tmp_path):
    config = SMALL.replace(total_steps=40)
    result = train(config, {**SMALL_ENV, "n_hospitals": 20}, out_dir=tmp_path, progress=False)
    policy = load_policy(result.policy_path)
    env = HospitalEnv(n_hospitals=500, num_envs=2, horizon=5, seed=1)
    obs = env.reset()
    action = policy.act(obs)
    assert action.shape == (2, 500) and torch.isfinite(action).all()
    assert policy.act(obs[0]).shape == (500,)
    metrics = evaluate_policy(policy.act, env, seed=7)
    assert math.isfinite(metrics["mae"])
    with pytest.raises(ValueError, match="obs"):
        policy.act(torch.zeros(2, 500, policy.obs_dim + 1))


# --------------------------------------------------------------------------- policy files
def _model(seed: int = 0):
    torch.manual_seed(seed)
    config = PPOConfig(actor_hidden=(8, 8), init_log_std=-1.0, action_scale=5.0)
    return build_model(_hospital_spec(4), config), config


@pytest.fixture
def policy_file(tmp_path):
    model, config = _model()
    return save_policy(
        tmp_path / "policy.pt", model, config=config, spec=_hospital_spec(4), env_name="hospital",
        env_options={"n_hospitals": 4, "horizon": 5}, env_settings={"n": 3},
    )  # fmt: skip


def test_policy_file_round_trip(policy_file):
    policy = load_policy(policy_file)
    obs = torch.randn(2, 4, 11)
    reference, _ = _model()
    torch.testing.assert_close(policy.act(obs), 5.0 * reference.actor(obs, None).squeeze(-1))
    assert policy.env_settings == {"n": 3}
    assert policy.env["name"] == "hospital" and policy.env["options"]["n_hospitals"] == 4
    assert load_policy(policy_file.parent).obs_dim == 11  # the run folder works too


def test_truncated_policy_file_gives_a_clear_error(policy_file):
    data = policy_file.read_bytes()
    policy_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(PolicyFileError, match="policy.pt.*not a marra policy file") as caught:
        load_policy(policy_file)
    assert "\n" not in str(caught.value)


def test_policy_file_of_another_format_version_gives_a_clear_error(policy_file):
    data = torch.load(policy_file, weights_only=True)
    data["format_version"] = POLICY_FORMAT_VERSION + 1
    torch.save(data, policy_file)
    with pytest.raises(PolicyFileError, match=r"policy.pt.*format version 3"):
        load_policy(policy_file)


def test_other_files_are_not_policies(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(PolicyFileError, match="not a marra policy"):
        load_policy(tmp_path / "other.pt")
    with pytest.raises(PolicyFileError, match="no such file"):
        load_policy(tmp_path / "missing.pt")
    assert issubclass(PolicyFileError, ValueError)


# --------------------------------------------------------------------------- NaN guard
class StandInEnv(MultiAgentEnv):
    """A tiny batched environment on the contract (a user's own class, not registered): each
    agent's gap moves by its action, reward = -mean gap^2 (team). Faults on demand: step
    ``nan_at`` returns NaN rewards; from reset number ``explode_at_reset`` on, rewards are
    multiplied by 1e37. (marra 0.1's stand-in followed the hospital's old step tuple; the
    contract changed, so it is a MultiAgentEnv now.)"""

    def __init__(self, *, horizon=5, n=4, nan_at=None, explode_at_reset=None, **base):
        super().__init__(**base)
        self.n, self.nan_at, self.explode_at_reset = n, nan_at, explode_at_reset
        self.resets = 0
        self.reward_factor = 1.0
        self._spec = EnvSpec(
            name="stand-in", num_agents=n, agent_ids=tuple(f"a{i}" for i in range(n)),
            obs_dim=3, state_dim=1, action=ActionSpec.continuous(1, -5.0, 5.0),
            horizon=horizon, reward="team", metrics=("mae",), baselines=(),
        )  # fmt: skip
        self.gap = torch.zeros((self.num_envs, n))

    @property
    def spec(self):
        return self._spec

    def _reset_copies(self, rows, seeds):
        self.resets += 1
        if self.explode_at_reset is not None and self.resets >= self.explode_at_reset:
            self.reward_factor = 1e37
        for row, sequence in zip(rows, seeds, strict=True):
            generator = torch.Generator().manual_seed(int(sequence.generate_state(1)[0]))
            self.gap[row] = torch.randn(self.n, generator=generator)

    def _observe(self):
        time_left = (1.0 - self.t.float() / self._spec.horizon).unsqueeze(1).expand_as(self.gap)
        return torch.stack([self.gap, -self.gap, time_left], dim=-1).float()

    def state(self):
        return self.gap.abs().mean(-1, keepdim=True).float()

    def _transition(self, actions):
        self.gap = self.gap + actions[..., 0].float() * 0.1
        reward = -(self.gap**2).mean(-1) * self.reward_factor
        if int(self.t[0]) + 1 == self.nan_at:
            reward = torch.full_like(reward, float("nan"))
        terminated = torch.zeros(self.num_envs, dtype=torch.bool)
        return reward.unsqueeze(1).expand(-1, self.n), terminated, {}

    def _episode_metrics(self, done):
        return {"mae": self.gap.abs().mean(-1)}


def test_nan_reward_stops_training_and_writes_no_policy(tmp_path):
    config = SMALL.replace(total_steps=20)
    env_kwargs = {"horizon": 5, "nan_at": 3}
    with pytest.raises(TrainingError, match="non-finite rewards"):
        train(config, env_kwargs, out_dir=tmp_path, progress=False, make_env=StandInEnv)
    assert not (tmp_path / "policy.pt").exists()


def test_exploding_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    config = SMALL.replace(total_steps=20 * 3, norm_value=False)  # 3 iterations of 20 steps
    # iteration 1 is healthy; in iteration 2 rewards of ~1e37 are finite, but the squared value
    # error overflows float32: the loss guard must stop the run
    env_kwargs = {"horizon": 5, "explode_at_reset": 2}
    saved = []
    with pytest.raises(TrainingError, match="iteration 2: non-finite loss"):
        train(
            config,
            env_kwargs,
            out_dir=tmp_path,
            make_env=StandInEnv,
            progress=False,
            log_fn=lambda row: saved.append(load_checkpoint(tmp_path / "checkpoint.pt")),
        )
    assert not (tmp_path / "policy.pt").exists()
    after = load_checkpoint(tmp_path / "checkpoint.pt")
    assert after["iteration"] == 1 and len(saved) == 1
    for name, tensor in after["model"].items():
        assert torch.isfinite(tensor).all(), name
        assert torch.equal(tensor, saved[0]["model"][name])


def test_stand_in_env_trains_through_make_env(tmp_path):
    result = train(SMALL.replace(total_steps=40), {"horizon": 5}, out_dir=tmp_path,
                   make_env=StandInEnv, progress=False)  # fmt: skip
    assert result.iterations == 2 and "mae" in result.final


# --------------------------------------------------------------------------- observation norm
@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 30), min_size=1, max_size=5),
    seed=st.integers(0, 2**31 - 1),
    shift=st.floats(-50, 50),
)
def test_running_norm_merges_batches_exactly(sizes, seed, shift):
    generator = torch.Generator().manual_seed(seed)
    batches = [shift + 3.0 * torch.randn(k, 4, 3, generator=generator) for k in sizes]
    norm = RunningNorm(3)
    for batch in batches:
        norm.update(batch)
    rows = torch.cat(batches).reshape(-1, 3).double()
    assert norm.count.item() == rows.shape[0]
    torch.testing.assert_close(norm.mean, rows.mean(0), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(norm.var, rows.var(0, correction=0), rtol=1e-9, atol=1e-9)
    scaled = norm(rows.float())
    assert scaled.abs().max() <= norm.clip
    expected = (rows - rows.mean(0)) / torch.sqrt(rows.var(0, correction=0) + norm.floor**2)
    torch.testing.assert_close(scaled, expected.clamp(-10, 10).float(), rtol=1e-4, atol=1e-4)


def test_running_norm_hand_worked_case_and_disabled_identity():
    norm = RunningNorm(1, floor=0.0)
    norm.update(torch.tensor([[1.0], [3.0]]))
    norm.update(torch.tensor([[5.0], [7.0]]))  # all four: mean 4, variance (9+1+1+9)/4 = 5
    assert norm.mean.item() == 4.0 and norm.var.item() == 5.0
    assert norm(torch.tensor([[4.0 + 5.0**0.5]])).item() == pytest.approx(1.0)
    off = RunningNorm(2, enabled=False)
    off.update(torch.ones(3, 2))
    x = torch.randn(5, 2)
    assert off.count.item() == 0 and torch.equal(off(x), x)


def test_obs_norm_statistics_train_and_travel_in_the_policy_file(tmp_path):
    config = SMALL.replace(obs_norm=True, total_steps=80)
    result = train(config, SMALL_ENV, out_dir=tmp_path, progress=False)
    norm = result.agent.actor.obs_norm
    # the first reset's observations, then two iterations of 4 copies x 10 steps x 10 hospitals
    assert norm.enabled and norm.count.item() == 4 * 10 + 2 * 4 * 10 * 10
    policy = load_policy(result.policy_path)
    assert policy.actor.obs_norm.enabled
    obs = HospitalEnv(n_hospitals=30, num_envs=2, horizon=5, seed=2).reset()
    expected = 10.0 * result.agent.actor(obs, None).squeeze(-1)  # the hospital's 10 staff
    torch.testing.assert_close(policy.act(obs), expected.detach())


def test_policy_file_without_obs_norm_entry_loads_as_unnormalised(policy_file):
    data = torch.load(policy_file, weights_only=True)
    data["actor"]["obs_norm"] = False
    for key in [k for k in data["actor"]["state_dict"] if k.startswith("obs_norm.")]:
        del data["actor"]["state_dict"][key]
    torch.save(data, policy_file)
    assert not load_policy(policy_file).actor.obs_norm.enabled
