"""ELD (paper 003, Algorithm 1) as a constraint on the PPO family, and the learners it is
compared with (COMA, FEN, SOTO): the formulas against hand-worked cases, the dual ascent, the
unbiasedness argument's testable part, bitwise identity with the backbone, a seeded learning
test, determinism, the outcome metrics of ``marra evaluate`` and the CLI's bad inputs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from marra.cli import app
from marra.envs.base import ActionSpec, EnvSpec, MultiAgentEnv
from marra.experiments.evaluate import BaselineRunner, evaluate, outcome_metrics
from marra.rl import ELD, PPOConfig, Rollout, train
from marra.rl.coma import counterfactual_advantage
from marra.rl.eld import dual_step, episode_positions, reduce_outcomes
from marra.rl.fen import FENConfig, fair_efficient_reward, gossip_mean
from marra.rl.soto import SOTOConfig, ggf_weights, returns_so_far, welfare_advantage

torch.set_num_threads(1)


# --------------------------------------------------------------------------- a tiny game
class GrabEnv(MultiAgentEnv):
    """Each step one item goes to the lowest-index agent that grabs (action 1): grabbing always
    is every agent's best reply, and it hands agent 0 everything (an inequitable game whose
    equitable play is as efficient: someone grabs every step). Observation: the time, the
    agent's items minus the mean (both / horizon), a constant. Outcome: items per agent."""

    def __init__(self, num_agents: int = 3, horizon: int = 10, *, num_envs: int = 1,
                 device: str = "cpu", seed: int | None = None,
                 autoreset: bool = False) -> None:  # fmt: skip
        super().__init__(num_envs=num_envs, device=device, seed=seed, autoreset=autoreset)
        self.n, self.h = num_agents, horizon
        self._spec = EnvSpec(
            name="grab", num_agents=self.n, agent_ids=tuple(f"a{i}" for i in range(self.n)),
            obs_dim=3, state_dim=self.n + 1, action=ActionSpec.discrete(2), horizon=self.h,
            reward="agent", metrics=("items",),
        )  # fmt: skip
        self.items = torch.zeros(num_envs, self.n)

    @property
    def spec(self) -> EnvSpec:
        return self._spec

    def _reset_copies(self, rows: np.ndarray, seeds: list) -> None:
        self.items[torch.as_tensor(rows)] = 0.0

    def _transition(self, actions: torch.Tensor):
        grab = actions == 1
        first = grab.to(torch.uint8).argmax(1)
        got = torch.nn.functional.one_hot(first, self.n).bool() & grab.any(1, keepdim=True)
        self.items = self.items + got.float()
        return got.float(), torch.zeros(self.num_envs, dtype=torch.bool), {}

    def _observe(self) -> torch.Tensor:
        t = (self.t.float() / self.h).view(-1, 1, 1).expand(-1, self.n, 1)
        dev = (self.items - self.items.mean(1, keepdim=True)).unsqueeze(-1) / self.h
        return torch.cat([t, dev, torch.ones_like(t)], -1)

    def state(self) -> torch.Tensor:
        return torch.cat([self.items / self.h, (self.t.float() / self.h).unsqueeze(-1)], -1)

    def _episode_metrics(self, done: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"items": self.items.sum(1)}

    def _episode_outcome(self, done: torch.Tensor) -> torch.Tensor:
        return self.items.clone()


TINY = dict(num_envs=8, seed=4, actor_hidden=(8,), critic_encoder_hidden=(8,),
            critic_hidden=(8,), update_epochs=2, num_minibatches=2)  # fmt: skip


def _train(config, tmp_path: Path, name: str, **kwargs):
    return train(config, {}, env="grab", make_env=GrabEnv, out_dir=tmp_path / name,
                 progress=False, **kwargs)  # fmt: skip


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _rollout(dones: torch.Tensor, outcomes: list, ends: list, n: int) -> Rollout:
    """A rollout with only what ELD reads: dones ``(T, E)``, outcome rows and their ends."""
    steps, copies = dones.shape
    zeros = torch.zeros(steps, copies, n)
    return Rollout(
        obs=zeros.unsqueeze(-1), state=None, masks=None, actions=zeros.long(),
        log_probs=zeros, values=zeros, rewards=zeros, dones=dones.float(),
        last_value=zeros[0], metrics={}, episode_outcomes=outcomes,
        episode_ends=[(t, torch.tensor(rows)) for t, rows in ends],
    )  # fmt: skip


