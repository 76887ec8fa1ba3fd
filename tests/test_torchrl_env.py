"""The TorchRL view (``marra.envs.torchrl_env``): TorchRL's own spec checker, the multi-agent keys
and shapes, agreement with the batched environment step for step, seeding, partial resets
through ``"_reset"``, masks, a collector run, and bad input."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

pytest.importorskip(
    "torchrl", reason="TorchRL is not installed (optional extra: pip install 'marra[torchrl]')"
)

from torchrl.data import Bounded, Categorical  # noqa: E402
from torchrl.envs import check_env_specs  # noqa: E402

import marra.envs  # noqa: E402
from marra.envs import EnvError, make, torchrl_env  # noqa: E402
from marra.envs.roles import RolesEnv  # noqa: E402

HOSPITAL = {"n_hospitals": 7, "horizon": 6, "scenario": "shifting", "transfer_budget": 5.0}
ROLES = {"num_agents": 5, "num_roles": 3, "horizon": 4}


@pytest.mark.parametrize(
    ("name", "options"),
    [("hospital", HOSPITAL), ("roles", ROLES)],
    ids=["hospital", "roles"],
)
def test_torchrl_check_env_specs_passes(name, options):
    env = torchrl_env(name, num_envs=3, seed=0, **options)
    check_env_specs(env, seed=1)
    # also across an episode's end, where TorchRL resets the finished copies itself
    check_env_specs(env, break_when_any_done=False)


def test_one_hot_discrete_actions_pass_check_env_specs():
    env = torchrl_env("roles", num_envs=2, seed=0, categorical_actions=False, **ROLES)
    check_env_specs(env, seed=3)
    assert env.full_action_spec["agents", "action"].shape == (2, 5, 3)


def test_keys_and_shapes_follow_torchrl_multi_agent_conventions():
    env = torchrl_env("hospital", num_envs=3, seed=0, **HOSPITAL)
    assert env.batch_size == (3,)
    td = env.rollout(2)
    assert td["agents", "observation"].shape == (3, 2, 7, 11)
    assert td["agents", "observation"].dtype == torch.float32
    assert td["agents", "action"].shape == (3, 2, 7, 1)
    assert td["next", "agents", "reward"].shape == (3, 2, 7, 1)
    assert td["next", "done"].shape == (3, 2, 1)
    for key in ("done", "terminated", "truncated"):
        assert td["next", "agents", key].shape == (3, 2, 7, 1)
        assert td["next", key].dtype == torch.bool
    assert td["state"].shape == (3, 2, env.core.spec.state_dim)
    action = env.full_action_spec["agents", "action"]
    assert isinstance(action, Bounded)
    assert float(action.space.low.min()) == -env.core.max_action
    assert float(action.space.high.max()) == env.core.max_action
    assert ("agents", "action_mask") not in env.full_observation_spec.keys(True)
    roles = torchrl_env("roles", num_envs=2, seed=0, **ROLES)
    assert isinstance(roles.full_action_spec["agents", "action"], Categorical)
    assert roles.full_observation_spec["agents", "action_mask"].shape == (2, 5, 3)


def test_view_steps_exactly_like_the_batched_environment():
    env = torchrl_env("hospital", num_envs=2, seed=5, **HOSPITAL)
    core = make("hospital", num_envs=2, seed=5, **HOSPITAL)
    td = env.reset()
    obs = core.reset()
    assert torch.equal(td["agents", "observation"], obs)
    assert torch.equal(td["state"], core.state())
    generator = torch.Generator().manual_seed(0)
    for t in range(HOSPITAL["horizon"]):
        action = 5.0 * torch.randn((2, 7, 1), generator=generator)
        td["agents", "action"] = action
        out = env.step(td)["next"]
        step = core.step(action)
        assert torch.equal(out["agents", "observation"], step.obs)
        assert torch.equal(out["agents", "reward"].squeeze(-1), step.reward)
        assert torch.equal(out["state"], core.state())
        last = t == HOSPITAL["horizon"] - 1
        assert bool(out["done"].all()) is last and bool(out["truncated"].all()) is last
        assert bool(out["agents", "done"].all()) is last
        assert not bool(out["terminated"].any())
        mae = out["episode_metrics", "mae"].squeeze(-1)
        if last:
            assert torch.equal(mae, step.info["episode_metrics"]["mae"])
        else:
            assert torch.equal(mae, torch.zeros(2))
        td = out.clone()


def test_set_seed_reproduces_the_episode_of_reset_seed():
    env = torchrl_env("roles", num_envs=4, **ROLES)
    env.set_seed(11)
    td = env.reset()
    reference = make("roles", num_envs=4, **ROLES).reset(seed=11)
    assert torch.equal(td["agents", "observation"], reference)
    again = env.reset()  # no new seed: the next episode of every copy
    assert not torch.equal(again["agents", "observation"], reference)
    rollouts = []
    for _ in range(2):
        env.set_seed(11)
        torch.manual_seed(0)  # the random actions
        rollouts.append(env.rollout(3))
    for key in rollouts[0].keys(True, True):
        assert torch.equal(rollouts[0][key], rollouts[1][key]), key


def test_reset_of_some_copies_starts_their_next_episode_only():
    env = torchrl_env("hospital", num_envs=3, seed=2, **HOSPITAL)
    core = make("hospital", num_envs=3, seed=2, **HOSPITAL)
    td = env.reset()
    core.reset()
    for _ in range(2):
        td["agents", "action"] = torch.ones((3, 7, 1))
        td = env.step(td)["next"].clone()
        core.step(torch.ones((3, 7, 1)))
    before = td["agents", "observation"].clone()
    # as a collector does: the current data plus the copies to reset
    reset = td.exclude("agents", "episode_metrics").clone()
    reset["agents"] = td["agents"].exclude("action").clone()
    reset["_reset"] = torch.tensor([[True], [False], [True]])
    out = env.reset(reset)
    expected = core.reset_done(np.array([True, False, True]))
    assert torch.equal(out["agents", "observation"], expected)
    assert torch.equal(out["agents", "observation"][1], before[1])
    assert int(env.core.t[0]) == 0 and int(env.core.t[1]) == 2


class _MaskedRoles(RolesEnv):
    """Roles where agent i may not play action i % num_roles at odd steps (a mask to obey)."""

    def _action_mask(self) -> torch.Tensor:
        n, k = self.spec.num_agents, int(self.spec.action.n)
        mask = torch.ones((self.num_envs, n, k), dtype=torch.bool, device=self.device)
        odd = (self.t % 2 == 1).view(-1, 1)
        banned = torch.arange(n, device=self.device) % k
        mask[:, torch.arange(n), banned] = ~odd.expand(self.num_envs, n)
        return mask


def test_masks_are_reported_and_random_actions_respect_them():
    core = _MaskedRoles(num_envs=3, seed=0, **ROLES)
    env = torchrl_env(core)
    check_env_specs(env, seed=0, break_when_any_done=False)  # a masked action would raise
    torch.manual_seed(1)
    td = env.rollout(ROLES["horizon"] * 2, break_when_any_done=False)
    mask = td["agents", "action_mask"]
    chosen = mask.gather(-1, td["agents", "action"].unsqueeze(-1))
    assert bool(chosen.all())
    assert not bool(mask[:, 1].all())  # the odd step bans one action per agent


def test_a_torchrl_collector_runs_across_episode_ends():
    try:
        from torchrl.collectors import Collector
    except ImportError:  # TorchRL before 0.11
        from torchrl.collectors import SyncDataCollector as Collector

    env = torchrl_env("roles", num_envs=2, seed=0, **ROLES)
    collector = Collector(env, None, frames_per_batch=2 * 6, total_frames=2 * 12)
    batches = list(collector)
    collector.shutdown()
    assert len(batches) == 2
    data = torch.cat([b for b in batches], dim=1)  # (2, 12)
    done = data["next", "done"].squeeze(-1)
    # horizon 4: episodes end at steps 4, 8 and 12 of each copy, and the next one starts
    assert done.sum(dim=1).tolist() == [3, 3]
    assert data["next", "episode_metrics", "accuracy"].shape == (2, 12, 1)


def test_bad_input_is_refused_with_a_clear_message():
    with pytest.raises(EnvError, match="no_such"):
        torchrl_env("roles", no_such=1)
    with pytest.raises(EnvError, match="unknown environment|registered|nope"):
        torchrl_env("nope")
    with pytest.raises(EnvError, match="autoreset"):
        torchrl_env(make("roles", autoreset=True, **ROLES))
    with pytest.raises(EnvError, match="num_envs"):
        torchrl_env(make("roles", **ROLES), num_envs=4)
    with pytest.raises(EnvError, match="group"):
        torchrl_env("roles", group="done", **ROLES)


def test_missing_torchrl_gives_the_install_hint(monkeypatch):
    # the package's attribute ``torchrl_env`` is the function; the module is in sys.modules
    module = importlib.import_module("marra.envs.torchrl_env")
    monkeypatch.setattr(module, "_MISSING", ImportError("No module named 'torchrl'"))
    with pytest.raises(ImportError, match=r"marra\[torchrl\]"):
        marra.envs.torchrl_env("roles")


def test_the_package_attribute_calls_the_view_after_the_module_was_imported():
    importlib.import_module("marra.envs.torchrl_env")  # rebinds marra.envs.torchrl_env
    env = marra.envs.torchrl_env("roles", num_envs=2, seed=0, **ROLES)
    assert env.batch_size == (2,)
