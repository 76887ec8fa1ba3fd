"""Commands of the learning researcher: envs, train, evaluate."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from marra.cli._app import (
    SCENARIO_HELP,
    _fail,
    _load_network,
    _note,
    app,
    check_count,
    console,
    parse_budget,
)

REWARD_TERMS = ("target", "minima", "fairness")
SCENARIO_NAMES = "static, shifting, shock, seasonal, outbreak, csv:FILE"
#: The largest counts the learning commands accept (bigger ones are refused before allocating).
MAX_STEPS = 10**12
MAX_COPIES = 1_000_000


def _parse_reward_terms(value: str) -> dict[str, float]:
    """``"target,minima"`` -> weights with the unnamed terms switched off (paper 000 Fig. 2)."""
    terms = [t.strip() for t in value.split(",") if t.strip()]
    unknown = [t for t in terms if t not in REWARD_TERMS]
    if unknown:
        raise _fail(
            f"--reward-terms: unknown term {unknown[0]!r}; the terms are "
            f"{', '.join(REWARD_TERMS)} (a comma list, e.g. target,minima)"
        )
    if not terms:
        raise _fail(f"--reward-terms: empty; give a comma list of {', '.join(REWARD_TERMS)}")
    return {term: 1.0 if term in terms else 0.0 for term in REWARD_TERMS}


def _check_device(device: str) -> str:
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps``, available on this machine."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise _fail(f"--device: {device!r} is not a torch device; use cpu or cuda") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise _fail(f"--device {device}: CUDA is not available on this machine; use cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise _fail(
                f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif parsed.type == "mps":
        backend = getattr(torch.backends, "mps", None)
        if backend is None or not backend.is_available():
            raise _fail(f"--device {device}: MPS is not available on this machine; use cpu")
    elif parsed.type != "cpu":
        raise _fail(f"--device: {device!r} is not supported; use cpu, cuda or mps")
    return device


def _check_seed(seed: int, option: str = "--seed") -> int:
    if not 0 <= seed < 2**63:
        raise _fail(f"{option}: must be an integer from 0 to 2**63 - 1, got {seed}")
    return seed


def _env_options(env: str, pairs: list[str] | None) -> dict[str, Any]:
    """``--env-option KEY=VALUE`` pairs, typed by the environment's documented options."""
    from marra.envs import EnvError, parse_option

    options: dict[str, Any] = {}
    for text in pairs or []:
        try:
            key, value = parse_option(env, text)
        except EnvError as exc:
            raise _fail(str(exc)) from None
        options[key] = value
    return options


def _check_env_name(env: str) -> str:
    from marra.envs import registered

    if env not in registered():
        raise _fail(f"--env: unknown environment {env!r}; registered: {', '.join(registered())}")
    return env


def _hospital_options(
    *,
    scenario: str | None,
    hospitals: int | None,
    network_file: Path | None,
    budget: str | None,
    reward_terms: str | None,
    horizon: int | None,
    options: dict[str, Any],
) -> dict[str, Any]:
    """The hospital shortcut: ``--scenario`` & co. with ``marra train``'s defaults (shifting
    targets, 150 random hospitals, a budget of one staff per hospital per step, horizon 50),
    then ``--env-option`` values, which may not contradict a shortcut flag."""
    given = {
        "scenario": scenario,
        "n_hospitals": hospitals,
        "network": None if network_file is None else str(network_file),
        "transfer_budget": budget,
        "reward_weights": reward_terms,
        "horizon": horizon,
    }
    for key, value in given.items():
        if value is not None and key in options:
            raise _fail(f"--env-option {key}: given twice (also by its shortcut flag)")
    merged: dict[str, Any] = {"scenario": "shifting", "horizon": 50}
    network = None
    if network_file is not None:
        network = _load_network(network_file, integer=False, option="--network")
        if hospitals is not None and hospitals != network.n:
            raise _fail(f"--hospitals: {hospitals} differs from --network's {network.n} hospitals")
        merged["network"] = str(network_file)
    elif "network" not in options:
        n = 150 if hospitals is None else check_count(hospitals, "--hospitals", high=10_000_000)
        merged["n_hospitals"] = n
    if scenario is not None:
        merged["scenario"] = scenario
    if horizon is not None:
        merged["horizon"] = check_count(horizon, "--horizon", high=10_000_000)
    if reward_terms is not None:
        merged["reward_weights"] = _parse_reward_terms(reward_terms)
    merged.update(options)
    n_agents = network.n if network is not None else merged.get("n_hospitals", 150)
    if budget is not None:
        value = parse_budget(budget, integer=False)
        merged["transfer_budget"] = None if value is None or math.isinf(value) else value
    elif "transfer_budget" not in merged:
        merged["transfer_budget"] = float(n_agents)
    return merged


