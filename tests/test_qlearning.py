"""Value-based learners (IQL, VDN, QMIX, CW-QMIX) and MADDPG on the one training loop:
coordination on matrix games, roles for IQL, the replay buffer, masks, determinism and resume,
policy files, capability errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from marra.envs.base import ActionSpec, EnvSpec, MultiAgentEnv
from marra.envs.matrix_games import MatrixGame, TwoStepGame
from marra.rl import (
    ALGORITHMS,
    CheckpointError,
    CompatibilityError,
    Constraint,
    EpisodeBuffer,
    MADDPGConfig,
    PPOConfig,
    QConfig,
    ReplaySignals,
    build_algorithm,
    load_checkpoint,
    load_policy,
    train,
)
from marra.rl.qlearning import QLearning, QMixer
from marra.rl.replay import Segment, collect_segment, gradient_steps, linear_schedule

torch.set_num_threads(1)

ROLES = {"num_agents": 8, "num_roles": 4, "horizon": 10}


# --------------------------------------------------------------------------- tiny envs
class Masked(MultiAgentEnv):
    """3 agents, 4 actions; at step t agent i may use actions 0..(t + i) % 4 only (the env
    raises on a masked action); reward = the action index (so the unmasked optimum is 3)."""

    def __init__(self, *, num_envs=1, device="cpu", seed=None, autoreset=False):
        super().__init__(num_envs=num_envs, device=device, seed=seed, autoreset=autoreset)
        self._spec = EnvSpec(name="masked", num_agents=3, agent_ids=("a", "b", "c"), obs_dim=2,
                             state_dim=1, action=ActionSpec.discrete(4), horizon=6,
                             reward="agent")  # fmt: skip

    @property
    def spec(self):
        return self._spec

    def _reset_copies(self, rows, seeds):
        pass

    def _action_mask(self):
        limit = (self.t.view(-1, 1) + torch.arange(3).view(1, -1)) % 4  # (E, N)
        return torch.arange(4).view(1, 1, 4) <= limit.unsqueeze(-1)

    def _observe(self):
        t = self.t.to(torch.float32).view(-1, 1, 1).expand(self.num_envs, 3, 1)
        i = torch.arange(3, dtype=torch.float32).view(1, 3, 1).expand(self.num_envs, 3, 1)
        return torch.cat([t, i], dim=-1)

    def state(self):
        return self.t.to(torch.float32).view(-1, 1)

    def _transition(self, actions):
        return actions.to(torch.float32), torch.zeros(self.num_envs, dtype=torch.bool), {}


class Target(MultiAgentEnv):
    """3 agents with continuous actions in [-2, 2]; each sees its own goal in [-1.5, 1.5]
    (drawn per episode) and is rewarded -(a_i - goal_i)^2 (``reward="agent"``) or the team the
    mean of that (``"team"``)."""

    def __init__(self, reward="team", *, num_envs=1, device="cpu", seed=None, autoreset=False):
        super().__init__(num_envs=num_envs, device=device, seed=seed, autoreset=autoreset)
        self._spec = EnvSpec(name="target", num_agents=3, agent_ids=("a", "b", "c"), obs_dim=2,
                             state_dim=3, action=ActionSpec.continuous(1, -2.0, 2.0),
                             horizon=5, reward=reward)  # fmt: skip
        self.goal = torch.zeros(num_envs, 3)

    @property
    def spec(self):
        return self._spec

    def _reset_copies(self, rows, seeds):
        self.goal = self.goal.clone()
        for row, seq in zip(rows, seeds, strict=True):  # a test env: a loop over reset rows
            draw = np.random.default_rng(seq).uniform(-1.5, 1.5, 3)
            self.goal[row] = torch.as_tensor(draw, dtype=torch.float32)

    def _transition(self, actions):
        error = -((actions[..., 0].float() - self.goal) ** 2)
        if self._spec.reward == "team":
            error = error.mean(-1, keepdim=True).expand(-1, 3)
        return error, torch.zeros(self.num_envs, dtype=torch.bool), {}

    def _observe(self):
        return torch.stack([self.goal, torch.ones_like(self.goal)], dim=-1)

    def state(self):
        return self.goal.clone()


def _factory(cls, **fixed):
    return lambda **kw: cls(**fixed, **kw)


def _greedy_episode(model, env) -> float:
    """The team's undiscounted return of the greedy policy in copy 0."""
    obs, total = env.reset(seed=0), 0.0
    for _ in range(env.spec.horizon):
        step = env.step(model.actor.act(obs, model.groups(), env.action_mask()))
        total += float(step.reward[0, 0])
        obs = step.obs
        if bool(step.terminated[0] | step.truncated[0]):
            break
    return total


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# uniform exploration throughout (epsilon 1), as the QMIX paper's two-step experiment: the
# learners differ only in what their utilities can represent
UNIFORM = QConfig(
    sharing="none", epsilon_start=1.0, epsilon_finish=1.0, num_envs=64, batch_size=128,
    replay_ratio=4.0, learning_starts=64, target_update_every=50, hidden=(32,), obs_norm=False,
    learning_rate=3e-3, checkpoint_every=1000,
)  # fmt: skip


