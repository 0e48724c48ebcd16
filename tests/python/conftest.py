"""Shared fixtures for the Python-SDK interop tests.

The tests drive a real ``tether serve`` process with Viam's official Python SDK
(``viam-sdk``, pinned in ``scripts/setup-python``), exactly as a user would.

* ``machine``: a module-scoped running server (``tether serve --bind 127.0.0.1:0``).
  A test module that needs a config file sets ``TETHER_CONFIG = "path"`` at module
  level, or parametrizes the fixture indirectly:
  ``@pytest.mark.parametrize("machine", ["cfg.json"], indirect=True)``.
* ``start_machine(config=None, extra_args=(), wrapper=(), env=None)``: the same thing as a
  plain function, for tests that need a server of their own (call ``.stop()`` when done);
  ``wrapper`` prefixes the command (e.g. ``ip netns exec NS``), ``env`` adds environment.
* ``connect(address)``: a connected ``RobotClient`` (direct gRPC, plaintext, no WebRTC).

Environment:
* ``TETHER_BIN``: the server binary (default ``<repo>/target/debug/tether``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Union

import pytest

from viam.robot.client import RobotClient
from viam.rpc.dial import DialOptions

REPO = Path(__file__).resolve().parents[2]
LISTEN_RE = re.compile(r"listening on (\S+)")
ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
STARTUP_TIMEOUT_S = 30.0
STOP_GRACE_S = 10.0


def tether_bin() -> Path:
    return Path(os.environ.get("TETHER_BIN") or REPO / "target" / "debug" / "tether")


def _die_with_parent() -> None:
    """Runs in the child before exec: have the kernel SIGKILL the server if pytest dies
    (e.g. a hard timeout), so no server outlives the test run."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:
        pass


def _normalise_address(raw: str) -> str:
    """'listening on http://127.0.0.1:1234/,' -> '127.0.0.1:1234'."""
    addr = raw.strip().strip("\"'`()<>,;").rstrip(".")
    addr = re.sub(r"^[a-z][a-z0-9+.-]*://", "", addr)
    return addr.rstrip("/")


