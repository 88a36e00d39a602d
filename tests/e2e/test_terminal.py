"""`remediate` at a real terminal (a pseudo-terminal): the run shows its plan and asks y/N there,
the answer is carried out on the world; the store reads as tables. Piped output stays plain
lines (test_cli.py), so scripts and `--json` are unchanged."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.test_cli import run_args
from tests.support.sessions import pids_alive
from tests.support.worlds import IncidentWorld

pytestmark = pytest.mark.usefixtures("prefect_server")
REMEDIATE = str(Path(sys.executable).with_name("remediate"))
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Terminal:
    """A `remediate` process on a pseudo-terminal: what it printed, what is typed at it."""

    def __init__(self, *args: str) -> None:
        self.master, slave = pty.openpty()
        env = {**os.environ, "COLUMNS": "160", "TERM": "xterm"}
        self.process = subprocess.Popen(
            [REMEDIATE, *args], stdin=slave, stdout=slave, stderr=slave, env=env
        )
        os.close(slave)
        self.seen = ""

    def read_until(self, text: str, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            assert time.monotonic() < deadline, f"no {text!r} in:\n{self.seen[-3000:]}"
            if self.process.poll() is not None and not select.select([self.master], [], [], 0)[0]:
                raise AssertionError(f"exited {self.process.returncode}:\n{self.seen[-3000:]}")
            if select.select([self.master], [], [], 0.2)[0]:
                try:
                    chunk = os.read(self.master, 65536).decode(errors="replace")
                except OSError:  # the process closed the terminal
                    continue
                self.seen += ANSI.sub("", chunk).replace("\r", "")
        return self.seen

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def wait(self, timeout: float = 90) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            assert time.monotonic() < deadline, self.seen[-3000:]
            if select.select([self.master], [], [], 0.2)[0]:
                try:
                    self.seen += ANSI.sub("", os.read(self.master, 65536).decode(errors="replace"))
                except OSError:
                    break
        code = self.process.wait(timeout=10)
        os.close(self.master)
        return code


@pytest.mark.parametrize(("answer", "code"), [("y", 0), ("n", 1)])
def test_run_at_a_terminal_shows_the_plan_and_asks_y_n(
    incident_world: IncidentWorld, answer: str, code: int
) -> None:
    w = incident_world
    term = Terminal(*run_args(w))
    shown = term.read_until("[y/N]")
    assert "terminate" in shown.lower() and "pid " in shown  # the plan, with its targets
    assert pids_alive(w.idle) == w.idle  # nothing done before the answer
    term.type(answer)
    assert term.wait() == code, term.seen[-3000:]
    expected = "resolved" if answer == "y" else "declined"
    assert f"connection-pool-exhausted: {expected}" in term.seen
    assert pids_alive(w.idle) == (set() if answer == "y" else w.idle)
    assert pids_alive(w.survivors) == w.survivors
    incident_id = re.findall(r"incident ([0-9a-f-]{36})", term.seen)[-1]
    (answered,) = [e for e in w.store.timeline(incident_id) if e.kind == "approval-answered"]
    assert answered.data["channel"] == "cli", answered

    # The same incident at the terminal: a table and a timeline, not raw lines.
    listed = Terminal("incidents")
    assert listed.wait() == 0
    assert incident_id in listed.seen and "incident(s), newest first" in listed.seen
    assert "┃" in listed.seen or "│" in listed.seen
    timeline = Terminal("incident", incident_id)
    assert timeline.wait() == 0
    assert "approval-asked" in timeline.seen and "+s" in timeline.seen