# --------------------------------------------------------------------------- the reducer
def test_reducer_all_agents_flagged_by_hand():
    # x = (3, 1, 1, 1): mean 1.5, band +-0.15; e = (1.35, 0.35, 0.35, 0.35), E = 2.4,
    # H = 0.5 (|1.35 - 0.6| + 3 |0.35 - 0.6|) = 0.75, H/N = 0.1875; all four flagged: s = e / 4
    eq = reduce_outcomes(torch.tensor([[3.0, 1.0, 1.0, 1.0]]), tau=0.1)
    assert eq.excess[0].tolist() == pytest.approx([1.35, 0.35, 0.35, 0.35])
    assert float(eq.total_excess[0]) == pytest.approx(2.4)
    assert float(eq.mre[0]) == pytest.approx(0.75)
    assert float(eq.mre_normalised[0]) == pytest.approx(0.1875)
    assert float(eq.inc_rate[0]) == 1.0
    assert eq.signal[0].tolist() == pytest.approx([0.3375, 0.0875, 0.0875, 0.0875])


def test_reducer_one_agent_flagged_by_hand():
    # x = (1, 1, 1, 3), tau 0.5: mean 1.5, band +-0.75; only agent 3 is outside: e_3 = 0.75,
    # E = 0.75, H = 0.5 (3 * 0.1875 + 0.5625) = 0.5625, IncRate 1/4, s = (0, 0, 0, 0.75)
    eq = reduce_outcomes(torch.tensor([[1.0, 1.0, 1.0, 3.0]]), tau=0.5)
    assert eq.excess[0].tolist() == pytest.approx([0.0, 0.0, 0.0, 0.75])
    assert float(eq.mre[0]) == pytest.approx(0.5625)
    assert float(eq.mre_normalised[0]) == pytest.approx(0.140625)
    assert float(eq.inc_rate[0]) == 0.25
    assert eq.signal[0].tolist() == pytest.approx([0.0, 0.0, 0.0, 0.75])


def test_reducer_without_excess_is_all_zero_and_negative_outcomes_are_refused():
    # every outcome inside the band (|x - 1.0125| <= 0.0375 < 0.10125): E = 0, H = 0, s = 0
    eq = reduce_outcomes(torch.tensor([[1.0, 1.0, 1.0, 1.05], [2.0, 2.0, 2.0, 2.0]]), tau=0.1)
    assert eq.total_excess.tolist() == [0.0, 0.0] and eq.mre.tolist() == [0.0, 0.0]
    assert eq.signal.abs().sum() == 0 and eq.inc_rate.tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="ELD: an episode outcome is not a finite number >= 0"):
        reduce_outcomes(torch.tensor([[1.0, -2.0, 1.0]]))


# --------------------------------------------------------------------------- dual ascent
def test_dual_step_moves_with_the_violation_and_stays_in_its_box():
    assert dual_step(1.0, 0.3, 0.1, 2.0, 12.0) == pytest.approx(1.4)  # over budget: up
    assert dual_step(1.0, 0.0, 0.1, 2.0, 12.0) == pytest.approx(0.8)  # under budget: down
    assert dual_step(0.1, 0.0, 0.5, 1.0, 12.0) == 0.0  # never below 0
    assert dual_step(11.5, 5.0, 0.0, 1.0, 12.0) == 12.0  # never above lambda_max


