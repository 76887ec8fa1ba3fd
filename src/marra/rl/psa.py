"""``psa``: every agent its own actor and critic, plus one critic shared by all agents.

Paper 002 (section 4.2) compares against PSA (its ref. [45], Yang et al. 2022): "It maintains
each agent an actor and a critic to model the spatio-temporal differences of each agent and
assigns a shared critic to model the spatio-temporal commonality of agents. These two critics
will work together to train the actor of each agent." The paper says no more; marra combines
them as follows (``docs/sharing.md``):

- actors: one per agent (NoPS), ``pi_i(a_i | o_i)``;
- critics: agent ``i``'s own ``V_i`` and the shared ``V_s`` see the same input (``o_i`` for
  IPPO, ``(s, o_i)`` for MAPPO) and are evaluated together in one batched call
  (:class:`~marra.rl.networks.Critic` with ``shared_head``);
- the actor of agent ``i`` is trained on the GAE advantage of the mean value
  ``V = (V_i + V_s) / 2``. GAE is linear in the value, so this advantage is exactly the mean of
  the advantages the two critics give on their own: ``A = (A(V_i) + A(V_s)) / 2``;
- each critic regresses on the same lambda-return targets (the returns of ``V``); the value
  loss is the mean of their two squared-error losses.

The public DyPS code has the same combination (``0.5 * critic_l[g] + 0.5 * critic``, commented
out in ``algo/lstm_hrl.py``). PPO's update is unchanged: it sees advantages.
"""

from __future__ import annotations

from typing import Any

from .sharing import NoSharing, register_sharing

__all__ = ["PSASharing"]


@register_sharing
class PSASharing(NoSharing):
    """PSA: NoPS actors and critics plus a shared critic (see the module docstring)."""

    name = "psa"
    shared_critic = True

    def __init__(self, num_agents: int, **options: Any) -> None:
        super().__init__(num_agents)
