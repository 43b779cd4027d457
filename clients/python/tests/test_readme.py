"""The README's complete Python programs run against a real server and print what their comments say."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path
from typing import List

from conftest import PYTHON, PYTHON_ROOT, ServerProcess, python_env

README = PYTHON_ROOT / "README.md"
DEFAULT_ADDRESS = '"127.0.0.1:7600"'


def programs(text: str) -> List[str]:
    """The fenced Python blocks that are whole programs (they end in ``asyncio.run(...)``)."""
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.M | re.S)
    return [block for block in blocks if "asyncio.run(" in block]


def test_the_quick_start_runs_and_prints_what_it_promises(server: ServerProcess, tmp_path: Path) -> None:
    found = programs(README.read_text())
    assert len(found) == 1, "the README has one complete program: the quick start"
    source = found[0]
    assert DEFAULT_ADDRESS in source
    script = tmp_path / "quick_start.py"
    script.write_text(source.replace(DEFAULT_ADDRESS, repr(server.address)))
    proc = subprocess.run(
        [PYTHON, str(script)], env=python_env(), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    lines = proc.stdout.splitlines()
    # Each print's promised output is the comment beside it in the README.
    assert lines[0] == "market.btc.trades {'price': 64000}"
    assert "'confidence': 0.85" in lines[1] and "'btc': 1" in lines[1], lines[1]
    assert sorted(ast.literal_eval(lines[2])) == ["scanner", "trader"], lines[2]