# --------------------------------------------------------------------------- coordination
def test_qmix_finds_the_two_step_optimum_that_iql_and_vdn_miss(tmp_path):
    """Two-step game under uniform exploration: QMIX's greedy joint policy earns 8 (B, then
    B/B); IQL and VDN earn 7 (A). Tabular values: IQL's agent 0 sees 2B worth 4.5 against a
    random partner (0.99 x 4.5 < 7); VDN's additive fit of [[0, 1], [1, 8]] peaks at 6.5;
    QMIX's monotonic mixing represents it (measured: 8/8/8 for QMIX, 7 for IQL and VDN on seeds
    0-2 after 6,400 env-steps, about 2 s each)."""
    returns, utilities = {}, {}
    for algo in ("iql", "vdn", "qmix"):
        result = train(UNIFORM.replace(algo=algo, total_steps=6400), {}, env="two-step",
                       out_dir=tmp_path / algo, progress=False,
                       make_env=_factory(TwoStepGame))  # fmt: skip
        model = result.agent
        returns[algo] = _greedy_episode(model, TwoStepGame(num_envs=1))
        with torch.no_grad():
            utilities[algo] = model.utilities(torch.eye(3)[:1].expand(2, 3).unsqueeze(0), None)
    assert returns == {"iql": 7.0, "vdn": 7.0, "qmix": 8.0}, returns
    q_first = utilities["iql"][0, 0]  # agent 0 in the first state: A ~ 6.9 > B ~ 4.5
    assert q_first[0] > q_first[1] + 1.0, q_first


def test_weighted_qmix_finds_the_optimum_monotonic_qmix_cannot_represent(tmp_path):
    """WQMIX paper, Figure 1's game ([[8, -12, -12], [-12, 0, 0], [-12, 0, 0]]) from uniform
    data: QMIX's projection puts the -12 penalties ahead of the 8 and settles on a 0 joint
    action; CW-QMIX weights the better joint actions and finds (0, 0) (measured on seeds 0-2:
    QMIX never (0, 0), CW-QMIX always, after 3,200 env-steps)."""
    greedy = {}
    for algo in ("qmix", "wqmix"):
        config = UNIFORM.replace(algo=algo, total_steps=3200, num_envs=128)
        result = train(config, {}, env="matrix", out_dir=tmp_path / algo, progress=False,
                       make_env=_factory(MatrixGame))  # fmt: skip
        with torch.no_grad():
            q = result.agent.utilities(torch.ones(1, 2, 1), None)[0]
        greedy[algo] = tuple(q.argmax(-1).tolist())
    assert greedy["wqmix"] == (0, 0), greedy
    assert greedy["qmix"] != (0, 0), greedy


