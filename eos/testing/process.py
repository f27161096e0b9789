"""Run an application in a child process and hurt it: SIGKILL, SIGSTOP, SIGTERM.

Used by the chaos tests and the demo: the engine must keep every guarantee
when its process dies at any instruction, so the process is really killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["READY_MARKER", "AppProcess"]

READY_MARKER = "eos.app: running"
"""What ``Application.run()`` logs once its signal handlers are installed."""


class AppProcess:
    """One child process running ``python <args>``; output goes to ``log_path``."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        log_path: str | os.PathLike[str],
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        self.args = [sys.executable, *args]
        self.log_path = Path(log_path)
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> AppProcess:
        """Start (or start again) the process."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            out.write(f"\n=== start {self.starts + 1} ===\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                self.args, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd
            )
        self.starts += 1
        return self

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("not started")
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would: no cleanup runs."""
        self.signal(signal.SIGKILL)
        self.wait(30)

    def terminate(self, timeout: float = 60.0, *, when_started: bool = True) -> int:
        """SIGTERM and wait for a clean exit; returns the exit code.

        With ``when_started`` (the default) the signal is sent only once this
        start of the process logged ``READY_MARKER`` (its handler is installed
        then): a script's Python start-up and imports run before any eos code
        and die of a SIGTERM like any Python program. Pass False to hit start-up.
        """
        if when_started and self.alive():
            self.wait_for_current_log(READY_MARKER, timeout)
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float) -> int:
        if self.proc is None:
            raise RuntimeError("not started")
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            # Stuck: ask for every thread's stack in the log first (eos.app registers
            # SIGUSR1 with faulthandler), then kill it.
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGUSR1)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(2)
            self.proc.kill()
            self.proc.wait(10)
            raise

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def current_log(self) -> str:
        """The log of the current (last) start only."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        marker = f"=== start {self.starts} ==="
        index = text.rfind(marker)
        return text[index:] if index >= 0 else text

    def wait_for_current_log(self, text: str, timeout: float = 60.0) -> None:
        """Block until ``text`` appears in the current start's log (or the process exits)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.current_log() or not self.alive():
                return
            time.sleep(0.05)
        raise TimeoutError(f"{text!r} not seen in {self.log_path}:\n{self.log_tail()}")

    def wait_for_log(self, text: str, timeout: float = 60.0) -> None:
        """Block until ``text`` appears in the log (or fail with its tail)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log_path.exists() and text in self.log_path.read_text(errors="replace"):
                return
            if not self.alive():
                break
            time.sleep(0.1)
        raise TimeoutError(f"{text!r} not seen in {self.log_path}:\n{self.log_tail()}")