def test_dual_ascent_runs_once_every_k_episodes_and_carries_the_rest():
    eld = ELD(num_agents=3, horizon=2, dual_every=3, dual_lr=1.0, budget=0.0)
    # x = (3, 0, 0): H/N = 2/9 (see test_shaped_advantage_fd_and_ctde_by_hand)
    dones = torch.tensor([[0, 0], [1, 1]])
    outcome = torch.tensor([[3.0, 0.0, 0.0], [3.0, 0.0, 0.0]])
    for expected_steps in (0, 1, 2, 2):
        eld.observe(_rollout(dones, [outcome], [(1, [0, 1])], 3), None)
        row = eld.update(1)
        assert row["eld_dual_steps"] == expected_steps
    assert len(eld.pending) == 2  # 8 episodes: two steps of 3, two left over
    assert row["eld_lambda"] == pytest.approx(2 * 2 / 9)
    assert row["eld_mre_normalised"] == pytest.approx(2 / 9)
    assert row["eld_outcome_min"] == 0.0 and row["eld_outcome_max"] == 3.0
    restored = ELD(num_agents=3, horizon=2, dual_every=3)
    restored.load_state_dict(eld.state_dict())
    assert restored.state_dict()["lambda"] == eld.lam and restored.pending == eld.pending


# --------------------------------------------------------------------------- Eq. 13
def test_episode_positions_by_hand():
    dones = torch.tensor([[0, 0], [0, 0], [1, 0], [0, 0], [1, 0]])
    end, step = episode_positions(dones)
    assert end.tolist() == [[2, 5], [2, 5], [2, 5], [4, 5], [4, 5]]
    assert step.tolist() == [[0, 0], [1, 1], [2, 2], [0, 3], [1, 4]]


def _one_episode(eld: ELD) -> Rollout:
    rollout = _rollout(torch.tensor([[0], [0], [1]]), [torch.tensor([[3.0, 0.0, 0.0]])],
                       [(2, [0])], 3)  # fmt: skip
    eld.observe(rollout, None)
    return rollout


def test_shaped_advantage_fd_and_ctde_by_hand():
    # x = (3, 0, 0), tau 0.1: e = (1.9, 0.9, 0.9), E = 3.7, H = 2/3, H/N = 2/9, s = e / 3
    s = torch.tensor([1.9, 0.9, 0.9], dtype=torch.float64) / 3
    discount = torch.tensor([0.25, 0.5, 1.0], dtype=torch.float64)  # gamma^(T-1-t), gamma 0.5
    fd = ELD(num_agents=3, horizon=3, gamma=0.5, form="fd")
    rollout = _one_episode(fd)
    zeros = torch.zeros(3, 1, 3, dtype=torch.float64)
    assert fd.shape_advantage(zeros, rollout, None) is zeros  # lambda 0: untouched
    fd.lam = 2.0
    shaped = fd.shape_advantage(zeros, rollout, None)
    expected = -2.0 * discount.view(3, 1, 1) * s.view(1, 1, 3)  # Eq. 13, FD, baseline 0
    torch.testing.assert_close(shaped, expected)
    # CTDE on a team advantage: -lambda gamma^(T-1-t) H/N, one value per state
    ctde = ELD(num_agents=3, horizon=3, gamma=0.5, form="ctde")
    rollout = _one_episode(ctde)
    ctde.lam = 2.0
    team = ctde.shape_advantage(torch.zeros(3, 1, dtype=torch.float64), rollout, None)
    torch.testing.assert_close(team, -2.0 * discount.view(3, 1) * (2 / 9))
    # the centred term: alpha (s_i - mean_i s_i) on top, per agent
    ctde.alpha = 0.5
    centred = ctde.shape_advantage(torch.zeros(3, 1, dtype=torch.float64), rollout, None)
    extra = -2.0 * 0.5 * (s - s.mean())
    torch.testing.assert_close(centred, team.unsqueeze(-1) + extra.view(1, 1, 3))


