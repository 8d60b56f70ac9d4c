"""Progress of long operations: a status line on stderr when stderr is a terminal (a pty here),
nothing at all otherwise; stdout is the same either way. No root: the kernel reads are replaced in a
small driver (the conntrack dump by 10,000 recorded-looking rows, the backend by tests/test_service.py's
fake), and CTKIT_PROGRESS_DELAY=0 makes the line appear at once instead of after half a second."""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
from ptyrun import run_in_pty

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

DRIVER = """
import sys, time
sys.path.insert(0, {tests!r})
from ctkit import lock
from ctkit.backends import registry
from ctkit.kernel import conntrack, settings
from test_service import FakeBackend

registry._FACTORIES["fake"] = lambda variant: FakeBackend()
settings.apply_settings = lambda s, netns, dry_run=False: []
lock.netns_id = lambda netns: "test-" + str(netns)

def rows(netns, flt, names):
    for i in range(10000):
        yield '{{"id": %d}}' % i
conntrack.json_rows = rows

if sys.argv[1] == "sleep":
    from ctkit.terminal import activity
    with activity("working on it"):
        time.sleep(0.2)
    print("done")
else:
    from ctkit.cli import app
    app(sys.argv[1:])
"""


@pytest.fixture
def driver(tmp_path):
    path = tmp_path / "driver.py"
    path.write_text(DRIVER.format(tests=str(TESTS)))
    return path


def run(driver: Path, tmp_path: Path, *args: str, stderr_tty: bool, stdout_tty: bool = False,
        delay: str = "0") -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the driver; a stream that is a tty is read from the pty's master."""
    env = dict(os.environ, CTKIT_PROGRESS_DELAY=delay, TERM="xterm-256color", CTKIT_STATE_DIR=str(tmp_path / "s"),
               COLUMNS="100", LINES="24")
    return run_in_pty([sys.executable, str(driver), *args], env, ROOT, stderr_tty=stderr_tty, stdout_tty=stdout_tty)


def test_a_status_line_on_a_terminal_and_nothing_in_a_pipe(driver, tmp_path):
    code, out, err = run(driver, tmp_path, "sleep", stderr_tty=True)
    assert code == 0 and out == "done\n"
    assert "working on it" in ANSI.sub("", err)
    code, out, err = run(driver, tmp_path, "sleep", stderr_tty=False)
    assert (code, out, err) == (0, "done\n", "")


def test_a_quick_operation_prints_nothing_even_on_a_terminal(driver, tmp_path):
    code, out, err = run(driver, tmp_path, "sleep", stderr_tty=True, delay="60")
    assert code == 0 and out == "done\n" and "working on it" not in err


def test_a_dump_counts_its_entries_on_stderr_while_stdout_gets_exactly_the_entries(driver, tmp_path):
    code, out, err = run(driver, tmp_path, "ct", "list", "--format", "jsonl", stderr_tty=True)
    assert code == 0
    assert out.splitlines() == [json.dumps({"id": i}) for i in range(10000)]
    shown = ANSI.sub("", err)  # the line is redrawn 8 times a second: the first and the last state are sure
    assert "reading conntrack entries (0 s)" in shown and "conntrack entries: 10000" in shown
    code, plain, err = run(driver, tmp_path, "ct", "list", "--format", "jsonl", stderr_tty=False)
    assert (code, plain, err) == (0, out, "")
    code, array, err = run(driver, tmp_path, "ct", "list", "--json", stderr_tty=True)
    assert code == 0 and len(json.loads(array)) == 10000 and "conntrack entries: 10000" in ANSI.sub("", err)


def test_a_dump_onto_the_terminal_itself_shows_no_status_line(driver, tmp_path):
    """The entries scrolling by are the progress; a status line would be drawn between them."""
    code, both, _ = run(driver, tmp_path, "ct", "list", "--format", "jsonl", stderr_tty=True, stdout_tty=True)
    assert code == 0 and "conntrack entries:" not in both and both.count('{"id": ') == 10000


def test_apply_shows_what_it_is_doing_on_a_terminal(driver, tmp_path):
    policy = tmp_path / "p.json"
    policy.write_text(json.dumps({"version": 1, "chains": {"input": {"rules": [{"action": "accept"}]}}}))
    code, out, err = run(driver, tmp_path, "apply", str(policy), "-b", "fake", "-n", "lab", stderr_tty=True)
    assert code == 0, err
    assert out.startswith("applied: fake table ctkit in netns lab\n")
    assert f"applying {policy} in netns lab" in ANSI.sub("", err)
    assert "warning: a foreign thing was left alone" in err  # printed through the status line, kept
    code, again, err = run(driver, tmp_path, "apply", str(policy), "-b", "fake", "-n", "lab", stderr_tty=False)
    assert code == 0 and again == out
    assert err == "warning: a foreign thing was left alone\\x1b[31m\n"  # the fake's warning, and nothing else