class Machine:
    """A running ``tether serve`` process.

    ``address`` is ``"127.0.0.1:PORT"``; ``proc`` the ``subprocess.Popen``.
    ``log()`` returns everything the server wrote so far (stderr, and stdout lines
    prefixed with ``[stdout]``); ``log_lines()`` the same as a list;
    ``wait_for_log(regex)`` blocks until a line matches.
    """

    def __init__(self, args: Sequence[str], env: Optional[Mapping[str, str]] = None):
        self.args = list(args)
        self.address: Optional[str] = None
        self._lines: List[str] = []
        self._cond = threading.Condition()
        self._eof = {"stderr": False, "stdout": False}
        self._listen_line: Optional[int] = None
        self.proc = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "NO_COLOR": "1", "RUST_LOG": os.environ.get("TETHER_LOG", "info"), **(env or {})},
            # Own process group, so stop() also reaches anything the server spawned.
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        # Drain both pipes for the whole life of the process so the server never blocks
        # on a full pipe, and keep the text for diagnostics.
        self._threads = [
            threading.Thread(target=self._drain, args=(self.proc.stderr, "stderr"), daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stdout, "stdout"), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _drain(self, pipe, stream: str) -> None:
        try:
            for raw in iter(pipe.readline, b""):
                line = ANSI_RE.sub("", raw.decode("utf-8", "replace")).rstrip("\r\n")
                with self._cond:
                    self._lines.append(line if stream == "stderr" else f"[stdout] {line}")
                    if stream == "stderr" and self._listen_line is None and LISTEN_RE.search(line):
                        self._listen_line = len(self._lines) - 1
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._eof[stream] = True
                self._cond.notify_all()

    # ----- log access -------------------------------------------------------------------

    def log_lines(self) -> List[str]:
        with self._cond:
            return list(self._lines)

    def log(self) -> str:
        return "\n".join(self.log_lines())

    def mark(self) -> int:
        """Position in the log; pass to ``log_since`` / ``wait_for_log(since=...)``."""
        with self._cond:
            return len(self._lines)

    def log_since(self, mark: int) -> str:
        with self._cond:
            return "\n".join(self._lines[mark:])

    def wait_for_log(self, pattern: Union[str, re.Pattern], timeout: float = 10.0, since: int = 0) -> re.Match:
        """Wait until a log line at index >= ``since`` matches ``pattern``; fail on timeout."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        checked = since
        with self._cond:
            while True:
                for line in self._lines[checked:]:
                    m = rx.search(line)
                    if m:
                        return m
                checked = max(checked, len(self._lines))
                remaining = deadline - time.monotonic()
                if remaining <= 0 or all(self._eof.values()):
                    break
                self._cond.wait(remaining)
        pytest.fail(f"server log never matched {rx.pattern!r} within {timeout}s; log:\n{self.log()}")

    # ----- lifecycle --------------------------------------------------------------------

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._listen_line is None:
                remaining = deadline - time.monotonic()
                if self._eof["stderr"] or remaining <= 0:
                    break
                self._cond.wait(min(remaining, 0.5))
            line = self._lines[self._listen_line] if self._listen_line is not None else None
        if line is None:
            exited = self._exited()
            code = self.stop()
            if exited:
                state = f"exited with code {code} before logging 'listening on ADDR'"
            else:
                state = f"did not log 'listening on ADDR' on stderr within {timeout:.0f}s (stopped it)"
            raise RuntimeError(f"{' '.join(self.args)}: {state}; output:\n{self.log()}")
        self.address = _normalise_address(LISTEN_RE.search(line).group(1))

    def _exited(self) -> bool:
        """Has the server exited? Does not reap it: while it is an unreaped zombie its pid,
        and so its process-group id, cannot be reused, which keeps killpg() safe."""
        if self.proc.returncode is not None:
            return True
        try:
            return os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def _wait_exit(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._exited():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def _signal_group(self, sig: int) -> None:
        if self.proc.returncode is not None:
            return  # reaped: its group id may belong to someone else by now
        try:
            os.killpg(self.proc.pid, sig)  # the group that start_new_session gave the server
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self) -> Optional[int]:
        """SIGTERM, wait up to 10 s, then SIGKILL (to the server's process group). Returns the exit code."""
        if not self._exited():
            self._signal_group(signal.SIGTERM)
            if not self._wait_exit(STOP_GRACE_S):
                with self._cond:
                    self._lines.append(f"[conftest] no exit {STOP_GRACE_S:.0f}s after SIGTERM; sending SIGKILL")
                self._signal_group(signal.SIGKILL)
        # Anything the server left behind in its group goes too; then reap the server.
        self._signal_group(signal.SIGKILL)
        self.proc.wait()
        for t in self._threads:
            t.join(timeout=5)
        return self.proc.returncode

    def __repr__(self) -> str:
        return f"<Machine {self.address} pid={self.proc.pid}>"


def start_machine(
    config: Optional[Union[str, Path]] = None,
    extra_args: Sequence[str] = (),
    wrapper: Sequence[str] = (),
    env: Optional[Mapping[str, str]] = None,
) -> Machine:
    """Start ``tether serve --bind 127.0.0.1:0 [--config FILE] [EXTRA_ARGS]`` and wait until it listens.

    ``wrapper``: a command prefix that execs the server in place, e.g.
    ``["ip", "netns", "exec", NS]`` (it must exec, not fork, so that ``stop()`` still
    signals the server itself). ``env``: extra environment for the server, e.g.
    ``{"RUST_LOG": "info,tether_serve::connection=debug"}``.
    """
    binary = tether_bin()
    if not binary.is_file():
        pytest.fail(f"server binary {binary} not found: build it (cargo build) or set TETHER_BIN")
    args = list(wrapper) + [str(binary), "serve", "--bind", "127.0.0.1:0"]
    if config is not None:
        args += ["--config", str(config)]
    args += list(extra_args)
    m = Machine(args, env=env)
    error = None
    try:
        m._wait_listening(STARTUP_TIMEOUT_S)
    except RuntimeError as e:
        error = str(e)
    if error is not None:
        pytest.fail(error, pytrace=False)
    return m


@pytest.fixture(scope="module")
def machine(request):
    """A server for the whole test module. Config: indirect param, else the module's
    ``TETHER_CONFIG`` attribute, else none (the embedded demo machine)."""
    config = getattr(request, "param", None)
    if config is None:
        config = getattr(request.module, "TETHER_CONFIG", None)
    if config is not None and not Path(config).is_absolute():
        config = Path(request.module.__file__).parent / config
    m = start_machine(config)
    try:
        yield m
    finally:
        m.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the tail of the server log to the report of a failing test (for every
    fixture value that is a ``Machine``, e.g. ``machine``)."""
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for name, m in getattr(item, "funcargs", {}).items():
            if isinstance(m, Machine):
                lines = m.log_lines()
                title = "tether log" if name == "machine" else f"tether log ({name})"
                rep.sections.append((f"{title} (last 200 of {len(lines)} lines)", "\n".join(lines[-200:])))


async def connect(address: str) -> RobotClient:
    """Connect the way a user of a local plaintext machine does: direct gRPC, no WebRTC."""
    return await RobotClient.at_address(
        address,
        RobotClient.Options(dial_options=DialOptions(insecure=True, disable_webrtc=True)),
    )
