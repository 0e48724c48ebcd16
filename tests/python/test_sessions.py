"""Sessions with Viam's Python SDK (viam-sdk 0.85.1) against a real ``tether serve``.

What is under test (PROTOCOL.md §6, §8.4–8.6): a client holds a session by heartbeating
every window/5 (the SDK does this by itself, on a second connection, after its first
safety-monitored call such as ``Motor.set_power``). When the heartbeats stop, the server
stops, within the window W, every actuator whose *last* monitored caller was that session.

Every client under test is a child process (``session_client.py``) so that it can be
SIGKILLed or SIGSTOPped like a crashed or hung program. The test watches the motor through
an observer client of its own that makes only non-monitored calls (``is_moving``,
``get_position``, ``do_command``), so the observer never becomes the motor's last caller.
When a test needs a motor running with no session behind it, a second test-process client
with ``disable_sessions=True`` (the "driver") does it.

Every test gets a fresh server (fixture ``machine`` below, overriding conftest's) so motor
histories are independent. Times compared below are all ``time.time()`` on this machine:
kill/stop signal times from the test, stop times from the motor history (the server's
clock, same host).
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import pytest
from viam.components.motor import Motor
from viam.proto.robot import GetSessionsRequest
from viam.robot.client import RobotClient
from viam.rpc.dial import DialOptions

from conftest import Machine, connect, start_machine

HERE = Path(__file__).resolve().parent
CHILD_SCRIPT = HERE / "session_client.py"
from child_support import PREFIX as CHILD_PREFIX  # noqa: E402 (the children's report prefix)
CHILD_START_TIMEOUT_S = 60.0  # SDK import ~1–2 s, far more on a loaded 2-core box
CHILD_REPLY_TIMEOUT_S = 30.0

# Allowed stop latency after the client vanished, relative to the window W:
# the last heartbeat was at most ~W/5 before the kill, so the stop is due between
# W - W/5 and W after it; 50 ms slack below (heartbeat period jitter), 250 ms above.
SLACK_EARLY_S = 0.05
SLACK_LATE_S = 0.25


def parse_window(text: str) -> float:
    if text.endswith("ms"):
        return float(text[:-2]) / 1000.0
    assert text.endswith("s"), text
    return float(text[:-1])


@pytest.fixture
def machine(request, tmp_path):
    """A fresh server per test with one fake motor ``left``.

    Overrides conftest's module-scoped ``machine`` (same name, so conftest's failure hook
    still attaches the server log). Indirect param = the heartbeat window, default "500ms".
    """
    window = getattr(request, "param", None) or "500ms"
    cfg = tmp_path / "tether.json"
    cfg.write_text(json.dumps({
        "components": [{"name": "left", "api": "rdk:component:motor", "model": "fake"}],
        "network": {"sessions": {"heartbeat_window": window}},
    }))
    m = start_machine(cfg)
    m.window = parse_window(window)
    try:
        yield m
    finally:
        m.stop()


# ----- child processes -------------------------------------------------------------------


class Child:
    """``python session_client.py ADDRESS MODE [EXTRA_ARGS]`` with its reports on a queue.

    ``extra_args``: session_client.py's dial options (``--api-key-id``, ``--api-key``, ``--tls``).
    """

    def __init__(self, address: str, mode: str, label: str, extra_args: Sequence[str] = ()):
        self.label = label
        self.mode = mode
        self.reports: "queue.Queue[Dict[str, Any]]" = queue.Queue()
        self._lines: List[str] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [sys.executable, "-u", str(CHILD_SCRIPT), address, mode, *extra_args],
            cwd=str(HERE),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._threads = [
            threading.Thread(target=self._drain, args=(self.proc.stdout, True), daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stderr, False), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _drain(self, pipe, is_stdout: bool) -> None:
        for raw in iter(pipe.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with self._lock:
                self._lines.append(line if is_stdout else f"[stderr] {line}")
            if is_stdout and line.startswith(CHILD_PREFIX):
                try:
                    self.reports.put(json.loads(line[len(CHILD_PREFIX):]))
                except ValueError:
                    pass

    def output(self, last: int = 60) -> str:
        with self._lock:
            return "\n".join(self._lines[-last:])

    def expect(self, event: str, timeout: float = CHILD_REPLY_TIMEOUT_S) -> Dict[str, Any]:
        """The next report; fails unless it is ``event`` and arrives within ``timeout``."""
        try:
            r = self.reports.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"child {self.label} ({self.mode}) sent no {event!r} report within {timeout}s "
                        f"(exit code {self.proc.poll()}); its output:\n{self.output()}")
        if r.get("event") != event:
            pytest.fail(f"child {self.label}: expected {event!r}, got {r!r}; its output:\n{self.output()}")
        return r

    def send(self, command: str) -> None:
        self.proc.stdin.write((command + "\n").encode())
        self.proc.stdin.flush()

    def signal(self, sig: int) -> float:
        """Send ``sig``; returns ``time.time()`` right after."""
        os.kill(self.proc.pid, sig)
        return time.time()

    def kill(self) -> float:
        t = self.signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        return t

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)  # also ends a SIGSTOPped child
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10)
        finally:
            for p in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                try:
                    p.close()
                except Exception:
                    pass
            for t in self._threads:
                t.join(timeout=5)


@pytest.fixture
def spawn():
    """``spawn(machine, mode, label)`` starts a child client; every one is SIGKILLed at teardown."""
    children: List[Child] = []

    def _spawn(machine: Machine, mode: str, label: str = "") -> Child:
        c = Child(machine.address, mode, label or mode)
        children.append(c)
        return c

    try:
        yield _spawn
    finally:
        for c in children:
            c.cleanup()


async def ready(child: Child) -> Dict[str, Any]:
    """Wait (off the event loop) for the child's ``ready`` report."""
    return await asyncio.to_thread(child.expect, "ready", CHILD_START_TIMEOUT_S)