@app.command()
def envs(
    name: Annotated[str | None, typer.Argument(help="one environment to describe")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """The registered environments with their specs (agents, observation, actions, reward
    kind, metrics, baselines, options with defaults)."""
    from marra.envs import EnvError, env_options, make, registered
    from marra.envs.registry import description

    names = registered() if name is None else [_check_env_name(name)]
    described = []
    for env_name in names:
        try:
            spec = make(env_name, num_envs=1).spec
        except EnvError as exc:
            raise _fail(f"{env_name}: cannot be built with its defaults ({exc})") from None
        except ImportError as exc:
            described.append({"name": env_name, "error": str(exc)})
            continue
        options = env_options(env_name)
        described.append(
            {
                "name": env_name,
                "description": description(env_name),
                "agents": spec.num_agents,
                "obs_dim": spec.obs_dim,
                "state_dim": spec.state_dim,
                "action": spec.action.describe(),
                "horizon": spec.horizon,
                "reward": spec.reward,
                "metrics": list(spec.metrics),
                "baselines": list(spec.baselines),
                "outcome": spec.outcome,
                "options": {
                    k: {"default": repr(o.default), "type": o.annotation, "help": o.help}
                    for k, o in options.items()
                },
            }
        )
    if as_json:
        sys.stdout.write(json.dumps(described if name is None else described[0]) + "\n")
        return
    if name is None:
        table = Table(title="Registered environments (defaults)", title_justify="left")
        for column in ("name", "agents", "obs", "action", "horizon", "reward", "metrics",
                       "baselines"):  # fmt: skip
            table.add_column(column, justify="right" if column in ("agents", "obs") else "left")
        for entry in described:
            if "error" in entry:
                table.add_row(entry["name"], "", "", f"unavailable: {entry['error']}", "", "", "",
                              "")  # fmt: skip
                continue
            table.add_row(
                entry["name"], str(entry["agents"]), str(entry["obs_dim"]), entry["action"],
                str(entry["horizon"]), entry["reward"], ", ".join(entry["metrics"]),
                ", ".join(entry["baselines"]),
            )  # fmt: skip
        console.print(table)
        console.print("marra envs NAME shows an environment's options.")
        return
    entry = described[0]
    if "error" in entry:
        raise _fail(f"{entry['name']}: {entry['error']}")
    console.print(f"[bold]{entry['name']}[/]: {entry['description']}")
    for key in ("agents", "obs_dim", "state_dim", "action", "horizon", "reward", "outcome"):
        console.print(f"  {key}: {entry[key]}")
    console.print(f"  metrics: {', '.join(entry['metrics']) or '(none)'}")
    console.print(f"  baselines: {', '.join(entry['baselines']) or '(none)'}")
    table = Table(title="Options (--env-option KEY=VALUE)", title_justify="left")
    for column in ("option", "default", "type", "meaning"):
        table.add_column(column)
    for key, option in entry["options"].items():
        table.add_row(key, option["default"], option["type"], option["help"])
    console.print(table)


@app.command()
def train(
    env: Annotated[
        str | None, typer.Option(help="registered environment (marra envs); default hospital")
    ] = None,
    env_option: Annotated[
        list[str] | None,
        typer.Option(help="an environment option KEY=VALUE (repeat); marra envs NAME lists them"),
    ] = None,
    algo: Annotated[
        str, typer.Option(help="ippo, mappo, iql, vdn, qmix, wqmix or maddpg (docs/learners.md)")
    ] = "mappo",
    sharing: Annotated[
        str, typer.Option(help="parameter sharing: none, full, id, psa, seps or dyps")
    ] = "full",
    num_groups: Annotated[
        int | None,
        typer.Option(help="seps: clusters [Davies-Bouldin over 2..N-1]; dyps: groups [4]"),
    ] = None,
    seps_pretrain_steps: Annotated[
        int | None,
        typer.Option(help="seps: env-steps of pretraining with one shared network [200000]"),
    ] = None,
    dyps_ablation: Annotated[
        str | None, typer.Option(help="dyps: none, no-cvae, no-vlstm or no-repr [none]")
    ] = None,
    dyps_selector_lr: Annotated[
        float | None, typer.Option(help="dyps: step size of the group selector [1e-4]")
    ] = None,
    dyps_selector_reward: Annotated[
        str | None,
        typer.Option(help="dyps: the selector's reward, team (total) or agent (own) [team]"),
    ] = None,
    critic: Annotated[
        str,
        typer.Option(
            help="critic input: auto (ippo: local; mappo: the env's hint, else state; the "
            "hospital's: pool), local, state, pool"
        ),
    ] = "auto",
    scenario: Annotated[
        str | None, typer.Option(help=f"hospital shortcut: {SCENARIO_HELP}")
    ] = None,
    hospitals: Annotated[
        int | None, typer.Option(help="hospital shortcut: hospitals per random network [150]")
    ] = None,
    network_file: Annotated[
        Path | None, typer.Option("--network", help="hospital shortcut: train on this CSV network")
    ] = None,
    budget: Annotated[
        str | None,
        typer.Option(
            metavar="STAFF|none",
            help="hospital shortcut: staff that may move per step [one per hospital]; none: no cap",
        ),
    ] = None,
    reward_terms: Annotated[
        str | None,
        typer.Option(
            help="hospital shortcut: terms of paper 000 Eq. 1 to keep, e.g. target,minima"
        ),
    ] = None,
    horizon: Annotated[
        int | None, typer.Option(help="hospital shortcut: steps per episode [50]")
    ] = None,
    steps: Annotated[int, typer.Option(help="env-steps to train (one copy, one step)")] = 400_000,
    seed: Annotated[int, typer.Option(help="seed of the whole run")] = 1,
    num_envs: Annotated[int, typer.Option(help="environment copies stepped together")] = 16,
    device: Annotated[str, typer.Option(help="torch device: cpu or cuda")] = "cpu",
    out: Annotated[Path, typer.Option(help="run folder (policy.pt, logs, checkpoint)")] = Path(
        "runs/train"
    ),
    resume: Annotated[
        bool, typer.Option("--resume", help="continue the run in --out (--steps may grow)")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="start afresh even if --out holds a run")
    ] = False,
    equity: Annotated[
        str | None,
        typer.Option(help="equity constraint on the advantages: none or eld (paper 003) [none]"),
    ] = None,
    equity_tau: Annotated[
        float | None, typer.Option(help="ELD: tolerance band tau of the excess [0.1]")
    ] = None,
    equity_budget: Annotated[
        float | None,
        typer.Option(metavar="EPS", help="ELD: budget of E[H/N], in outcome units [0]"),
    ] = None,
    dual_lr: Annotated[
        float | None, typer.Option(metavar="ETA", help="ELD: step size of the dual ascent [1]")
    ] = None,
    dual_every: Annotated[
        int | None, typer.Option(metavar="K", help="ELD: finished episodes per dual step [16]")
    ] = None,
    lambda_max: Annotated[
        float | None, typer.Option(help="ELD: cap of the dual variable lambda [12]")
    ] = None,
    equity_alpha: Annotated[
        float | None,
        typer.Option(metavar="A", help="ELD: weight in [0, 1] of the centred identity term [0]"),
    ] = None,
    equity_form: Annotated[
        str | None,
        typer.Option(help="ELD: fd (per-agent), ctde (team cost) or auto (by the critic) [auto]"),
    ] = None,
    algo_option: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KEY=VALUE",
            help="a setting of the learner's config (repeat), e.g. welfare=alpha for soto",
        ),
    ] = None,
) -> None:
    """Train a learner (IPPO, MAPPO, COMA, FEN, SOTO, IQL, VDN, QMIX, WQMIX, MADDPG) with a
    sharing scheme on any environment, optionally under the ELD equity constraint
    (--equity eld); write policy.pt.

    Without --env it trains paper 000's hospital agent (MAPPO, full sharing); --scenario,
    --hospitals, --network, --budget, --reward-terms and --horizon are shortcuts for the
    hospital's options.
    """
    from marra._io import OutputPathError, check_output_dir
    from marra.rl import ALGORITHMS, SHARING_SCHEMES

    shortcuts = {
        "--scenario": scenario, "--hospitals": hospitals, "--network": network_file,
        "--budget": budget, "--reward-terms": reward_terms, "--horizon": horizon,
    }  # fmt: skip
    env_name = _check_env_name("hospital" if env is None else env)
    given = [flag for flag, value in shortcuts.items() if value is not None]
    if env_name != "hospital" and given:
        raise _fail(f"{given[0]}: is a shortcut for --env hospital; use --env-option with {env}")
    if algo not in ALGORITHMS:
        raise _fail(f"--algo: unknown algorithm {algo!r}; choose one of {', '.join(ALGORITHMS)}")
    if sharing not in SHARING_SCHEMES:
        raise _fail(
            f"--sharing: unknown scheme {sharing!r}; choose one of {', '.join(SHARING_SCHEMES)}"
        )
    if critic not in ("auto", "local", "state", "pool"):
        raise _fail(f"--critic: one of auto, local, state, pool; got {critic!r}")
    check_count(steps, "--steps", high=MAX_STEPS)
    check_count(num_envs, "--num-envs", high=MAX_COPIES)
    _check_seed(seed)
    if resume and overwrite:
        raise _fail("--resume and --overwrite exclude each other")
    try:
        check_output_dir(out)
    except OutputPathError as exc:
        raise _fail(f"--out: {exc}") from None
    _check_device(device)
    options = _env_options(env_name, env_option)
    if env_name == "hospital":
        options = _hospital_options(
            scenario=scenario, hospitals=hospitals, network_file=network_file, budget=budget,
            reward_terms=reward_terms, horizon=horizon, options=options,
        )  # fmt: skip
    equity_settings = {
        "equity": equity, "equity_tau": equity_tau, "equity_budget": equity_budget,
        "dual_lr": dual_lr, "dual_every": dual_every, "lambda_max": lambda_max,
        "equity_alpha": equity_alpha, "equity_form": equity_form,
    }  # fmt: skip
    extra = _learner_settings(algo, equity_settings, algo_option)
    extra.update(_sharing_settings(algo, sharing, {
        "num_groups": num_groups, "seps_pretrain_steps": seps_pretrain_steps,
        "dyps_ablation": dyps_ablation, "dyps_selector_lr": dyps_selector_lr,
        "dyps_selector_reward": dyps_selector_reward,
    }, extra))  # fmt: skip
    result = _run_training(
        env_name, options, algo=algo, sharing=sharing, critic=critic, steps=steps, seed=seed,
        num_envs=num_envs, device=device, out=out, resume=resume, overwrite=overwrite,
        extra=extra,
    )  # fmt: skip
    final = result.final
    metric = next(iter(result.agent_metric_names), "return")
    console.print(
        f"trained {result.env_steps:,} env-steps in {result.wall_s:.0f} s "
        f"({result.agent_steps_per_s:,.0f} agent-steps/s); final {metric} "
        f"{final.get(metric, float('nan')):.3f}"
    )
    # commands are printed whole (never wrapped), so they can be copied
    console.print(f"policy: {result.policy_path}; log: {result.log_path}", soft_wrap=True)
    console.print(f"compare: marra evaluate {result.policy_path} --episodes 10", soft_wrap=True)
    if env_name == "hospital":
        network_arg = f" --network {network_file}" if network_file is not None else ""
        budget_value = options.get("transfer_budget")
        budget_arg = "none" if budget_value is None else f"{budget_value:g}"
        console.print(
            f"         marra simulate --scenario {options.get('scenario')}{network_arg} "
            f"--strategy policy:{result.policy_path} --strategy qp --budget {budget_arg}",
            soft_wrap=True,
            markup=False,
        )


