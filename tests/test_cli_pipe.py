"""A command whose reader closes the pipe early (``autoprune schema | head -c 10``) ends quietly, as Unix tools do."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_a_reader_that_closes_the_pipe_early_ends_the_command_without_a_traceback():
    read, write = os.pipe()
    fcntl.fcntl(read, fcntl.F_SETPIPE_SZ, 4096)  # smaller than the schema: the command is still writing when we close
    proc = subprocess.Popen([sys.executable, "-m", "autoprune", "schema"], stdout=write, stderr=subprocess.PIPE, cwd=REPO)
    os.close(write)
    with os.fdopen(read, "rb") as reader:
        head = reader.read(10)
    _, stderr = proc.communicate(timeout=300)
    assert head == b'{\n  "$sche'
    assert stderr.decode() == ""  # no BrokenPipeError traceback, not even Python's "Exception ignored" at exit
    assert proc.returncode == 141  # 128 + SIGPIPE, what a shell reports for `yes | head`
