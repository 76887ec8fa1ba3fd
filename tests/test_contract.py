"""The environment contract, checked generically over EVERY registered environment.

A new environment is covered by being registered: ``check_env`` drives the batched class, and
the generic Gymnasium and PettingZoo views go through the official checkers. ``SMALL`` gives
options that keep an environment fast here; an environment not in it runs with its defaults
(capped at 200 steps of checking)."""

from __future__ import annotations

import warnings

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from pettingzoo.test import parallel_api_test, parallel_seed_test

import marra.envs
from marra.envs import EnvError, check_env, make, registered
from marra.envs.base import ActionSpec, EnvSpec, MultiAgentEnv
from marra.envs.checker import ContractError
from marra.envs.registry import gym_id

SMALL: dict[str, dict] = {
    "hospital": {"n_hospitals": 6, "horizon": 8, "scenario": "shifting+shock",
                 "transfer_budget": 5.0},
    "roles": {"num_agents": 6, "num_roles": 3, "horizon": 6},
    "matthew": {"horizon": 30},
    "job-scheduling": {"horizon": 30},
    "ride-hailing": {"horizon": 12},
    "vaccine": {"grid": 3, "horizon": 10},
    "voltage": {"horizon": 12},
    "lbf": {"max_episode_steps": 12, "workers": 0},
    "rware": {"max_episode_steps": 12, "workers": 0},
}  # fmt: skip


def _options(name: str) -> dict:
    options = dict(SMALL.get(name, {}))
    known = marra.envs.env_options(name)
    return {k: v for k, v in options.items() if k in known}


def _make(name: str, **kwargs):
    try:
        return make(name, **_options(name), **kwargs)
    except ImportError as exc:  # an optional package of an adapter
        pytest.skip(f"{name}: {exc}")


@pytest.mark.parametrize("name", registered())
def test_every_registered_env_keeps_the_contract(name):
    env = _make(name, num_envs=3, seed=0)
    try:
        check_env(env, max_steps=min(env.spec.horizon, 200))
    finally:
        env.close()