@pytest.mark.parametrize("sharing", ["id", "none"])
def test_iql_learns_the_roles(tmp_path, sharing):
    """8 agents, 4 hidden roles, identical observations: IQL with separate or id-conditioned
    utilities reaches greedy accuracy >= 0.9 (measured ~1.0 after 2,400 env-steps)."""
    config = QConfig(algo="iql", sharing=sharing, total_steps=2400, seed=1, learning_starts=320,
                     epsilon_anneal_steps=1200, target_update_every=50,
                     checkpoint_every=100)  # fmt: skip
    result = train(config, ROLES, env="roles", out_dir=tmp_path, progress=False)
    policy = load_policy(tmp_path)
    env = policy.make_env(num_envs=16, seed=0)
    obs, correct = env.reset(seed=7), []
    for _ in range(env.spec.horizon):
        step = env.step(policy.act(obs, mask=env.action_mask()))
        correct.append(step.reward.mean().item())
        obs = step.obs
    assert np.mean(correct) >= 0.9, (np.mean(correct), result.final)


# --------------------------------------------------------------------------- the buffer
def _segment(e: int, t: int, value: float) -> Segment:
    n, d = 2, 3
    obs = torch.full((e, t + 1, n, d), value)
    obs[:, :, :, 0] = torch.arange(t + 1, dtype=torch.float32).view(1, -1, 1)  # the step index
    return Segment(obs=obs, state=torch.full((e, t + 1, 1), value), masks=torch.ones(
        e, t + 1, n, 4, dtype=torch.bool), actions=torch.zeros(e, t, n, dtype=torch.int64),
        rewards=torch.full((e, t, n), value), dones=torch.zeros(e, t), metrics={},
        signals={"cost": torch.full((e, t, n), -value)})  # fmt: skip


def test_the_buffer_overwrites_the_oldest_segments_and_pairs_each_step_with_the_next():
    buffer = EpisodeBuffer(3, 4, num_agents=2, obs_dim=3, state_dim=1, num_actions=4)
    buffer.add(_segment(2, 4, 1.0))
    buffer.add(_segment(2, 4, 2.0))  # fills slot 2, then overwrites slot 0
    assert (len(buffer), buffer.next, buffer.added) == (3, 1, 4)
    assert buffer.rewards[:, 0, 0].tolist() == [2.0, 1.0, 2.0]
    batch = buffer.sample(64, torch.Generator().manual_seed(0))
    assert batch.obs.shape == (64, 2, 3) and batch.actions.dtype == torch.int64
    torch.testing.assert_close(batch.next_obs[..., 0], batch.obs[..., 0] + 1.0)  # step t -> t+1
    torch.testing.assert_close(batch.signals["cost"], -batch.rewards)  # stored with the step
    copy = EpisodeBuffer(3, 4, num_agents=2, obs_dim=3, state_dim=1, num_actions=4)
    copy.load_state_dict(buffer.state_dict())
    again = copy.sample(64, torch.Generator().manual_seed(0))
    assert torch.equal(again.obs, batch.obs) and torch.equal(again.signals["cost"],
                                                             batch.signals["cost"])  # fmt: skip
    with pytest.raises(ValueError, match="does not fit"):
        buffer.add(_segment(4, 4, 0.0))


def test_a_collected_segment_holds_the_observation_after_every_step():
    env = TwoStepGame(num_envs=5, autoreset=True)
    calls = []

    def act(obs, state, mask):
        calls.append(obs.clone())
        action = torch.ones(5, 2, dtype=torch.int64)  # B, then B/B: 0 then 8
        return action, action

    segment = collect_segment(env, act, steps=2, seed=3, with_state=True)
    assert segment.obs.shape == (5, 3, 2, 3) and segment.state.shape == (5, 3, 3)
    assert torch.equal(segment.obs[:, 0], calls[0]) and torch.equal(segment.obs[:, 1], calls[1])
    assert segment.obs[0, 2, 0].tolist() == [0.0, 0.0, 1.0]  # the final state 2B, no reset
    assert segment.rewards[:, :, 0].tolist() == [[0.0, 8.0]] * 5
    assert segment.dones.tolist() == [[0.0, 1.0]] * 5
    assert segment.metrics["episodes"] == 5.0 and segment.metrics["team_return"] == 16.0


