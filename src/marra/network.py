"""Alias of :mod:`marra.hospital.network` (the module moved into the hospital domain package)."""

import sys

from marra.hospital import network as _network

sys.modules[__name__] = _network
