"""The guides' runnable code blocks run as written (issue #31).

A fenced block is runnable when the line before its opening fence is ``<!-- runnable -->`` (an HTML comment,
invisible on GitHub). Only fast blocks are marked (validate, schema, snippets on tiny models); full searches stay
unmarked. ``python`` blocks run in a fresh interpreter, ``bash`` blocks in bash with ``autoprune`` meaning
``python -m autoprune``; both in a temporary folder that links the repository's ``experiments/`` and
``search_spaces/``, so nothing they write lands in the checkout.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUIDES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = "<!-- runnable -->"
FENCE = re.compile(r"^```(\w+)\s*$")
# What is marked today; the test fails if fewer are found, so it cannot pass by finding none.
MIN_BLOCKS = 7
TIMEOUT_S = 120


def runnable_blocks() -> list[tuple[str, str, str]]:
    """(id, language, code) of every block whose opening fence follows the marker line."""
    blocks = []
    for guide in GUIDES:
        lines = guide.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if line.strip() != MARKER:
                continue
            fence = FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
            if fence is None or fence.group(1) not in ("python", "bash"):
                raise AssertionError(f"{guide.name}:{i + 1}: {MARKER} must precede a ```python or ```bash fence")
            end = next(j for j in range(i + 2, len(lines)) if lines[j].strip() == "```")
            rel = guide.relative_to(ROOT).as_posix()
            blocks.append((f"{rel}:{i + 2}", fence.group(1), "\n".join(lines[i + 2 : end]) + "\n"))
    return blocks


BLOCKS = runnable_blocks()


def test_the_guides_mark_enough_runnable_blocks() -> None:
    assert len(BLOCKS) >= MIN_BLOCKS, [block_id for block_id, _, _ in BLOCKS]


@pytest.mark.parametrize(("language", "code"), [b[1:] for b in BLOCKS], ids=[b[0] for b in BLOCKS])
def test_a_runnable_block_runs_as_written(language: str, code: str, tmp_path: Path) -> None:
    for name in ("experiments", "search_spaces"):
        (tmp_path / name).symlink_to(ROOT / name)
    bin_dir = tmp_path / ".bin"
    bin_dir.mkdir()
    for name, body in (
        ("autoprune", f'exec "{sys.executable}" -m autoprune "$@"'),
        ("python", f'exec "{sys.executable}" "$@"'),
    ):
        shim = bin_dir / name
        shim.write_text(f"#!/bin/sh\n{body}\n")
        shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
        "OMP_NUM_THREADS": "1",
    }
    if language == "python":
        script = tmp_path / "block.py"
        script.write_text(code, encoding="utf-8")
        command = [sys.executable, str(script)]
    else:
        script = tmp_path / "block.sh"
        script.write_text("set -euo pipefail\n" + code, encoding="utf-8")
        command = ["bash", str(script)]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, (
        f"block exited {result.returncode}\n--- code\n{code}--- stdout\n{result.stdout}--- stderr\n{result.stderr}"
    )