async def reply(child: Child, event: str) -> Dict[str, Any]:
    return await asyncio.to_thread(child.expect, event)


# ----- the observer ----------------------------------------------------------------------


@asynccontextmanager
async def observer(machine: Machine):
    """The test's own client; use only non-monitored calls on its ``left``."""
    robot = await asyncio.wait_for(connect(machine.address), 30)
    try:
        yield robot, Motor.from_robot(robot, "left")
    finally:
        await robot.close()


@asynccontextmanager
async def driver(machine: Machine):
    """A session-less client (``disable_sessions=True``) for commands with no session behind them."""
    robot = await asyncio.wait_for(
        RobotClient.at_address(
            machine.address,
            RobotClient.Options(dial_options=DialOptions(insecure=True, disable_webrtc=True), disable_sessions=True),
        ),
        30,
    )
    try:
        yield robot, Motor.from_robot(robot, "left")
    finally:
        await robot.close()


async def history(left: Motor) -> List[Dict[str, Any]]:
    result = await left.do_command({"command": "history"})
    entries = result["history"]
    assert isinstance(entries, list), result
    return entries


def stops_in(entries: List[Dict[str, Any]], after: float = 0.0) -> List[Dict[str, Any]]:
    return [e for e in entries if e.get("command") == "stop" and e["time"] >= after]


