"""Run a command with stdout and/or stderr on a pseudo-terminal (100x24), the other streams piped: what a
user at a terminal sees, for the progress tests (tests/test_cli_progress.py, integration/test_progress_tty.py)."""
from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios
import threading
from pathlib import Path


def run_in_pty(argv: list[str], env: dict[str, str], cwd: Path, *, stderr_tty: bool, stdout_tty: bool = False,
               timeout: float = 120) -> tuple[int, str, str]:
    """(exit code, stdout, stderr); a stream that is a tty is read from the pty's master."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=slave if stdout_tty else subprocess.PIPE,
                            stderr=slave if stderr_tty else subprocess.PIPE)
    os.close(slave)
    seen: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every end of the pty is closed
                return
            if not data:
                return
            seen.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    out, err = proc.communicate(timeout=timeout)
    reader.join(30)
    os.close(master)
    tty = b"".join(seen).decode("utf-8", "replace")
    return (proc.returncode, tty if stdout_tty else out.decode(), tty if stderr_tty else err.decode())