def test_the_baseline_cancels_a_repeated_episode_and_ignores_the_current_actions():
    eld = ELD(num_agents=3, horizon=3, gamma=0.5, form="fd")
    eld.lam = 2.0
    rollout = _one_episode(eld)
    eld.update(1)  # the baselines take in this episode: b_s = s, b_H = H/N
    rollout = _one_episode(eld)  # the same episode again, at the same step of a full horizon
    zeros = torch.zeros(3, 1, 3, dtype=torch.float64)
    torch.testing.assert_close(eld.shape_advantage(zeros, rollout, None), zeros)
    # the baseline part depends on the agent, the step and earlier rollouts only: another
    # outcome now (other actions) changes G^id but not b^id
    first = eld.equity_terms(torch.tensor([[0], [0], [1]]))
    eld.observe(_rollout(torch.tensor([[0], [0], [1]]), [torch.tensor([[0.0, 0.0, 3.0]])],
                         [(2, [0])], 3), None)  # fmt: skip
    second = eld.equity_terms(torch.tensor([[0], [0], [1]]))
    torch.testing.assert_close(first["b_id"], second["b_id"])
    assert not torch.equal(first["g_id"], second["g_id"])


def test_steps_of_an_episode_the_rollout_cut_get_no_extra_term():
    eld = ELD(num_agents=3, horizon=4, form="fd")
    eld.lam = 1.0
    rollout = _rollout(torch.tensor([[0], [1], [0]]), [torch.tensor([[3.0, 0.0, 0.0]])],
                       [(1, [0])], 3)  # fmt: skip
    eld.observe(rollout, None)
    shaped = eld.shape_advantage(torch.zeros(3, 1, 3), rollout, None)
    assert shaped[:2].abs().sum() > 0 and shaped[2].abs().sum() == 0


def test_extra_terms_have_zero_mean_under_the_baseline():
    """The testable part of the unbiasedness argument (module docstring of marra.rl.eld)."""
    eld = ELD(num_agents=3, horizon=3, gamma=0.9, form="fd")
    rollout = _rollout(
        torch.tensor([[0, 0], [0, 0], [1, 1]]),
        [torch.tensor([[3.0, 0.0, 0.0], [1.0, 2.0, 0.0]])], [(2, [0, 1])], 3,
    )  # fmt: skip
    eld.observe(rollout, None)
    eld.update(1)
    eld.observe(rollout, None)
    terms = eld.equity_terms(rollout.dones)
    # (1) the centred identity term sums to zero over the batch at every step
    torch.testing.assert_close(
        terms["centred"].sum(dim=(1, 2)), torch.zeros(3, dtype=torch.float64)
    )
    # (2) an action-independent baseline b adds nothing to the expected score function:
    # E_{a~pi}[b grad log pi(a|o)] = 0, checked by autograd for every (t, e, i) entry of b^id
    logits = torch.randn(5, dtype=torch.float64, requires_grad=True)
    log_pi = torch.log_softmax(logits, dim=0)
    for b in terms["b_id"].flatten().tolist():
        (grad,) = torch.autograd.grad((log_pi.exp().detach() * b * log_pi).sum(), logits,
                                      retain_graph=True)  # fmt: skip
        assert grad.abs().max() < 1e-12 * max(1.0, abs(b))
    assert terms["b_id"].abs().sum() > 0  # (the baselines are not trivially zero)


# --------------------------------------------------------------------------- with training
def test_without_the_plug_in_or_with_a_slack_budget_training_is_bitwise_the_backbone(tmp_path):
    config = PPOConfig(algo="ippo", sharing="none", total_steps=8 * 10 * 3, **TINY)
    plain = _params(_train(config, tmp_path, "plain").model)
    slack = _train(config.replace(equity="eld", equity_budget=1e9, equity_alpha=0.5),
                   tmp_path, "slack")  # fmt: skip
    assert _same(plain, _params(slack.model))
    assert all(row["eld_lambda"] == 0.0 for row in slack.history)
    assert slack.history[-1]["eld_mre_normalised"] > 0  # ELD watched, and kept still
    active = _train(config.replace(equity="eld", dual_lr=5.0, dual_every=8), tmp_path, "eld")
    assert active.history[-1]["eld_lambda"] > 0 and not _same(plain, _params(active.model))