async def wait_for_stop(left: Motor, after: float, timeout: float) -> Optional[Dict[str, Any]]:
    """Poll the history until a stop at or after ``after`` shows up; None on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        found = stops_in(await history(left), after)
        if found:
            return found[0]
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(0.02)


async def session_ids(robot: RobotClient) -> List[str]:
    """RobotService.GetSessions (not wrapped by RobotClient in 0.85.1; not monitored)."""
    resp = await robot._client.GetSessions(GetSessionsRequest())
    return [s.id for s in resp.sessions]


def expiry_log(machine: Machine, session: str = "") -> str:
    return "\n".join(l for l in machine.log_lines() if "session expired" in l and session in l)


def latency_bounds(w: float):
    return w - w / 5 - SLACK_EARLY_S, w + SLACK_LATE_S


async def stopped_within_window(left: Motor, machine: Machine, w: float, since: float,
                                what: str, session: str = "") -> Dict[str, Any]:
    """The machine must stop ``left`` within the window after ``what`` happened at ``since``:
    not before W - W/5 (the client's last heartbeat may be that old), not long after W.
    Returns the stop's history entry."""
    stop = await wait_for_stop(left, after=0.0, timeout=w + 5)
    assert stop is not None, f"no stop within {w + 5}s of {what}; server log:\n{machine.log()}"
    latency = stop["time"] - since
    lo, hi = latency_bounds(w)
    print(f"W={w}s stop latency after {what}: {latency * 1000:.0f} ms")
    assert lo <= latency <= hi, (
        f"stop {latency * 1000:.0f} ms after {what}, want [{lo * 1000:.0f}, {hi * 1000:.0f}] ms; "
        f"expiry log: {expiry_log(machine, session)}")
    return stop


def run(body, timeout: float = 100.0):
    return asyncio.run(asyncio.wait_for(body(), timeout))


# ----- tests -----------------------------------------------------------------------------


def test_killed_client_motor_stops_within_window(machine, spawn):
    """(a) A session holder is SIGKILLed: its motor is stopped ~W after its last heartbeat."""
    w = machine.window

    async def body():
        async with observer(machine) as (_robot, left):
            child = spawn(machine, "set_power", "A")
            r = await ready(child)
            assert r["session"], f"child has no session after set_power: {r}"
            await asyncio.sleep(2 * w)  # steady heartbeats, on the child's second connection
            assert await left.is_moving() is True, "motor stopped while its session holder was alive"
            assert stops_in(await history(left)) == [], "stop in history while the session was alive"

            kill_time = child.kill()
            await stopped_within_window(left, machine, w, kill_time, "(a) SIGKILL", r["session"])
            assert await left.is_moving() is False
            assert r["session"] in expiry_log(machine), machine.log()

    run(body)


def test_killed_reader_stops_nothing(machine, spawn):
    """(b) A client that made only non-monitored calls is SIGKILLed: nothing is stopped."""
    w = machine.window

    async def body():
        async with observer(machine) as (_robot, left), driver(machine) as (_d, dleft):
            await dleft.set_power(0.5)  # session-less: nobody's session owns the motor
            assert await left.is_moving() is True

            child = spawn(machine, "read", "reader")
            r = await ready(child)
            assert r["session"] == "", f"non-monitored calls started a session: {r}"
            child.kill()
            await asyncio.sleep(3 * w)

            entries = await history(left)
            assert stops_in(entries) == [], f"stop after killing a non-monitoring client: {entries}"
            assert await left.is_moving() is True, "motor stopped after killing a non-monitoring client"
            await dleft.stop()
            assert await left.is_moving() is False

    run(body)


def test_last_caller_owns_the_motor(machine, spawn):
    """(c) A then B command the motor; killing A stops nothing, killing B stops it."""
    w = machine.window

    async def body():
        async with observer(machine) as (_robot, left):
            a = spawn(machine, "set_power", "A")
            ra = await ready(a)
            b = spawn(machine, "set_power", "B")
            rb = await ready(b)
            assert ra["session"] and rb["session"] and ra["session"] != rb["session"], (ra, rb)
            await asyncio.sleep(2 * w)

            a.kill()
            await asyncio.sleep(3 * w)
            entries = await history(left)
            assert stops_in(entries) == [], f"killing A (not the last caller) stopped the motor: {entries}"
            assert await left.is_moving() is True, "motor stopped after killing A while B is alive"
            a_expiry = expiry_log(machine, ra["session"])
            assert a_expiry, f"A's session never expired:\n{machine.log()}"
            assert "stopping=[]" in a_expiry, f"A's expiry stopped something: {a_expiry}"

            kill_b = b.kill()
            await stopped_within_window(left, machine, w, kill_b, "(c) SIGKILL of B", rb["session"])
            assert await left.is_moving() is False

    run(body)


def test_frozen_client_is_stopped_then_recovers_in_new_session(machine, spawn):
    """(d) SIGSTOP the session holder: the motor stops; after SIGCONT the client's next
    command either fails with INVALID_ARGUMENT "SESSION_EXPIRED" (server refusal; the SDK
    resets and the following command starts a new session) or, if the SDK's heartbeat
    thread noticed the expiry first, succeeds at once in a new session. Either way the
    motor runs again only because of the client's new commands."""
    w = machine.window

    async def body():
        async with observer(machine) as (robot, left):
            child = spawn(machine, "set_power", "frozen")
            r0 = await ready(child)
            s1 = r0["session"]
            assert s1, r0
            await asyncio.sleep(2 * w)
            assert await left.is_moving() is True

            sigstop_time = child.signal(signal.SIGSTOP)
            stop = await stopped_within_window(left, machine, w, sigstop_time, "(d) SIGSTOP", s1)

            # While the client is frozen nothing restarts the motor, and its session is gone.
            await asyncio.sleep(2 * w)
            assert await left.is_moving() is False, "motor moving again while the client is frozen"
            assert s1 not in await session_ids(robot), "expired session still listed by GetSessions"

            child.signal(signal.SIGCONT)
            child.send("set_power")
            r1 = await reply(child, "set_power")
            child.send("set_power")
            r2 = await reply(child, "set_power")

            if r1["ok"]:
                branch = "first command after SIGCONT succeeded (SDK heartbeat thread reset the session first)"
            else:
                branch = f"first command after SIGCONT failed with {r1['status']} {r1['message']!r}"
            print(f"(d) branch: {branch}; r1={r1}; r2={r2}")
            if not r1["ok"]:
                assert (r1["status"], r1["message"]) == ("INVALID_ARGUMENT", "SESSION_EXPIRED"), (
                    f"{branch}: want exactly INVALID_ARGUMENT / 'SESSION_EXPIRED'")
            assert r2["ok"], f"{branch}; second command failed too: {r2}"
            s2 = r2["session"]
            assert s2 and s2 != s1, f"{branch}; second command not in a new session: {s1=} {r2=}"
            if r1["ok"]:
                assert r1["session"] == s2, f"{branch}; two new sessions for two commands: {r1=} {r2=}"

            # Nothing resumed by itself: after the expiry stop, the only entries are the
            # child's own set_power commands, none earlier than its first new command.
            entries = await history(left)
            i = next(i for i, e in enumerate(entries) if e["command"] == "stop"
                     and e["time"] == stop["time"])
            after = entries[i + 1:]
            assert all(e["command"] == "set_power" for e in after), f"{branch}; unexpected entries: {after}"
            assert all(e["time"] >= r1["started"] for e in after), (
                f"{branch}; motor commanded before the child's first new command "
                f"(started {r1['started']}): {after}")
            assert len(after) == (2 if r1["ok"] else 1), f"{branch}; {after}"

            # Running again, in the new session, which stays alive.
            assert await left.is_moving() is True, f"{branch}; motor not running after the new commands"
            ids = await session_ids(robot)
            assert s2 in ids and s1 not in ids, f"{branch}; GetSessions={ids}, old {s1}, new {s2}"
            await asyncio.sleep(3 * w)
            assert await left.is_moving() is True, f"{branch}; new session did not hold the motor"
            assert len(stops_in(await history(left))) == 1, f"{branch}; extra stop: {await history(left)}"

    run(body)


def test_sessionless_client_killed_is_stopped_by_its_connection(machine, spawn):
    """(e) A client with disable_sessions=True commands the motor and is SIGKILLed: no session
    covers it, but its connection was the motor's commander, and the machine stops what that
    connection commanded when it ends (network.sessions.stop_on_disconnect, default true)."""
    w = machine.window

    async def body():
        async with observer(machine) as (robot, left):
            child = spawn(machine, "nosession", "nosession")
            r = await ready(child)
            assert r["session"] == "", r
            assert await session_ids(robot) == [], "a session exists although sessions are disabled"
            assert await left.is_moving() is True
            child.kill()
            deadline = time.monotonic() + 3 * w + 2.0
            while await left.is_moving():
                assert time.monotonic() < deadline, "still moving after its connection ended"
                await asyncio.sleep(0.02)
            entries = await history(left)
            assert len(stops_in(entries)) == 1, f"one stop by the safety net: {entries}"
            assert await session_ids(robot) == [], "a session appeared"

    run(body)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("machine", ["200ms"], indirect=True)
def test_soak_healthy_client_60s(machine, spawn):
    """(f) LONG SOAK (60 s, bounded): a healthy client at W=200 ms keeps its motor running.

    The child sets power and just stays alive, its SDK heartbeating every 40 ms, while the
    test checks once a second for 60 s: the motor is moving and the history has no stop.
    Then the client closes cleanly (heartbeats stop; the server is not told), so a stop
    follows within about W.
    """
    w = machine.window
    soak_s = 60.0

    async def body():
        async with observer(machine) as (robot, left):
            child = spawn(machine, "set_power", "healthy")
            r = await ready(child)
            assert r["session"], r
            start = time.monotonic()
            checks = 0
            while time.monotonic() - start < soak_s:
                await asyncio.sleep(1.0)
                moving = await left.is_moving()
                entries = await history(left)
                checks += 1
                t = time.monotonic() - start
                assert moving is True, f"motor stopped {t:.1f}s into the soak; {expiry_log(machine)}"
                assert stops_in(entries) == [], f"stop {t:.1f}s into the soak: {entries}; {expiry_log(machine)}"
            assert checks >= 50, checks
            assert await session_ids(robot) == [r["session"]]

            # RobotClient.close() stops the heartbeats (its reset joins the heartbeat thread for
            # up to 1 s) without telling the server, so the session lapses during the close.
            close_sent = time.time()
            child.send("close")
            closed = await reply(child, "closed")
            assert await asyncio.to_thread(child.proc.wait, 30) == 0, child.output()
            stop = await wait_for_stop(left, after=0.0, timeout=w + 5)
            assert stop is not None, "clean close (heartbeats stopped) did not stop the motor"
            print(f"(f) soak: {checks} checks, 0 stops; after close: stop at +{(stop['time'] - close_sent) * 1000:.0f} ms, "
                  f"close() returned at +{(closed['t'] - close_sent) * 1000:.0f} ms")
            assert stop["time"] >= close_sent, f"motor stopped before the client closed: {stop}"

    run(body, timeout=150)