def _run_training(env_name: str, options: dict[str, Any], **settings: Any) -> Any:
    from marra.envs import EnvError
    from marra.rl import (
        ALGORITHMS,
        CheckpointError,
        CompatibilityError,
        MemoryEstimateError,
        PPOConfig,
        RunExistsError,
        TrainingError,
    )
    from marra.rl import train as run_training

    out = settings["out"]
    # each learner's own config class (PPOConfig for the PPO family)
    config_cls = getattr(ALGORITHMS[settings["algo"]], "config_cls", None) or PPOConfig
    has_critic = issubclass(config_cls, PPOConfig)  # the PPO family and its transforms
    fields = {"critic": settings["critic"]} if has_critic else {}
    if not has_critic and settings["critic"] != "auto":
        raise _fail(f"--critic: is for the PPO family only, not --algo {settings['algo']}")
    try:
        config = config_cls(
            algo=settings["algo"], sharing=settings["sharing"], **fields,
            total_steps=settings["steps"], seed=settings["seed"], num_envs=settings["num_envs"],
            device=settings["device"], **settings.get("extra", {}),
        )  # fmt: skip
        result = run_training(
            config, options, env=env_name, out_dir=out, resume=settings["resume"],
            overwrite=settings["overwrite"], progress=True,
        )  # fmt: skip
    except RunExistsError:
        raise _fail(
            f"--out: {out} already holds a run; add --resume to continue it or --overwrite to "
            "start afresh"
        ) from None
    except CheckpointError as exc:
        message = str(exc).replace("resume:", "--resume:", 1)
        raise _fail(message) from None
    except MemoryEstimateError as exc:
        raise _fail(f"--num-envs/--steps: {exc}") from None
    except (TrainingError, CompatibilityError) as exc:
        raise _fail(str(exc)) from None
    except EnvError as exc:
        raise _fail(_env_error(env_name, str(exc))) from None
    except ValueError as exc:
        raise _fail(_flag_message(str(exc), settings.get("extra", {}))) from None
    result.agent_metric_names = _metric_names(env_name, options)
    return result


