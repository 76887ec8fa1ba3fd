"""Alias of :mod:`marra.hospital.scenarios` (the module moved into the hospital domain package)."""

import sys

from marra.hospital import scenarios as _scenarios

sys.modules[__name__] = _scenarios
