"""``python -m marra.cli``."""

from marra.cli import main

main()