#: ``marra train`` flags of config fields (their errors name the flag).
EQUITY_FLAGS = {
    "equity": "--equity", "equity_tau": "--equity-tau", "equity_budget": "--equity-budget",
    "dual_lr": "--dual-lr", "dual_every": "--dual-every", "lambda_max": "--lambda-max",
    "equity_alpha": "--equity-alpha", "equity_form": "--equity-form",
}  # fmt: skip
#: config fields that ``marra train`` sets with its own flags (not through --algo-option)
_OWN_FLAGS = {
    "algo": "--algo", "sharing": "--sharing", "critic": "--critic", "total_steps": "--steps",
    "seed": "--seed", "num_envs": "--num-envs", "device": "--device", **EQUITY_FLAGS,
}  # fmt: skip


#: ``marra train`` flags of the sharing schemes' config fields.
SHARING_FLAGS = {
    "num_groups": "--num-groups", "seps_pretrain_steps": "--seps-pretrain-steps",
    "dyps_ablation": "--dyps-ablation", "dyps_selector_lr": "--dyps-selector-lr",
    "dyps_selector_reward": "--dyps-selector-reward",
}  # fmt: skip
_OWN_FLAGS.update(SHARING_FLAGS)


def _sharing_settings(algo: str, sharing: str, given: dict[str, Any], extra: dict[str, Any]
                      ) -> dict[str, Any]:  # fmt: skip
    """The sharing flags that were given, checked against the scheme that reads them."""
    import dataclasses

    from marra.rl import ALGORITHMS, SHARING_SCHEMES, PPOConfig

    settings = {k: v for k, v in given.items() if v is not None}
    scheme = SHARING_SCHEMES.get(sharing)
    config_cls = getattr(ALGORITHMS[algo], "config_cls", None) or PPOConfig
    fields = {f.name for f in dataclasses.fields(config_cls)}
    for key in settings:
        flag = SHARING_FLAGS[key]
        owner = "dyps" if key.startswith("dyps") else "seps" if key.startswith("seps") else None
        if owner is None and not getattr(scheme, "takes_num_groups", False):
            raise _fail(f"{flag}: is for --sharing seps or dyps, not {sharing}")
        if owner is not None and sharing != owner:
            raise _fail(f"{flag}: is for --sharing {owner}, not {sharing}")
        if key not in fields:
            raise _fail(f"{flag}: --algo {algo} takes no such setting")
        if key in extra:
            raise _fail(f"{flag}: given twice (also by --algo-option)")
    if "num_groups" in settings and settings["num_groups"] < 1:
        raise _fail(f"--num-groups: must be a positive integer, got {settings['num_groups']}")
    return settings


