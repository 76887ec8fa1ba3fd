"""The PPO family on the contract: sharing schemes, masks, capability flags, learning on
``roles``, determinism and resume for every algorithm, run-folder behaviour."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from marra.envs import make
from marra.envs.base import ActionSpec, EnvSpec, MultiAgentEnv
from marra.rl import (
    ALGORITHMS,
    CheckpointError,
    CompatibilityError,
    PolicyFileError,
    PPOConfig,
    build_model,
    collect_rollout,
    load_checkpoint,
    load_policy,
    ppo_update,
    train,
)
from marra.rl.networks import Actor, AgentIdentity
from marra.rl.rollout import compute_gae
from marra.rl.sharing import SharingError, make_sharing

ROLES = {"num_agents": 8, "num_roles": 4, "horizon": 10}
TINY = PPOConfig(total_steps=320, num_envs=8, seed=5, actor_hidden=(16,),
                 critic_encoder_hidden=(16,), critic_hidden=(16,), update_epochs=2,
                 num_minibatches=2, checkpoint_every=2)  # fmt: skip


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- sharing
def test_nops_has_num_agents_times_the_parameters_of_ps():
    spec = make("roles", **ROLES).spec
    full = build_model(spec, PPOConfig(sharing="full"))
    none = build_model(spec, PPOConfig(sharing="none"))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(none.actor) == spec.num_agents * count(full.actor)
    ident = build_model(spec, PPOConfig(sharing="id"))
    assert ident.actor.identity.kind == "onehot" and ident.actor.identity.width == 8


def test_id_sharing_switches_to_a_learned_embedding_above_the_one_hot_size():
    scheme = make_sharing("id", 100, id_onehot_max=64, id_embedding_dim=12)
    assert (scheme.identity, scheme.id_dim, scheme.num_groups) == ("embedding", 12, 1)
    with pytest.raises(SharingError, match="unknown scheme 'bogus'.*none, full, id"):
        make_sharing("bogus", 3)


def test_a_gradient_step_on_one_agents_data_changes_only_its_parameters():
    torch.manual_seed(0)
    spec = make("roles", **ROLES).spec
    model = build_model(spec, PPOConfig(sharing="none", obs_norm=False))
    before = model.actor.body.layers[0].weight.detach().clone()  # (N, in, out)
    obs = torch.randn(5, spec.num_agents, spec.obs_dim)
    actions = torch.randint(0, 4, (5, spec.num_agents))
    log_prob, _ = model.actor.evaluate(obs, model.groups(), actions)
    optimizer = torch.optim.SGD(model.actor.parameters(), lr=0.1)
    (-log_prob[:, 3].sum()).backward()  # agent 3's data only
    optimizer.step()
    after = model.actor.body.layers[0].weight.detach()
    changed = [(after[i] != before[i]).any().item() for i in range(spec.num_agents)]
    assert changed == [i == 3 for i in range(spec.num_agents)]


def test_grouped_layers_evaluate_every_agent_with_its_own_group_in_one_call():
    torch.manual_seed(1)
    actor = Actor(3, action_kind="continuous", action_dim=2, hidden=(5,), num_groups=4,
                  identity=AgentIdentity("none", 6), activation="relu", obs_norm=False,
                  init_log_std=0.0)  # fmt: skip
    obs = torch.randn(7, 6, 3)
    groups = torch.tensor([0, 1, 2, 3, 1, 0])
    out = actor(obs, groups)
    for i, g in enumerate(groups.tolist()):  # the reference: agent i alone with group g
        layer0, layer1 = actor.body.layers
        hidden = torch.relu(obs[:, i] @ layer0.weight[g] + layer0.bias[g])
        torch.testing.assert_close(out[:, i], hidden @ layer1.weight[g] + layer1.bias[g])


# --------------------------------------------------------------------------- masks
class _Masked(MultiAgentEnv):
    """Agent i may use only actions <= (t + i) % 4; every other action raises in step."""

    def __init__(self, **base):
        super().__init__(**base)
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


def test_a_categorical_with_one_allowed_action_always_samples_it():
    torch.manual_seed(0)
    actor = Actor(2, action_kind="discrete", action_dim=4, hidden=(8,), num_groups=1,
                  identity=AgentIdentity("none", 3), activation="relu", obs_norm=False,
                  init_log_std=0.0)  # fmt: skip
    with torch.no_grad():  # a strong preference for a masked action must not matter
        actor.body.layers[-1].bias[0, 3] = 50.0
    obs = torch.randn(500, 3, 2)
    mask = torch.zeros(500, 3, 4, dtype=torch.bool)
    mask[..., 1] = True
    generator = torch.Generator().manual_seed(0)
    action, log_prob = actor.sample(obs, None, generator, mask)
    assert (action == 1).all()
    torch.testing.assert_close(log_prob, torch.zeros_like(log_prob))
    lp, entropy = actor.evaluate(obs, None, action, mask)
    assert torch.isfinite(lp).all() and abs(entropy.item()) < 1e-6
    assert (actor.act(obs, None, mask) == 1).all()


def test_masked_actions_are_never_sent_in_a_rollout_and_train_runs(tmp_path):
    env = _Masked(num_envs=16, seed=0, autoreset=True)
    model = build_model(env.spec, PPOConfig(algo="mappo"))
    rollout = collect_rollout(env, model, steps=6, generator=torch.Generator().manual_seed(0),
                              seed=3)  # fmt: skip
    allowed = rollout.masks.gather(-1, rollout.actions.unsqueeze(-1)).squeeze(-1)
    assert allowed.all()  # (the env would have raised otherwise)
    result = train(TINY.replace(total_steps=96), {}, out_dir=tmp_path,
                   make_env=lambda **kw: _Masked(**kw), progress=False)  # fmt: skip
    assert result.iterations == 2


# --------------------------------------------------------------------------- capabilities
def test_an_unsupported_pairing_is_one_clear_error(monkeypatch):
    spec = make("hospital", n_hospitals=4, horizon=3).spec
    info = ALGORITHMS["ippo"]
    monkeypatch.setitem(
        ALGORITHMS, "ippo", info.__class__(**{**info.__dict__, "continuous": False})
    )
    with pytest.raises(CompatibilityError, match="ippo.*discrete actions only.*hospital"):
        build_model(spec, PPOConfig(algo="ippo"))
    with pytest.raises(ValueError, match="algo: unknown algorithm 'qmix9'"):
        PPOConfig(algo="qmix9")
    with pytest.raises(ValueError, match="sharing: unknown scheme"):
        PPOConfig(sharing="weird")


# --------------------------------------------------------------------------- learning
@pytest.mark.parametrize("algo", ["ippo", "mappo"])
def test_roles_id_and_none_learn_the_roles_and_full_cannot(tmp_path, algo):
    """8 agents, 4 roles, identical observations: separate or id-conditioned policies reach
    accuracy >= 0.9; a fully shared policy cannot beat 1/4 (measured: id, none ~1.0 and full
    ~0.25 after 2,400 env-steps, a few seconds each)."""
    config = PPOConfig(algo=algo, total_steps=2400, num_envs=16, seed=1, checkpoint_every=100)
    accuracy = {}
    for sharing in ("id", "none", "full"):
        result = train(config.replace(sharing=sharing), ROLES, env="roles",
                       out_dir=tmp_path / sharing, progress=False)  # fmt: skip
        accuracy[sharing] = result.final["accuracy"]
    assert accuracy["id"] >= 0.9 and accuracy["none"] >= 0.9, accuracy
    assert accuracy["full"] <= 0.35, accuracy


# --------------------------------------------------------------------------- determinism
class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("algo, sharing", [("ippo", "none"), ("mappo", "id"), ("ippo", "full")])
def test_same_seed_same_run_and_bitwise_resume(tmp_path, algo, sharing):
    config = TINY.replace(algo=algo, sharing=sharing)  # 4 iterations of 8 copies x 10 steps
    first = train(config, ROLES, env="roles", out_dir=tmp_path / "a", progress=False)
    second = train(config, ROLES, env="roles", out_dir=tmp_path / "b", progress=False)
    assert _same(_params(first.agent), _params(second.agent))

    def stop(row):
        if row["iteration"] == 3:
            raise _Interrupt

    run = tmp_path / "c"
    with pytest.raises(_Interrupt):
        train(config, ROLES, env="roles", out_dir=run, progress=False, log_fn=stop)
    assert load_checkpoint(run / "checkpoint.pt")["iteration"] == 2
    resumed = train(config, ROLES, env="roles", out_dir=run, resume=True, progress=False)
    assert [row["iteration"] for row in resumed.history] == [3, 4]
    assert _same(_params(resumed.agent), _params(first.agent))


def test_a_log_row_lost_after_the_checkpoint_is_restored_on_resume(tmp_path):
    """The run dies after writing checkpoint 2 and before appending row 2 to the log."""
    config = TINY
    run = tmp_path / "run"

    def stop(row):
        if row["iteration"] == 2:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train(config, ROLES, env="roles", out_dir=run, progress=False, log_fn=stop)
    log = run / "train_log.csv"
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:-1]) + "\n")  # row 2 never reached the log
    train(config, ROLES, env="roles", out_dir=run, resume=True, progress=False)
    with log.open() as handle:
        assert [int(r["iteration"]) for r in csv.DictReader(handle)] == [1, 2, 3, 4]


def test_a_finished_run_can_be_extended_and_tensorboard_has_no_duplicates(tmp_path):
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    run = tmp_path / "run"
    train(TINY, ROLES, env="roles", out_dir=run, progress=False)  # 4 iterations

    def stop(row):
        if row["iteration"] == 5:  # dies after logging iteration 5 (checkpoint is at 4)
            raise _Interrupt

    longer = TINY.replace(total_steps=640)
    with pytest.raises(_Interrupt):
        train(longer, ROLES, env="roles", out_dir=run, resume=True, progress=False, log_fn=stop)
    result = train(longer, ROLES, env="roles", out_dir=run, resume=True, progress=False)
    assert result.iterations == 8 and result.env_steps == 640
    with pytest.raises(CheckpointError, match="only the number of steps may change"):
        train(longer.replace(learning_rate=0.5), ROLES, env="roles", out_dir=run, resume=True,
              progress=False)  # fmt: skip
    with pytest.raises(CheckpointError, match="already trained 640"):
        train(TINY, ROLES, env="roles", out_dir=run, resume=True, progress=False)
    accumulator = event_accumulator.EventAccumulator(str(run / "tensorboard"))
    accumulator.Reload()
    steps = [event.step for event in accumulator.Scalars("train/policy_loss")]
    assert steps == sorted(set(steps)) and len(steps) == 8


def test_steps_are_rounded_up_to_whole_iterations_and_said_once(tmp_path):
    result = train(TINY.replace(total_steps=100), ROLES, env="roles", out_dir=tmp_path,
                   progress=False)  # fmt: skip
    assert result.env_steps == 160  # 2 iterations of 8 copies x 10 steps
    assert any("rounded up" in note for note in result.notes)


def test_overwrite_with_a_bad_argument_keeps_the_old_run(tmp_path):
    train(TINY.replace(total_steps=80), ROLES, env="roles", out_dir=tmp_path, progress=False)
    before = (tmp_path / "policy.pt").read_bytes()
    with pytest.raises(ValueError, match="num_roles"):
        train(TINY, {**ROLES, "num_roles": 0}, env="roles", out_dir=tmp_path, overwrite=True,
              progress=False)  # fmt: skip
    assert (tmp_path / "policy.pt").read_bytes() == before


def test_a_failing_run_leaves_no_tensorboard_files(tmp_path):
    with pytest.raises(ValueError, match="seed"):
        train(TINY.replace(seed=-1), ROLES, env="roles", out_dir=tmp_path, progress=False)
    assert not (tmp_path / "tensorboard").exists()


# --------------------------------------------------------------------------- policies
def test_policies_run_on_other_agent_counts_only_where_sharing_allows(tmp_path):
    full = train(TINY.replace(sharing="full", total_steps=80), ROLES, env="roles",
                 out_dir=tmp_path / "full", progress=False)  # fmt: skip
    ident = train(TINY.replace(sharing="id", total_steps=80), ROLES, env="roles",
                  out_dir=tmp_path / "id", progress=False)  # fmt: skip
    obs = make("roles", num_agents=20, num_envs=2).reset(seed=0)
    assert load_policy(full.policy_path).act(obs).shape == (2, 20)
    with pytest.raises(PolicyFileError, match="'id' for 8 agents.*20"):
        load_policy(ident.policy_path).act(obs)
    policy = load_policy(ident.policy_path)
    env = policy.make_env(num_envs=3, seed=1)
    assert env.spec.num_agents == 8
    actions = policy.act(env.reset().numpy())  # numpy in, numpy out
    assert actions.shape == (3, 8) and actions.dtype.kind == "i"


def test_the_shipped_policy_of_marra_0_1_still_loads_and_acts():
    from marra.experiments.policy_method import default_policy_path

    path = default_policy_path()
    assert path is not None
    policy = load_policy(path)
    env = make("hospital", n_hospitals=30, num_envs=2, horizon=5)
    obs = env.reset(seed=0)
    action = policy.act(obs)
    assert action.shape == (2, 30) and torch.isfinite(action).all()
    flat = policy.act(obs[0].reshape(-1).numpy())  # the Gymnasium view's flat observation
    assert flat.shape == (30,) and math.isfinite(float(flat.sum()))


def test_gae_of_a_team_critic_broadcasts_to_agents():
    rewards = torch.ones(3, 2)
    values = torch.zeros(3, 2)
    dones = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    advantages, returns = compute_gae(rewards, values, dones, torch.zeros(2), 1.0, 1.0)
    torch.testing.assert_close(advantages[:, 0], torch.tensor([3.0, 2.0, 1.0]))


def test_ppo_update_reports_finite_statistics_for_discrete_and_continuous():
    for name, options in (("roles", ROLES), ("hospital", {"n_hospitals": 5, "horizon": 4})):
        env = make(name, num_envs=4, seed=0, autoreset=True, **options)
        config = PPOConfig(num_minibatches=2, update_epochs=1)
        model = build_model(env.spec, config)
        generator = torch.Generator().manual_seed(0)
        rollout = collect_rollout(env, model, steps=env.spec.horizon, generator=generator, seed=1)
        adv, ret = compute_gae(rollout.rewards, rollout.values, rollout.dones, rollout.last_value,
                               0.99, 0.95)  # fmt: skip
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        stats = ppo_update(model, optimizer, rollout, adv, ret, config, generator)
        assert all(math.isfinite(v) for v in stats.values()), stats
        assert rollout.metrics["episodes"] == 4


def test_mappo_takes_the_environments_critic_hint_unless_one_is_given(tmp_path):
    """The hospital asks for the deep-set critic (marra 0.1's learner); the run records the
    critic it used, an explicit critic wins, IPPO keeps its local critics, roles has no hint."""
    from marra.envs.hospital import HospitalEnv
    from marra.rl.ppo import build_model, resolve_critic

    spec = HospitalEnv(n_hospitals=4).spec
    assert spec.critic == "pool"
    assert build_model(spec, PPOConfig()).critic.kind == "pool"
    assert build_model(spec, PPOConfig(critic="state")).critic.kind == "state"
    assert build_model(spec, PPOConfig(algo="ippo")).critic.kind == "local"
    assert resolve_critic(PPOConfig(), make("roles").spec).critic == "auto"
    result = train(PPOConfig(total_steps=40, num_envs=2, checkpoint_every=100), {"n_hospitals": 4},
                   env="hospital", out_dir=tmp_path, progress=False)  # fmt: skip
    assert result.model.critic.kind == "pool"
    assert load_checkpoint(tmp_path / "checkpoint.pt")["config"]["critic"] == "pool"
    assert load_policy(result.policy_path).act(torch.zeros(1, 4, spec.obs_dim)).shape[:2] == (1, 4)


def test_a_spec_with_an_unknown_critic_hint_is_refused():
    with pytest.raises(ValueError, match=r"spec\.critic: 'state', 'pool' or None, got 'mean'"):
        EnvSpec(name="x", num_agents=1, agent_ids=("a",), obs_dim=1, state_dim=1,
                action=ActionSpec.discrete(2), horizon=1, reward="team", critic="mean")  # fmt: skip