def test_eld_lowers_the_mre_of_a_game_the_backbone_monopolises(tmp_path):
    config = PPOConfig(
        algo="ippo", sharing="none", total_steps=32 * 10 * 60, num_envs=32, seed=0,
        actor_hidden=(16,), critic_encoder_hidden=(16,), critic_hidden=(16,),
        learning_rate=3e-3, critic_learning_rate=3e-3, num_minibatches=2, equity="eld",
    )  # fmt: skip
    backbone = _train(config.replace(equity_budget=1e9), tmp_path, "backbone")
    eld = _train(config.replace(dual_lr=0.5, dual_every=32), tmp_path, "eld")

    def last(result, key):
        return float(np.mean([row[key] for row in result.history[-10:]]))

    # the backbone hands agent 0 (nearly) every item: H/N near 2/9 * 10 = 0.74
    assert last(backbone, "eld_mre_normalised") > 0.6
    assert last(eld, "eld_mre_normalised") < 0.5 * last(backbone, "eld_mre_normalised")
    assert last(eld, "eld_outcome_min") > last(backbone, "eld_outcome_min") + 1.0
    assert last(eld, "items") > 8.0  # at a small cost in efficiency (the backbone: 10)


@pytest.mark.parametrize(
    "config",
    [
        PPOConfig(algo="coma", equity="eld", dual_lr=5.0, **TINY),
        SOTOConfig(period=4, equity="eld", dual_lr=5.0, **TINY),
        SOTOConfig(period=4, welfare="alpha", **TINY),
        FENConfig(period=4, max_u=0.5, sharing="none", equity="eld", dual_lr=5.0, **TINY),
        FENConfig(period=4, max_u=0.5, sharing="full", gossip_rounds=0, **TINY),
    ],
    ids=["coma-eld", "soto-ggf-eld", "soto-alpha", "fen-eld", "fen-clde"],
)
def test_coma_fen_soto_run_and_are_deterministic(tmp_path, config):
    config = config.replace(total_steps=8 * 10 * 2, checkpoint_every=1)
    first = _train(config, tmp_path, "a")
    second = _train(config, tmp_path, "b")
    assert _same(_params(first.model), _params(second.model))
    final = first.final
    assert math.isfinite(final["policy_loss"]) and math.isfinite(final["value_loss"])
    if config.equity == "eld":
        assert final["eld_lambda"] > 0
    # resume from the first iteration's checkpoint ends on the same parameters
    resumed = train(config.replace(total_steps=8 * 10), {}, env="grab", make_env=GrabEnv,
                    out_dir=tmp_path / "c", progress=False)  # fmt: skip
    resumed = train(config, {}, env="grab", make_env=GrabEnv, out_dir=resumed.out_dir,
                    progress=False, resume=True)  # fmt: skip
    assert _same(_params(first.model), _params(resumed.model))


# --------------------------------------------------------------------------- the learners
def test_soto_welfare_weights_by_hand():
    assert ggf_weights(torch.tensor([3.0, 1.0, 2.0]), 2.0).tolist() == [0.25, 1.0, 0.5]
    rewards = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]], [[0.0, 1.0]]])  # (T=3, E=1, N=2)
    dones = torch.tensor([[[0.0, 0.0]], [[1.0, 1.0]], [[0.0, 0.0]]])
    assert returns_so_far(rewards, dones)[:, 0].tolist() == [[1, 0], [2, 1], [0, 1]]
    # GGF: standardised advantages weighted 1 (worst) and 1/2; alpha: J^-alpha on raw ones
    advantages = torch.tensor([[[1.0, -1.0]], [[-1.0, 1.0]], [[0.0, 0.0]]])
    ggf = welfare_advantage(advantages, rewards, dones, welfare="ggf", period=2)
    standard = (advantages - advantages.flatten(0, 1).mean(0)) / advantages.flatten(0, 1).std(0)
    # periods: steps 0-1 (returns at step 1: (2, 1)), step 2 (its own end: (0, 1))
    assert ggf[0, 0] == pytest.approx(0.5 * standard[0, 0, 0] + standard[0, 0, 1])
    assert ggf[2, 0] == pytest.approx(standard[2, 0, 0] + 0.5 * standard[2, 0, 1])
    alpha = welfare_advantage(advantages, rewards, dones, welfare="alpha", period=2)
    assert alpha[0, 0] == pytest.approx(2.0**-0.9 * 1.0 + 1.0**-0.9 * -1.0)