def _flag_message(message: str, extra: dict[str, Any]) -> str:
    """A config error naming the flag that set the field (``equity_tau: ...`` ->
    ``--equity-tau: ...``, ``welfare: ...`` -> ``--algo-option welfare: ...``)."""
    field = message.split(":", 1)[0].strip()
    if field in EQUITY_FLAGS:
        return EQUITY_FLAGS[field] + message[len(field) :]
    if field in SHARING_FLAGS:
        return SHARING_FLAGS[field] + message[len(field) :]
    if field in extra:
        return f"--algo-option {message}"
    return message


def _learner_settings(algo: str, equity: dict[str, Any], pairs: list[str] | None) -> dict[str, Any]:
    """Config fields from the ELD flags (only those given) and ``--algo-option KEY=VALUE``
    pairs, typed by the learner's config class (exit 2, one line, on a bad one)."""
    import dataclasses

    from marra.rl import ALGORITHMS, PPOConfig

    config_cls = getattr(ALGORITHMS[algo], "config_cls", None) or PPOConfig
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    settings = {k: v for k, v in equity.items() if v is not None}
    if settings and "equity" not in fields:
        raise _fail(f"{EQUITY_FLAGS[next(iter(settings))]}: --algo {algo} takes no constraint")
    if settings and settings.get("equity", "none") == "none" and set(settings) != {"equity"}:
        flag = EQUITY_FLAGS[next(k for k in settings if k != "equity")]
        raise _fail(f"{flag}: is an ELD setting; add --equity eld")
    for text in pairs or []:
        key, sep, value = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise _fail(f"--algo-option: expected KEY=VALUE, got {text!r}")
        if key in _OWN_FLAGS:
            raise _fail(f"--algo-option {key}: set it with {_OWN_FLAGS[key]}")
        if key not in fields:
            names = ", ".join(k for k in fields if k not in _OWN_FLAGS)
            raise _fail(
                f"--algo-option {key}: not a setting of --algo {algo}; its settings: {names}"
            )
        if key in settings:
            raise _fail(f"--algo-option {key}: given twice")
        settings[key] = _typed(key, value.strip(), str(fields[key].type))
    return settings