def test_schedules_and_gradient_steps_by_hand():
    assert linear_schedule(1.0, 0.05, 100, 0) == 1.0
    assert linear_schedule(1.0, 0.05, 100, 50) == pytest.approx(0.525)
    assert linear_schedule(1.0, 0.05, 100, 10**6) == pytest.approx(0.05)
    assert gradient_steps(8.0, 160, 256) == 5  # ceil(1280 / 256)
    assert gradient_steps(0.1, 10, 256) == 1


def test_qmix_mixing_is_monotonic_in_every_agent_utility():
    torch.manual_seed(0)
    mixer = QMixer(5, 3, 8, 16)
    q = torch.randn(64, 5, requires_grad=True)
    state = torch.randn(64, 3)
    mixer(q, state).sum().backward()
    assert (q.grad >= 0).all()


# --------------------------------------------------------------------------- masks
@pytest.mark.parametrize("algo", ["iql", "qmix"])
def test_masked_actions_are_never_taken_and_never_bootstrapped(tmp_path, algo):
    config = QConfig(algo=algo, total_steps=288, num_envs=8, learning_starts=48, batch_size=32,
                     replay_ratio=1.0, hidden=(8,), epsilon_anneal_steps=100, seed=2)  # fmt: skip
    # the env raises on a masked action, so a finished run took none
    result = train(config, {}, env="masked", out_dir=tmp_path, progress=False,
                   make_env=_factory(Masked))  # fmt: skip
    assert result.iterations == 6
    env = Masked(num_envs=4)
    env.reset(seed=0)
    learner = build_algorithm(env.spec, config)
    with torch.no_grad():  # a huge utility for action 3, which the next mask forbids
        learner.model.actor.body.layers[-1].bias[:, 3] = 100.0
    learner.target.load_state_dict(learner.model.state_dict())
    segment = collect_segment(env, learner._explore(0.0, torch.Generator()), steps=6, seed=1,
                              with_state=learner.needs_state)  # fmt: skip
    allowed = segment.masks[:, :-1].gather(-1, segment.actions.unsqueeze(-1))
    assert allowed.all()  # greedy acting respects the mask despite the bias
    learner.buffer.add(segment)
    batch = learner.buffer.sample(256, torch.Generator().manual_seed(0))
    q = learner.target.utilities(batch.next_obs, None)
    allowed_max = q.masked_fill(~batch.next_mask, -1e9).amax(-1)
    assert (allowed_max < 50.0).any()  # some next states forbid action 3: their max is small
    # the TD target uses the allowed maximum: the loss of IQL's first step is computed from it
    if algo == "iql":
        learner.buffer = _FixedBatch(batch)
        taken = learner.model.utilities(batch.obs, None).gather(
            -1, batch.actions.unsqueeze(-1)).squeeze(-1)  # fmt: skip
        target = batch.rewards + config.gamma * (1 - batch.dones).unsqueeze(-1) * allowed_max
        expected = ((taken - target) ** 2).mean().item()
        assert learner.update(torch.Generator())["loss"] == pytest.approx(expected, rel=1e-5)


class _FixedBatch:
    def __init__(self, batch):
        self.batch = batch

    def sample(self, batch_size, generator):
        return self.batch


# --------------------------------------------------------------------------- determinism
class _Interrupt(Exception):
    pass


TINY_Q = QConfig(total_steps=320, num_envs=8, seed=5, hidden=(16,), learning_starts=80,
                 batch_size=32, replay_ratio=1.0, target_update_every=3, mixing_embed_dim=8,
                 hypernet_embed=8, central_embed_dim=16, checkpoint_every=2,
                 epsilon_anneal_steps=200)  # fmt: skip
TINY_DDPG = MADDPGConfig(total_steps=40, num_envs=2, seed=5, hidden=(16,), critic_hidden=(16,),
                         learning_starts=10, batch_size=16, replay_ratio=1.0,
                         checkpoint_every=2)  # fmt: skip
