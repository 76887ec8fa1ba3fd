"""The hospital domain (paper 000): networks of hospitals, scenarios, classical strategies.

- :mod:`marra.hospital.network`: :class:`HospitalNetwork` (current, minimum, target, capacity,
  names, coordinates), CSV input and output, the generator and the built-in network;
- :mod:`marra.hospital.scenarios`: static, shifting, shock, seasonal, outbreak and CSV scenarios;
- :mod:`marra.hospital.strategies`: the classical allocators (QP, Nash welfare, taxation, hybrid,
  greedy, hold), integer rounding and transfer plans.

The learning environment of this domain is :class:`marra.envs.hospital.HospitalEnv`. The old
import paths ``marra.network``, ``marra.scenarios`` and ``marra.strategies`` remain as aliases of
these modules.
"""