def _typed(key: str, value: str, annotation: str) -> Any:
    """``value`` as the type a config field's annotation names (bool, int, float, tuples of
    ints, None where allowed, else the string)."""
    if "None" in annotation and value.lower() == "none":
        return None
    try:
        if annotation.startswith("bool"):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return value.lower() in ("true", "1", "yes")
        if annotation.startswith("tuple"):
            return tuple(int(v) for v in value.split(",") if v.strip())
        if annotation.startswith("int"):
            return int(value)
        if annotation.startswith("float"):
            return float(value)
    except ValueError:
        kind = annotation.split("|")[0].split("[")[0].strip()
        raise _fail(f"--algo-option {key}: expected {kind}, got {value!r}") from None
    return value


#: The hospital's options and the shortcut flags that set them.
HOSPITAL_FLAGS = {
    "scenario": "--scenario",
    "spec": "--scenario",
    "n_hospitals": "--hospitals",
    "transfer_budget": "--budget",
    "horizon": "--horizon",
    "network": "--network",
    "reward_weights": "--reward-terms",
}


def _env_error(env_name: str, message: str) -> str:
    """An environment's error with the flag that set the option it names."""
    field = message.split(":", 1)[0].strip()
    if env_name == "hospital" and field in HOSPITAL_FLAGS:
        rest = message.split(":", 1)[1].strip() if field == "spec" else message
        return f"{HOSPITAL_FLAGS[field]}: {rest}"
    return f"--env {env_name} (--env-option {field}): {message}" if field else message


def _metric_names(env_name: str, options: dict[str, Any]) -> tuple[str, ...]:
    from marra.envs import make

    try:
        return make(env_name, num_envs=1, **options).spec.metrics
    except Exception:  # informative only
        return ()


