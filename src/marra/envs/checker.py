"""``check_env``: the generic contract checker, for users' environments and for marra's own.

It drives an environment through the contract of :mod:`marra.envs.base` and raises
:class:`ContractError` naming the first thing that broke. Checked:

1. the spec: types, ``agent_ids``, action spec; ``num_envs`` and ``device`` attributes;
2. shapes and dtypes of ``reset``, ``step``, ``state`` and ``action_mask``;
3. determinism: the same seed and the same actions give the same observations, rewards and
   flags, twice;
4. copies: different copies get different draws (when the environment is random at all), and
   one copy's trajectory does not depend on the other copies' actions;
5. masks: allowed actions are reported as a bool ``(num_envs, num_agents, n)`` tensor with at
   least one allowed action per agent; a masked action sent to ``step`` raises (or, where the
   environment documents it, is a no-op: ``masked_action="noop"``);
6. robustness: random, extreme (the bounds and far beyond) and NaN/inf actions never give a NaN
   or an infinity in observations, rewards, state or info;
7. episodes: every copy ends exactly at ``horizon`` unless it terminated earlier; at the step it
   ends ``info["episode_outcome"]`` is ``(num_envs, num_agents)`` and ``info["episode_metrics"]``
   has one ``(num_envs,)`` tensor per name in ``spec.metrics``; stepping a finished copy without
   auto-reset raises; with ``autoreset=True`` the returned observation is a fresh episode's and
   ``info["final_obs"]`` is present;
8. baselines: every name in ``spec.baselines`` gives actions that ``step`` accepts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from .base import ActionSpec, EnvError, EnvSpec, MultiAgentEnv, Step

__all__ = ["check_env", "ContractError"]


class ContractError(AssertionError):
    """An environment that breaks the contract; the message says what and where."""


def _fail(env: MultiAgentEnv, what: str) -> ContractError:
    name = getattr(env.spec, "name", type(env).__name__)
    return ContractError(f"check_env({name}): {what}")


def _random_actions(env: MultiAgentEnv, generator: torch.Generator, scale: float = 1.0) -> Any:
    spec = env.spec
    e, n = env.num_envs, spec.num_agents
    if spec.action.is_discrete:
        mask = env.action_mask()
        scores = torch.rand((e, n, int(spec.action.n)), generator=generator)
        if mask is not None:
            scores = torch.where(mask.cpu(), scores, -1.0)
        return scores.argmax(-1).to(env.device)
    low = spec.action.low if math.isfinite(spec.action.low) else -1.0
    high = spec.action.high if math.isfinite(spec.action.high) else 1.0
    u = torch.rand((e, n, int(spec.action.dim)), generator=generator, dtype=torch.float64)
    mid, half = (low + high) / 2.0, (high - low) / 2.0
    return (mid + scale * half * (2.0 * u - 1.0)).to(env.device)


def _all_finite(env: MultiAgentEnv, where: str, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise _fail(env, f"{where} holds NaN or infinite values")
    elif isinstance(value, dict):
        for key, item in value.items():
            _all_finite(env, f"{where}[{key!r}]", item)


def _check_spec(env: MultiAgentEnv) -> EnvSpec:
    spec = env.spec
    if not isinstance(spec, EnvSpec):
        raise _fail(env, f"spec is a {type(spec).__name__}, expected an EnvSpec")
    if not isinstance(spec.action, ActionSpec):
        raise _fail(env, "spec.action is not an ActionSpec")
    if not isinstance(env.num_envs, int) or env.num_envs < 1:
        raise _fail(env, f"num_envs is {env.num_envs!r}, expected a positive int")
    if not isinstance(env.device, torch.device):
        raise _fail(env, f"device is {env.device!r}, expected a torch.device")
    return spec


def _check_obs(env: MultiAgentEnv, obs: Any, where: str) -> None:
    spec = env.spec
    shape = (env.num_envs, spec.num_agents, spec.obs_dim)
    if not isinstance(obs, torch.Tensor):
        raise _fail(env, f"{where}: observation is a {type(obs).__name__}, expected a tensor")
    if tuple(obs.shape) != shape:
        raise _fail(env, f"{where}: observation shape {tuple(obs.shape)}, expected {shape}")
    if obs.dtype != torch.float32:
        raise _fail(env, f"{where}: observation dtype {obs.dtype}, expected torch.float32")
    if obs.device.type != env.device.type:
        raise _fail(env, f"{where}: observation on {obs.device}, expected {env.device}")
    _all_finite(env, f"{where}: observation", obs)


def _check_state_and_mask(env: MultiAgentEnv, where: str) -> None:
    spec = env.spec
    state = env.state()
    if not isinstance(state, torch.Tensor) or tuple(state.shape) != (env.num_envs, spec.state_dim):
        got = tuple(state.shape) if isinstance(state, torch.Tensor) else type(state).__name__
        raise _fail(env, f"{where}: state() is {got}, expected ({env.num_envs}, {spec.state_dim})")
    if state.dtype != torch.float32:
        raise _fail(env, f"{where}: state() dtype {state.dtype}, expected torch.float32")
    _all_finite(env, f"{where}: state()", state)
    mask = env.action_mask()
    if spec.action.is_discrete:
        shape = (env.num_envs, spec.num_agents, int(spec.action.n))
        if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != shape:
            got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else mask
            raise _fail(env, f"{where}: action_mask() is {got}, expected a bool tensor {shape}")
        if mask.dtype != torch.bool:
            raise _fail(env, f"{where}: action_mask() dtype {mask.dtype}, expected torch.bool")
        if not bool(mask.any(-1).all()):
            raise _fail(env, f"{where}: action_mask() leaves an agent with no allowed action")
    elif mask is not None:
        raise _fail(env, f"{where}: action_mask() must be None for continuous actions")


def _check_step(env: MultiAgentEnv, out: Any, where: str) -> Step:
    spec = env.spec
    if not (isinstance(out, tuple) and len(out) == 5):
        raise _fail(env, f"{where}: step() must return Step(obs, reward, terminated, truncated, "
                    f"info), got {type(out).__name__}")  # fmt: skip
    obs, reward, terminated, truncated, info = out
    _check_obs(env, obs, where)
    shape = (env.num_envs, spec.num_agents)
    if not isinstance(reward, torch.Tensor) or tuple(reward.shape) != shape:
        got = tuple(reward.shape) if isinstance(reward, torch.Tensor) else type(reward).__name__
        raise _fail(env, f"{where}: reward is {got}, expected {shape} (num_envs, num_agents)")
    if reward.dtype != torch.float32:
        raise _fail(env, f"{where}: reward dtype {reward.dtype}, expected torch.float32")
    _all_finite(env, f"{where}: reward", reward)
    if spec.reward == "team" and not bool((reward == reward[:, :1]).all()):
        raise _fail(env, f"{where}: spec.reward is 'team' but agents got different rewards")
    for flag_name, flag in (("terminated", terminated), ("truncated", truncated)):
        if not isinstance(flag, torch.Tensor) or tuple(flag.shape) != (env.num_envs,):
            raise _fail(env, f"{where}: {flag_name} must be a ({env.num_envs},) tensor")
        if flag.dtype != torch.bool:
            raise _fail(env, f"{where}: {flag_name} dtype {flag.dtype}, expected torch.bool")
    if not isinstance(info, dict):
        raise _fail(env, f"{where}: info is a {type(info).__name__}, expected a dict")
    for key, value in info.items():
        if isinstance(value, torch.Tensor):
            if value.ndim == 0 or value.shape[0] != env.num_envs:
                raise _fail(env, f"{where}: info[{key!r}] has shape {tuple(value.shape)}; "
                            f"the leading dimension must be num_envs={env.num_envs}")  # fmt: skip
        elif key == "episode_metrics":
            if not isinstance(value, dict):
                raise _fail(env, f"{where}: info['episode_metrics'] must be a dict of tensors")
        else:
            raise _fail(env, f"{where}: info[{key!r}] is a {type(value).__name__}, not a tensor")
    _all_finite(env, f"{where}: info", info)
    return Step(obs, reward, terminated, truncated, info)


def _check_episode_end(env: MultiAgentEnv, step: Step, ended: torch.Tensor, where: str) -> None:
    spec = env.spec
    info = step.info
    if "episode_outcome" not in info:
        raise _fail(env, f"{where}: an episode ended but info has no 'episode_outcome'")
    outcome = info["episode_outcome"]
    if tuple(outcome.shape) != (env.num_envs, spec.num_agents):
        raise _fail(env, f"{where}: info['episode_outcome'] has shape {tuple(outcome.shape)}, "
                    f"expected ({env.num_envs}, {spec.num_agents})")  # fmt: skip
    metrics = info.get("episode_metrics")
    if not isinstance(metrics, dict):
        raise _fail(env, f"{where}: an episode ended but info has no 'episode_metrics' dict")
    missing = [m for m in spec.metrics if m not in metrics]
    if missing:
        raise _fail(env, f"{where}: info['episode_metrics'] lacks {missing} (spec.metrics)")
    for key, value in metrics.items():
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != (env.num_envs,):
            raise _fail(env, f"{where}: info['episode_metrics'][{key!r}] must be "
                        f"({env.num_envs},)")  # fmt: skip


def _rollout(
    env: MultiAgentEnv, seed: int, steps: int, actions_fn: Callable[[int], Any]
) -> list[tuple[torch.Tensor, ...]]:
    obs = env.reset(seed=seed)
    _all_finite(env, "reset: observation", obs)
    record = [(obs.clone(),)]
    for t in range(steps):
        out = env.step(actions_fn(t))
        _all_finite(env, f"step {t}: observation", out.obs)
        _all_finite(env, f"step {t}: reward", out.reward)
        record.append((out.obs.clone(), out.reward.clone(), out.terminated.clone(),
                       out.truncated.clone()))  # fmt: skip
        if bool((out.terminated | out.truncated).any()):
            break
    return record


def _same(a: list[tuple[torch.Tensor, ...]], b: list[tuple[torch.Tensor, ...]]) -> bool:
    return len(a) == len(b) and all(
        all(torch.equal(x, y) for x, y in zip(ra, rb, strict=True))
        for ra, rb in zip(a, b, strict=True)
    )


def check_env(env: MultiAgentEnv, *, seed: int = 0, max_steps: int | None = None) -> None:
    """Check that ``env`` keeps the contract of :mod:`marra.envs.base` (see the module docstring).

    ``env`` should have ``num_envs >= 2`` and ``autoreset=False`` (the copy checks need two
    copies; the auto-reset check builds nothing new, it switches the flag for its own steps and
    restores it). ``max_steps`` caps the episode steps the check runs (default: the horizon, up to
    1,000); checks that need a whole episode are skipped above the cap. The environment is
    reset afterwards.

    Raises:
        ContractError: naming the first thing that broke.
    """
    spec = _check_spec(env)
    cap = min(spec.horizon, 1000) if max_steps is None else int(max_steps)
    generator = torch.Generator().manual_seed(seed)
    autoreset = env.autoreset
    env.autoreset = False
    try:
        obs = env.reset(seed=seed)
        _check_obs(env, obs, "reset")
        _check_state_and_mask(env, "after reset")

        # --- determinism: same seed, same actions -> same trajectory
        plan: list[Any] = []

        def planned(t: int) -> Any:
            while len(plan) <= t:
                plan.append(_random_actions(env, generator))
            return plan[t]

        steps = min(cap, 20)
        first = _rollout(env, seed, steps, planned)
        second = _rollout(env, seed, steps, planned)
        if not _same(first, second):
            raise _fail(env, "the same seed and actions gave different trajectories")

        # --- copies: independent of each other's actions; different draws
        if env.num_envs >= 2:
            other = torch.Generator().manual_seed(seed + 1)
            alt: list[Any] = []

            def changed(t: int) -> Any:
                while len(alt) <= t:
                    base = planned(len(alt))
                    fresh = _random_actions(env, other)
                    mixed = base.clone()
                    mixed[1:] = fresh[1:]
                    alt.append(mixed)
                return alt[t]

            third = _rollout(env, seed, steps, changed)
            copy0 = [tuple(x[0] for x in row) for row in first]
            copy0_alt = [tuple(x[0] for x in row) for row in third]
            if not _same(copy0[: len(copy0_alt)], copy0_alt[: len(copy0)]):
                raise _fail(env, "copy 0's trajectory changed when only the other copies' "
                            "actions changed: copies are not independent")  # fmt: skip
            obs = env.reset(seed=seed)
            random_env = env.reset(seed=seed + 7)
            draws_differ = not torch.equal(obs[0], obs[1]) or not torch.equal(
                random_env[0], random_env[1]
            )
            seeds_differ = not torch.equal(obs, random_env)
            if seeds_differ and not draws_differ:
                # the env is random (seeds matter) but every copy drew the same
                rollout = _rollout(env, seed, steps, planned)
                if all(torch.equal(row[0][0], row[0][1]) for row in rollout):
                    raise _fail(env, "every copy drew the same episode: copies must get "
                                "different draws (SeedSequence spawn keys)")  # fmt: skip

        # --- masks
        env.reset(seed=seed)
        if spec.action.is_discrete:
            mask = env.action_mask()
            assert mask is not None
            blocked = (~mask).nonzero()
            if blocked.shape[0] > 0:
                copy, agent, action = (int(v) for v in blocked[0])
                actions = _random_actions(env, generator)
                actions[copy, agent] = action
                try:
                    env.step(actions)
                except (EnvError, ValueError):
                    pass
                else:
                    if getattr(env, "masked_action", "error") != "noop":
                        raise _fail(env, f"step() accepted masked action {action} of agent "
                                    f"{agent} in copy {copy}")  # fmt: skip
                env.reset(seed=seed)
            bad = torch.full((env.num_envs, spec.num_agents), int(spec.action.n), dtype=torch.int64)
            try:
                env.step(bad.to(env.device))
            except (EnvError, ValueError):
                pass
            else:
                raise _fail(
                    env, f"step() accepted action index {int(spec.action.n)} (out of range)"
                )
            env.reset(seed=seed)

        # --- robustness: random, extreme and NaN actions, a whole episode
        obs = env.reset(seed=seed)
        ended = torch.zeros(env.num_envs, dtype=torch.bool, device=env.device)
        length = torch.zeros(env.num_envs, dtype=torch.int64)
        for t in range(cap):
            if spec.action.is_discrete:
                actions = _random_actions(env, generator)
            else:
                kind = t % 4
                if kind == 0:
                    actions = _random_actions(env, generator)
                elif kind == 1:
                    actions = _random_actions(env, generator, scale=1e6)
                elif kind == 2:
                    actions = _random_actions(env, generator)
                    actions.view(-1)[:: max(1, actions.numel() // 7)] = float("nan")
                    actions.view(-1)[1 :: max(1, actions.numel() // 5)] = float("inf")
                    actions.view(-1)[2 :: max(1, actions.numel() // 5)] = float("-inf")
                else:
                    low, high = spec.action.low, spec.action.high
                    edge = high if math.isfinite(high) else 1e12
                    actions = torch.full_like(_random_actions(env, generator), edge)
                    if t % 8 == 3:
                        actions.fill_(low if math.isfinite(low) else -1e12)
            step = _check_step(env, env.step(actions), f"step {t}")
            _check_state_and_mask(env, f"after step {t}")
            length += (~ended).cpu().to(torch.int64)
            now = (step.terminated | step.truncated) & ~ended
            if bool(step.truncated.any()):
                early = step.truncated & (length.to(env.device) != spec.horizon)
                if bool(early.any()):
                    raise _fail(env, f"step {t}: truncated before the horizon {spec.horizon}")
            if bool(now.any()):
                _check_episode_end(env, step, now, f"step {t}")
            ended |= now
            if bool(ended.all()):
                break
            if bool(now.any()):
                obs = env.reset_done(now)
                ended &= ~now
                length[now.cpu()] = 0
        else:
            if cap >= spec.horizon:
                raise _fail(env, f"no copy ended within the horizon ({spec.horizon} steps)")

        # --- stepping a finished copy
        if cap >= spec.horizon:
            env.reset(seed=seed)
            for _ in range(spec.horizon):
                out = env.step(_random_actions(env, generator))
                if bool((out.terminated | out.truncated).any()):
                    break
            try:
                env.step(_random_actions(env, generator))
            except (EnvError, RuntimeError):
                pass
            else:
                raise _fail(env, "stepping a finished copy without autoreset did not raise")

            # --- auto-reset
            env.autoreset = True
            env.reset(seed=seed)
            seen_final = False
            for _ in range(spec.horizon):
                out = env.step(_random_actions(env, generator))
                if bool((out.terminated | out.truncated).any()):
                    if "final_obs" not in out.info:
                        raise _fail(env, "autoreset: info has no 'final_obs' when an episode ended")
                    seen_final = True
                    done = out.terminated | out.truncated
                    if not bool((env.t[done] == 0).all()):
                        raise _fail(env, "autoreset: finished copies were not reset")
                    break
            if not seen_final:
                raise _fail(env, "autoreset: no episode ended within the horizon")
            env.step(_random_actions(env, generator))  # stepping on after a reset is fine
            env.autoreset = False

        # --- baselines
        for name in spec.baselines:
            obs = env.reset(seed=seed)
            method = env.baseline(name, seed=seed)
            method.reset()
            for t in range(min(3, spec.horizon)):
                step = _check_step(env, env.step(method.act(obs)), f"baseline {name!r} step {t}")
                obs = step.obs
                if bool((step.terminated | step.truncated).any()):
                    break
    except ContractError:
        raise
    except Exception as exc:
        raise _fail(env, f"raised {type(exc).__name__}: {exc}") from exc
    finally:
        env.autoreset = autoreset
    env.reset(seed=seed)