RUNS = [
    ("iql", "none", TINY_Q.replace(algo="iql", sharing="none"), "roles", ROLES, None),
    ("vdn", "id", TINY_Q.replace(algo="vdn", sharing="id"), "roles", ROLES, None),
    ("qmix", "full", TINY_Q.replace(algo="qmix"), "roles", ROLES, None),
    ("wqmix", "id", TINY_Q.replace(algo="wqmix", sharing="id"), "roles", ROLES, None),
    ("wqmix", "eld", TINY_Q.replace(algo="wqmix", equity="eld", dual_lr=10.0, dual_every=8),
     "roles", ROLES, None),
    ("maddpg", "full", TINY_DDPG, "target", {}, _factory(Target)),
    ("maddpg", "none", TINY_DDPG.replace(sharing="none"), "target", {"reward": "agent"},
     _factory(Target)),
]  # fmt: skip


@pytest.mark.parametrize("algo, sharing, config, env, options, make_env", RUNS,
                         ids=[f"{r[0]}-{r[1]}" for r in RUNS])  # fmt: skip
def test_same_seed_same_run_and_bitwise_resume(tmp_path, algo, sharing, config, env, options,
                                               make_env):  # fmt: skip
    def run(folder, **kw):
        return train(config, options, env=env, out_dir=tmp_path / folder, progress=False,
                     make_env=make_env, **kw)  # fmt: skip

    first, second = run("a"), run("b")
    assert first.iterations == 4 and any("loss" in k for k in first.final)  # it learned
    assert _same(_params(first.agent), _params(second.agent))

    def stop(row):
        if row["iteration"] == 3:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        run("c", log_fn=stop)
    state = load_checkpoint(tmp_path / "c" / "checkpoint.pt")
    assert state["iteration"] == 2 and state["buffer"]["size"] > 0  # the buffer is saved
    resumed = run("c", resume=True)
    assert [row["iteration"] for row in resumed.history] == [3, 4]
    assert _same(_params(resumed.agent), _params(first.agent))