@app.command()
def evaluate(
    policy: Annotated[
        Path | None, typer.Argument(help="a policy.pt (or its run folder); none: baselines only")
    ] = None,
    env: Annotated[
        str | None, typer.Option(help="environment (default: the one the policy was trained on)")
    ] = None,
    env_option: Annotated[
        list[str] | None, typer.Option(help="an environment option KEY=VALUE (repeat)")
    ] = None,
    baseline: Annotated[
        list[str] | None,
        typer.Option(help="a baseline of the environment (repeat; default: all of them)"),
    ] = None,
    episodes: Annotated[int, typer.Option(help="evaluation episodes (one per copy)")] = 10,
    seed: Annotated[int, typer.Option(help="seed of the episodes (the same for every method)")] = 0,
    device: Annotated[str, typer.Option(help="torch device")] = "cpu",
    out: Annotated[
        Path | None, typer.Option(help="write results.csv and manifest.json to this folder")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print exactly one JSON object and nothing else")
    ] = False,
) -> None:
    """Run a policy (deterministic) and the environment's baselines on the same seeded episodes;
    print every metric as mean ± std over episodes."""
    from marra._io import OutputPathError, check_output_dir
    from marra.envs import EnvError, make
    from marra.experiments.evaluate import (
        BaselineRunner,
        PolicyRunner,
        policy_runner,
        write_evaluation,
    )
    from marra.experiments.evaluate import (
        evaluate as run_evaluation,
    )
    from marra.rl import PolicyFileError, load_policy

    check_count(episodes, "--episodes", high=MAX_COPIES)
    _check_seed(seed)
    _check_device(device)
    if out is not None:
        try:
            check_output_dir(out)
        except OutputPathError as exc:
            raise _fail(f"--out: {exc}") from None
    loaded = None
    if policy is not None:
        try:
            loaded = load_policy(policy)
        except PolicyFileError as exc:
            raise _fail(str(exc)) from None
    if env is None:
        if loaded is None:
            raise _fail("--env: required when no policy file is given")
        env_name = str(loaded.env.get("name") or "hospital")
        options = dict(loaded.env.get("options") or {})
        dropped = loaded.env.get("dropped_options") or []
        if dropped:
            _note(f"the policy's options {dropped} could not be stored; their defaults are used")
    else:
        env_name = _check_env_name(env)
        options = {}
        if loaded is not None and loaded.env.get("name") == env_name:
            options = dict(loaded.env.get("options") or {})
    options.update(_env_options(env_name, env_option))
    try:
        spec = make(env_name, num_envs=1, **options).spec
    except EnvError as exc:
        raise _fail(f"--env {env_name}: {exc}") from None
    names = list(spec.baselines) if baseline is None else list(baseline)
    for name in names:
        if name not in spec.baselines:
            raise _fail(
                f"--baseline: {env_name} has no baseline {name!r}; its baselines are "
                f"{', '.join(spec.baselines) or '(none)'}"
            )
    methods: dict[str, Any] = {}
    if loaded is not None:
        if loaded.obs_dim != spec.obs_dim:
            raise _fail(
                f"policy: observes {loaded.obs_dim} features, {env_name} gives {spec.obs_dim}"
            )
        if not loaded.any_num_agents and loaded.trained_agents not in (None, spec.num_agents):
            raise _fail(
                f"policy: trained with sharing {loaded.sharing.get('name')!r} for "
                f"{loaded.trained_agents} agents; {env_name} here has {spec.num_agents} (only "
                "'full' sharing runs on another number of agents)"
            )
        methods["policy"] = PolicyRunner(loaded)
        if loaded.algorithm == "fen":  # the whole hierarchy, from the run's checkpoint
            try:
                methods["policy"] = policy_runner(policy, seed=seed)
            except ValueError as exc:
                raise _fail(str(exc)) from None
    for name in dict.fromkeys(names):
        methods[name] = BaselineRunner(name, seed=seed)
    if not methods:
        raise _fail("evaluate: nothing to run (no policy and no baseline)")
    try:
        result = run_evaluation(
            env_name, options, methods, episodes=episodes, seed=seed, device=device
        )
    except (EnvError, ValueError) as exc:
        raise _fail(str(exc)) from None
    if out is not None:
        manifest = {
            "command": "evaluate",
            "env": env_name,
            "options": {k: repr(v) for k, v in options.items()},
            "policy": None if policy is None else str(policy),
            "baselines": names,
            "episodes": episodes,
            "seed": seed,
        }
        write_evaluation(result, out, manifest)
    if as_json:
        sys.stdout.write(json.dumps(_finite(result.to_json()), allow_nan=False) + "\n")
        return
    table = Table(
        title=f"{env_name}: mean ± std over {episodes} episodes (seed {seed})",
        title_justify="left",
    )
    table.add_column("method")
    shown = [m for m in result.metrics if m != "length"]
    for metric in shown:
        table.add_column(metric, justify="right")
    for label, summary in result.summary.items():
        cells = [label]
        for metric in shown:
            stats = summary.get(metric)
            cells.append("" if stats is None else f"{stats['mean']:.4g} ± {stats['std']:.3g}")
        table.add_row(*cells)
    console.print(table)
    if out is not None:
        console.print(f"results: {out / 'results.csv'}; manifest: {out / 'manifest.json'}")


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