@pytest.mark.parametrize("name", registered())
def test_every_registered_env_passes_gymnasium_check_env(name):
    try:
        view = marra.envs.gym_env(name, **_options(name))
    except ImportError as exc:
        pytest.skip(f"{name}: {exc}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. unbounded observation boxes
        gym_check_env(view, skip_render_check=True)
    view.close()


@pytest.mark.parametrize("name", registered())
def test_every_registered_env_passes_the_pettingzoo_tests(name):
    try:
        factory = lambda: marra.envs.parallel_env(name, **_options(name))  # noqa: E731
        env = factory()
    except ImportError as exc:
        pytest.skip(f"{name}: {exc}")
    parallel_api_test(env, num_cycles=min(env.core.spec.horizon + 2, 40))
    parallel_seed_test(factory)
    assert env.state_space.shape == (env.core.spec.state_dim,)
    env.reset(seed=0)
    assert env.state().shape == env.state_space.shape
    env.close()


@pytest.mark.parametrize("name", registered())
def test_every_registered_env_has_a_gymnasium_id_and_a_vector_entry(name):
    identifier = gym_id(name)
    assert identifier in gymnasium.envs.registry
    options = _options(name)
    try:
        vec = gymnasium.make_vec(identifier, num_envs=2, vectorization_mode="vector_entry_point",
                                 **options)  # fmt: skip
    except ImportError as exc:
        pytest.skip(f"{name}: {exc}")
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (2, *vec.single_observation_space.shape)
    for _ in range(3):
        obs, reward, terminated, truncated, _ = vec.step(vec.action_space.sample())
        assert reward.shape == (2,) and terminated.shape == (2,) and truncated.shape == (2,)
        assert np.isfinite(obs).all()
    vec.close()


def test_gymnasium_accepts_the_standard_render_modes():
    for mode in ("rgb_array", "human", "ansi"):
        env = gymnasium.make("marra/Roles-v0", render_mode=mode)
        env.reset(seed=0)
        frame = env.render()
        if mode == "rgb_array":
            assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
        elif mode == "ansi":
            assert "roles" in frame
        env.close()
    with pytest.raises(EnvError, match="render_mode"):
        marra.envs.gym_env("roles", render_mode="video")


def test_stable_baselines3_make_vec_env_works_with_its_defaults():
    sb3 = pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env("marra/Hospital-v0", n_envs=2, env_kwargs={"n_hospitals": 5})
    obs = venv.reset()
    assert obs.shape == (2, 5 * 11)
    obs, reward, done, _ = venv.step(np.zeros((2, 5), dtype=np.float32))
    assert reward.shape == (2,)
    venv.close()
    # the batched path: one VecEnv over the batched copies
    fast = marra.envs.sb3_vec_env("hospital", num_envs=4, n_hospitals=5, horizon=3)
    model = sb3.PPO("MlpPolicy", fast, n_steps=8, batch_size=16, n_epochs=1, verbose=0)
    model.learn(total_timesteps=32)
    fast.close()


def test_hospital_gymnasium_id_uses_the_training_defaults():
    env = gymnasium.make("marra/Hospital-v0", n_hospitals=12)
    core = env.unwrapped.core
    assert core.scenario.kind == "shifting" or "shifting" in repr(core.scenario)
    assert core.transfer_budget == 12.0
    env.close()


# --------------------------------------------------------------------------- the checker
class _Broken(MultiAgentEnv):
    """An environment with a configurable defect, to show check_env names it."""

    def __init__(self, defect: str = "", **base):
        super().__init__(**base)
        self.defect = defect
        self._spec = EnvSpec(
            name="broken", num_agents=2, agent_ids=("a", "b"), obs_dim=1, state_dim=1,
            action=ActionSpec.discrete(3), horizon=4, reward="agent", metrics=("score",),
        )  # fmt: skip
        self.value = torch.zeros(self.num_envs)

    @property
    def spec(self):
        return self._spec

    def _reset_copies(self, rows, seeds):
        for row, sequence in zip(rows, seeds, strict=True):
            self.value[row] = float(sequence.generate_state(1)[0] % 100)
        if self.defect == "shared-draws":  # every copy takes the first copy's draw
            self.value[:] = float(seeds[0].generate_state(1)[0] % 100)

    def _observe(self):
        obs = self.value.view(-1, 1, 1).expand(self.num_envs, 2, 1).clone()
        if self.defect == "nan-obs" and int(self.t[0]) == 2:
            obs[0, 0, 0] = float("nan")
        return obs

    def state(self):
        return self.value.view(-1, 1).clone()

    def _action_mask(self):
        mask = torch.ones((self.num_envs, 2, 3), dtype=torch.bool)
        mask[:, :, 2] = False
        return mask

    def _transition(self, actions):
        if self.defect == "nondeterministic":
            self.value = self.value + torch.rand(self.num_envs)
        reward = actions.to(torch.float32)
        if self.defect == "reward-shape":
            reward = reward[:, 0]
        return reward, torch.zeros(self.num_envs, dtype=torch.bool), {}

    def _episode_metrics(self, done):
        if self.defect == "no-metric":
            return {}
        return {"score": self.value.clone()}


@pytest.mark.parametrize(
    "defect, words",
    [
        ("reward-shape", "reward"),
        ("nan-obs", "NaN"),
        ("nondeterministic", "same seed"),
        ("no-metric", "episode_metrics"),
        ("shared-draws", "every copy drew the same"),
    ],
)
def test_check_env_names_what_broke(defect, words):
    with pytest.raises(ContractError, match=words):
        check_env(_Broken(defect, num_envs=3))


def test_check_env_passes_a_correct_user_env_and_the_registry_takes_it():
    check_env(_Broken("", num_envs=3))
    marra.envs.register("broken-ok", _Broken, overwrite=True)
    env = make("broken-ok", num_envs=2, seed=1)
    assert env.spec.name == "broken" and "broken-ok" in registered()
    with pytest.raises(EnvError, match="already registered"):
        marra.envs.register("broken-ok", _Broken)
    with pytest.raises(EnvError, match="masked action"):
        env.reset()
        env.step(torch.full((2, 2), 2))


def test_make_names_unknown_envs_and_options():
    with pytest.raises(EnvError, match="unknown environment 'nosuch'.*roles"):
        make("nosuch")
    with pytest.raises(EnvError, match="no such option.*num_agents"):
        make("roles", colour="red")
    with pytest.raises(EnvError, match="num_agents"):
        make("roles", num_agents=0)