def test_fen_fair_efficient_reward_and_gossip_by_hand():
    u_bar = torch.tensor([[0.2, 0.1]], dtype=torch.float64)
    avg = torch.tensor([[0.15, 0.15]], dtype=torch.float64)
    rat, utili, r_hat = fair_efficient_reward(u_bar, avg, max_u=0.15)
    assert rat.tolist()[0] == pytest.approx([1 / 3, -1 / 3])
    assert utili.tolist()[0] == pytest.approx([1.0, 1.0])
    assert r_hat.tolist()[0] == pytest.approx([1 / (0.1 + 1 / 3)] * 2)  # utili / (0.1 + |rat|)
    zero = fair_efficient_reward(u_bar, torch.zeros_like(u_bar), max_u=None)
    assert zero[0].tolist() == [[0.0, 0.0]]  # rat is 0 where avg is 0
    exact = gossip_mean(torch.tensor([[0.0, 1.0, 2.0, 5.0]]), 0, 3, None)
    assert exact.tolist() == [[2.0, 2.0, 2.0, 2.0]]
    values = torch.rand(64, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    gossip = gossip_mean(values, 10, 3, torch.Generator().manual_seed(1))
    spread = (gossip - values.mean(-1, keepdim=True)).abs().max()
    assert spread < 0.5 * (values - values.mean(-1, keepdim=True)).abs().max()


def test_coma_counterfactual_baseline_marginalises_the_own_action_only():
    q_all = torch.tensor([[[1.0, 3.0], [2.0, 0.0]]])  # (1, N=2, A=2)
    probs = torch.tensor([[[0.25, 0.75], [0.5, 0.5]]])
    targets = torch.tensor([[3.0, 0.0]])
    advantage = counterfactual_advantage(targets, q_all, probs)
    assert advantage.tolist() == [[3.0 - 2.5, 0.0 - 1.0]]


def test_soto_and_coma_refuse_what_they_cannot_learn(tmp_path):
    from marra.rl import CompatibilityError

    with pytest.raises(CompatibilityError, match="soto' needs per-agent rewards"):
        train(SOTOConfig(total_steps=100, **TINY), {"n_hospitals": 5, "horizon": 5},
              env="hospital", out_dir=tmp_path / "s", progress=False)  # fmt: skip
    with pytest.raises(CompatibilityError, match="coma' supports discrete actions only"):
        train(PPOConfig(algo="coma", total_steps=100, **TINY), {"n_hospitals": 5, "horizon": 5},
              env="hospital", out_dir=tmp_path / "c", progress=False)  # fmt: skip


# --------------------------------------------------------------------------- evaluation
def test_outcome_metrics_by_hand_and_nan_for_negative_outcomes():
    values = outcome_metrics(torch.tensor([[3.0, 1.0, 1.0, 1.0], [1.0, -1.0, 1.0, 1.0]]))
    assert values["mre_normalised"][0] == pytest.approx(0.1875)
    assert values["inc_rate"][0] == 1.0
    assert values["cv"][0] == pytest.approx(math.sqrt(0.75) / 1.5)
    assert values["outcome_min"].tolist() == [1.0, -1.0]
    assert values["outcome_max"].tolist() == [3.0, 1.0]
    assert all(math.isnan(float(values[k][1])) for k in ("mre_normalised", "inc_rate", "cv"))


def test_evaluate_reports_outcome_equity_and_keeps_an_environments_own_metric():
    job = evaluate("job-scheduling", {"horizon": 20}, {"greedy": BaselineRunner("greedy")},
                   episodes=3, seed=0)  # fmt: skip
    greedy = job.summary["greedy"]
    # greedy: one agent keeps the server, so everyone is outside the band and CV = sqrt(3)
    assert greedy["inc_rate"]["mean"] == 1.0
    assert greedy["cv"]["mean"] == pytest.approx(math.sqrt(3.0))
    assert greedy["outcome_min"]["mean"] == 0.0 and greedy["mre_normalised"]["mean"] > 0.05
    hospital = evaluate("hospital", {"n_hospitals": 6, "horizon": 3},
                        {"hold": BaselineRunner("hold")}, episodes=2, seed=0)  # fmt: skip
    hold = hospital.summary["hold"]
    assert {"mre_normalised", "outcome_mre_normalised", "inc_rate", "cv"} <= set(hold)
    assert "outcome_mre_normalised" in hospital.metrics


# --------------------------------------------------------------------------- the CLI
runner = CliRunner()
JOB = ["train", "--env", "job-scheduling", "--env-option", "horizon=10", "--steps", "20",
       "--num-envs", "2"]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--equity", "bogus"], "--equity: one of none, eld"),
        (["--equity-tau", "0.2"], "--equity-tau: is an ELD setting; add --equity eld"),
        (["--equity", "eld", "--equity-budget", "-1"], "--equity-budget: must be a finite"),
        (["--equity", "eld", "--equity-alpha", "2"], "--equity-alpha: must lie in [0, 1]"),
        (["--equity", "eld", "--dual-every", "0"], "--dual-every: must be a positive integer"),
        (["--algo", "soto", "--algo-option", "welfare=max"], "--algo-option welfare: 'ggf'"),
        (["--algo", "soto", "--algo-option", "period=often"], "--algo-option period: expected"),
        (["--algo", "fen", "--algo-option", "colour=red"], "--algo-option colour: not a setting"),
        (["--algo", "fen", "--algo-option", "seed=2"], "--algo-option seed: set it with --seed"),
    ],
)
def test_bad_equity_and_learner_options_exit_2_with_one_line(tmp_path, args, words):
    result = runner.invoke(app, [*JOB, "--out", str(tmp_path / "run"), *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and words in lines[0]
    assert not (tmp_path / "run").exists()


def test_train_with_eld_logs_the_dual_variable_and_evaluate_reports_equity(tmp_path):
    out = tmp_path / "run"
    args = ["--steps", "40", "--algo", "coma", "--equity", "eld", "--dual-lr", "3",
            "--dual-every", "2", "--out", str(out)]  # fmt: skip
    result = runner.invoke(app, [*JOB, *args])
    assert result.exit_code == 0, result.output
    header = (out / "train_log.csv").read_text().splitlines()[0].split(",")
    for column in ("eld_lambda", "eld_mre_normalised", "eld_inc_rate", "eld_excess",
                   "eld_outcome_min", "eld_outcome_max"):  # fmt: skip
        assert column in header
    shown = runner.invoke(app, ["evaluate", str(out), "--episodes", "2", "--json"])
    assert shown.exit_code == 0, shown.output
    assert "mre_normalised" in shown.stdout and "inc_rate" in shown.stdout


def test_the_overhead_benchmark_runs(tmp_path):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "eld.py"
    spec = importlib.util.spec_from_file_location("bench_eld", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = module.main(["--quick", "--out", str(tmp_path / "eld.json")])
    assert (tmp_path / "eld.json").exists() and len(report["rows"]) == 1
    assert all(row["hooks_ms"] > 0 and row["backbone_s"] > 0 for row in report["rows"])


def test_a_fen_run_is_evaluated_as_the_whole_hierarchy(tmp_path):
    from marra.experiments.evaluate import policy_runner
    from marra.rl import load_policy
    from marra.rl.fen import FENRunner

    config = FENConfig(period=4, max_u=0.25, total_steps=8 * 8 * 2, **TINY)
    options = {"horizon": 8}
    train(config, options, env="job-scheduling", out_dir=tmp_path / "fen", progress=False)
    runner = policy_runner(tmp_path / "fen", seed=3)
    assert isinstance(runner, FENRunner)
    result = evaluate("job-scheduling", options, {"fen": runner}, episodes=3, seed=0)
    assert 0.0 <= result.summary["fen"]["utilization"]["mean"] <= 1.0
    # the plain policy file: the sub-policies, every agent on sub-policy 0
    assert load_policy(tmp_path / "fen").algorithm == "fen"
    (tmp_path / "fen" / "checkpoint.pt").unlink()
    with pytest.raises(ValueError, match="played from its run's checkpoint.pt"):
        policy_runner(tmp_path / "fen")
