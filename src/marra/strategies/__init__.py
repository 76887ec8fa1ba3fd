"""Alias of :mod:`marra.hospital.strategies` (moved into the hospital domain package).

``marra.strategies`` and its submodules are the very module objects of
``marra.hospital.strategies``, so classes and errors compare identical under both names.
"""

import importlib
import sys

from marra.hospital import strategies as _strategies

for _name in ("allocators", "integer", "transfer_plan", "transport"):
    sys.modules[f"{__name__}.{_name}"] = importlib.import_module(
        f"marra.hospital.strategies.{_name}"
    )
sys.modules[__name__] = _strategies