# --------------------------------------------------------------------------- policy files
def test_saved_policies_act_greedily_and_within_the_action_range(tmp_path):
    result = train(TINY_Q.replace(algo="qmix", sharing="id"), ROLES, env="roles",
                   out_dir=tmp_path / "q", progress=False)  # fmt: skip
    policy = load_policy(tmp_path / "q")
    assert policy.algorithm == "qmix" and policy.actor.discrete
    env = policy.make_env(num_envs=4, seed=0)
    obs = env.reset(seed=1)
    model = result.agent
    expected = model.utilities(obs, model.groups()).argmax(-1)
    assert torch.equal(policy.act(obs, mask=env.action_mask()), expected)

    ddpg = train(TINY_DDPG.replace(exploration_noise=0.3), {}, env="target",
                 out_dir=tmp_path / "d", progress=False, make_env=_factory(Target))  # fmt: skip
    policy = load_policy(tmp_path / "d")
    assert policy.algorithm == "maddpg" and type(policy.actor).__name__ == "DeterministicActor"
    obs = 50.0 * torch.randn(7, 3, 2)  # far outside the training data: still in range
    action = policy.act(obs)
    assert action.shape == (7, 3) and action.abs().max() <= 2.0
    torch.testing.assert_close(action, ddpg.agent.actor.act(obs, None).squeeze(-1))
    noisy = policy.act(obs, deterministic=False, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(noisy, action)


def test_maddpg_learns_continuous_goals(tmp_path):
    """Each agent must output its own goal: MADDPG's greedy squared error falls far below a
    random policy's (measured: 0.06-0.4 against about 2 after 2,400 env-steps, about 1 s)."""
    config = MADDPGConfig(seed=1, total_steps=2400, num_envs=16, learning_starts=160,
                          batch_size=128, hidden=(32,), critic_hidden=(64,),
                          actor_learning_rate=1e-3, critic_learning_rate=3e-3,
                          checkpoint_every=1000)  # fmt: skip
    result = train(config, {}, env="target", out_dir=tmp_path, progress=False,
                   make_env=_factory(Target))  # fmt: skip
    env = Target(num_envs=64)
    obs = env.reset(seed=99)
    action = result.agent.actor.act(obs, None)[..., 0]
    error = ((action - env.goal) ** 2).mean().item()
    random = ((4 * torch.rand(64, 3, generator=torch.Generator().manual_seed(0)) - 2
               - env.goal) ** 2).mean().item()  # fmt: skip
    assert error < 0.25 * random, (error, random)


# --------------------------------------------------------------------------- constraints
class _CostSignals(ReplaySignals):
    """Stores each agent's reward as a 'cost' signal at collection time and subtracts it."""

    name = "cost"

    def __init__(self):
        self.seen = 0

    def signals(self, segment):
        return {"cost": segment.rewards.clone()}

    def observe(self, segment):
        self.seen += 1

    def shape_rewards(self, rewards, batch):
        assert torch.equal(batch.signals["cost"], batch.rewards)  # stored with the episode
        return rewards - batch.signals["cost"]


def test_constraint_signals_are_stored_with_the_episode_and_shape_the_targets(tmp_path):
    constraint = _CostSignals()
    result = train(TINY_Q.replace(algo="vdn"), ROLES, env="roles", out_dir=tmp_path,
                   progress=False, constraint=constraint)  # fmt: skip
    assert constraint.seen == 4 and result.iterations == 4


@pytest.mark.parametrize("algo, form", [("iql", "fd"), ("qmix", "ctde")])
def test_eld_signals_are_computed_at_collection_and_stored_at_each_episodes_end(algo, form):
    """Paper 003 section 4.2 for replay-based learners: the reducer's s_i (FD, IQL) or H/N
    (CTDE, the mixing learners) is stored with the episode at its last step; the TD targets
    use r - lambda c with the current lambda; the dual step raises lambda above 0."""
    from marra.rl.eld import ELD, reduce_outcomes
    from marra.rl.loop import make_training_env
    from marra.rl.qlearning import ReplayELD

    config = TINY_Q.replace(algo=algo, sharing="id", equity="eld", dual_lr=10.0, dual_every=8)
    env = make_training_env("roles", ROLES, config)
    learner = build_algorithm(env.spec, config)
    assert isinstance(learner.constraint, ELD) and isinstance(learner.signals, ReplayELD)
    assert learner.constraint.form == form
    stats = learner.iteration(env, 1, 4, torch.Generator().manual_seed(0))
    cost = learner.buffer.signals["eld_cost"][:8]  # (E, T, N): zero before the last step
    assert cost[:, :-1].abs().max() == 0.0
    returns = learner.buffer.rewards[:8].sum(dim=1)  # roles: the outcome is the return
    equity = reduce_outcomes(returns, config.equity_tau)
    expected = equity.signal if form == "fd" else equity.mre_normalised.unsqueeze(-1).expand(-1, 8)
    torch.testing.assert_close(cost[:, -1], expected.to(cost))
    assert stats["eld_lambda"] > 0.0  # 8 episodes: one dual step, and roles is unequal early
    batch = learner.buffer.sample(64, torch.Generator().manual_seed(1))
    shaped = learner.signals.shape_rewards(batch.rewards, batch)
    torch.testing.assert_close(
        shaped, batch.rewards - stats["eld_lambda"] * batch.signals["eld_cost"]
    )


# --------------------------------------------------------------------------- capabilities
def test_unsupported_pairings_are_one_clear_error(tmp_path):
    continuous = Target().spec
    with pytest.raises(CompatibilityError, match="'qmix' supports discrete actions only.*target"):
        build_algorithm(continuous, QConfig(algo="qmix"))
    with pytest.raises(CompatibilityError, match="'maddpg' supports continuous actions only"):
        build_algorithm(Masked().spec, MADDPGConfig())
    with pytest.raises(CompatibilityError, match="configured by marra.rl.QConfig, not PPOConfig"):
        build_algorithm(Masked().spec, PPOConfig(algo="iql"))
    unbounded = EnvSpec(name="free", num_agents=1, agent_ids=("a",), obs_dim=1, state_dim=1,
                        action=ActionSpec("continuous", dim=1), horizon=2,
                        reward="team")  # fmt: skip
    with pytest.raises(CompatibilityError, match="needs bounded actions"):
        build_algorithm(unbounded, MADDPGConfig())

    class AdvantageOnly(Constraint):
        name = "advantage-only"

    with pytest.raises(CompatibilityError, match="'advantage-only' shapes on-policy advantages"):
        build_algorithm(Masked().spec, QConfig(algo="iql"), AdvantageOnly())
    from marra.rl.sharing import SHARING_SCHEMES

    for scheme in {"seps", "dyps"} & set(SHARING_SCHEMES):  # regrouping schemes
        with pytest.raises(CompatibilityError, match=f"sharing '{scheme}' regroups agents"):
            build_algorithm(Masked().spec, QConfig(algo="iql", sharing=scheme))
    assert all(not ALGORITHMS[a].continuous and not ALGORITHMS[a].on_policy
               for a in ("iql", "vdn", "qmix", "wqmix"))  # fmt: skip
    assert ALGORITHMS["qmix"].needs_state and not ALGORITHMS["iql"].needs_state
    assert ALGORITHMS["maddpg"].continuous and not ALGORITHMS["maddpg"].discrete


def test_bad_settings_name_the_field_and_resume_refuses_another_learner(tmp_path):
    for field, value in (("algo", "qmix9"), ("sharing", "weird"), ("batch_size", 0),
                         ("epsilon_finish", 1.5), ("gamma", 2.0), ("hidden", ()),
                         ("learning_starts", -1)):  # fmt: skip
        with pytest.raises(ValueError, match=f"{field}:"):
            QConfig(**{field: value})
    with pytest.raises(ValueError, match="tau:"):
        MADDPGConfig(tau=0.0)
    with pytest.raises(ValueError, match=r"QConfig: unknown field\(s\) \['critic'\]"):
        QConfig.from_dict({**QConfig().to_dict(), "critic": "pool"})
    assert QConfig.from_dict(TINY_Q.to_dict()) == TINY_Q
    with pytest.raises(ValueError, match="buffer_episodes: 4 cannot hold one iteration of 8"):
        QLearning(Masked().spec, TINY_Q.replace(buffer_episodes=4))
    train(TINY_Q.replace(algo="iql"), ROLES, env="roles", out_dir=tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="written by algo 'iql', not 'vdn'"):
        train(TINY_Q.replace(algo="vdn", total_steps=640), ROLES, env="roles", out_dir=tmp_path,
              resume=True, progress=False)  # fmt: skip
    with pytest.raises(CheckpointError, match=r"other settings \(batch_size: 32 -> 16\)"):
        train(TINY_Q.replace(algo="iql", batch_size=16, total_steps=640), ROLES, env="roles",
              out_dir=tmp_path, resume=True, progress=False)  # fmt: skip


def test_the_python_examples_of_docs_learners_run(tmp_path, monkeypatch):
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "learners.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "docs/learners.md", "exec"), {})  # noqa: S102
    assert (tmp_path / "runs" / "qmix" / "policy.pt").exists()
    assert load_policy(tmp_path / "runs" / "maddpg").algorithm == "maddpg"


def test_marra_train_and_evaluate_run_the_value_based_learners(tmp_path):
    import json
    import subprocess
    import sys

    def marra(*args):
        return subprocess.run([sys.executable, "-m", "marra.cli", *args], capture_output=True,
                              text=True, timeout=600)  # fmt: skip

    run = tmp_path / "iql"
    done = marra(
        "train",
        "--env",
        "roles",
        "--env-option",
        "num_agents=4",
        "--algo",
        "iql",
        "--sharing",
        "id",
        "--steps",
        "320",
        "--num-envs",
        "8",
        "--out",
        str(run),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    shown = marra("evaluate", str(run), "--episodes", "4", "--json")
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert set(json.loads(shown.stdout)["methods"]) == {"policy", "random"}
    refused = marra("train", "--env", "roles", "--algo", "qmix", "--critic", "pool", "--out",
                    str(tmp_path / "x"))  # fmt: skip
    assert refused.returncode == 2 and "--critic: is for the PPO family only" in refused.stderr
    assert not (tmp_path / "x").exists()
