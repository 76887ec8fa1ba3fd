"""The Python examples in the docs run as written (in a temporary folder)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def _blocks(name: str) -> list[str]:
    return BLOCK.findall((DOCS / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", ["envs.md", "policies.md"])
def test_python_examples_in_the_docs_run(name, tmp_path, monkeypatch):
    blocks = _blocks(name)
    assert blocks, f"{name} has no python example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, f"{name}", "exec"), namespace)  # noqa: S102
    assert os.getcwd() == str(tmp_path)
