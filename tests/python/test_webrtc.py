"""WebRTC with Viam's Python SDK (viam-sdk 0.85.1) against a real ``tether serve``.

The SDK's default dial path (its native rust-utils dialer) with ``insecure=True`` on a
plaintext machine at ``127.0.0.1:PORT`` uses the machine's own signaling service and then
carries every call over a WebRTC data channel. Proven by ``GetSessions``: the SDK's session
has peer connection type WEBRTC. The safety stop must work on that path: SIGKILL the client
and the motor it drove stops about one heartbeat window later.

The native dialer multicasts mDNS on every interface, so the machine and the SDK clients run
inside a fresh network namespace with only loopback; the test skips where it cannot make one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import start_machine
from test_auth import log_time, netns  # noqa: F401  (the fixture)

HERE = Path(__file__).resolve().parent
CLIENT = HERE / "webrtc_client.py"
W = 0.5


def write_config(path: Path) -> Path:
    path.write_text(json.dumps({
        "components": [{"name": "left", "api": "rdk:component:motor", "model": "fake"}],
        "network": {"sessions": {"heartbeat_window": f"{int(W * 1000)}ms"}},
    }))
    return path


@pytest.fixture
def machine(netns, tmp_path):  # noqa: F811
    m = start_machine(write_config(tmp_path / "tether.json"), extra_args=["--no-tls"],
                      wrapper=["ip", "netns", "exec", netns],
                      env={"RUST_LOG": "info,tether_machine::webrtc=debug"})
    try:
        m.netns = netns
        yield m
    finally:
        m.stop()


def address(m) -> str:
    # Not "localhost": the SDK turns WebRTC off for hosts containing it.
    return m.address.replace("localhost", "127.0.0.1")


def child(m, mode: str) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", m.netns, sys.executable, "-u", str(CLIENT), mode, address(m)],
                            cwd=str(HERE), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def report(proc: subprocess.Popen, timeout: float) -> dict:
    """The child's first report line (read as it comes; the child may keep running)."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith("@@ "):
            return json.loads(line[3:])
    raise AssertionError(f"no report from the SDK child (exit {proc.poll()}):\n{''.join(seen)}")


def test_sdk_default_dial_uses_webrtc_and_the_safety_stop_works(machine):
    m = machine
    driver = child(m, "drive")
    try:
        r = report(driver, 90)
        print(f"SDK over WebRTC: {r}")
        assert r["ok"], f"SDK failed at {r.get('step')}: {r.get('error_type')}: {r.get('error')}"
        assert r["interfaces"] == ["lo"], r
        assert r["peer_type"] == "PEER_CONNECTION_TYPE_WEBRTC", f"not over WebRTC: {r}"
        assert r["resources"] == ["rdk:component:motor/left"], r
        assert r["moving"] is True and r["session"], r
        # Held by heartbeats over the data channel for 3 W: no expiry.
        time.sleep(3 * W)
        assert "session expired" not in m.log(), m.log()
        driver.kill()
        kill_t = time.time()
        driver.wait(timeout=10)
        deadline = time.monotonic() + 10 * W
        while "session expired" not in m.log() and time.monotonic() < deadline:
            time.sleep(0.02)
        expiry = [l for l in m.log_lines() if "session expired" in l]
        assert expiry and r["session"] in expiry[0], m.log()
        after = log_time(expiry[0]) - kill_t
        print(f"stop {after * 1000:.0f} ms after SIGKILL at W = {W * 1000:.0f} ms; connect {r['connect_s']} s")
        assert after <= 1.5 * W + 0.25, f"stop came {after:.3f}s after the kill (W = {W}s)"
        assert "left" in expiry[0], expiry[0]
        # The machine tears the vanished peer down once ICE consent fails (8 s), not never.
        closed = m.wait_for_log(r"WebRTC connection closed.*reason=", timeout=20)
        gone = log_time(closed.string) - kill_t
        print(f"peer torn down {gone:.1f} s after SIGKILL: {closed.string}")
        assert gone < 15, closed.string
    finally:
        if driver.poll() is None:
            driver.kill()
        driver.wait(timeout=10)
    observer = child(m, "observe")
    try:
        o = report(observer, 60)
        assert o["ok"], o
        assert o["moving"] is False, o
        assert o["history"][-2:] == ["set_power", "stop"], o
    finally:
        if observer.poll() is None:
            observer.kill()
        observer.wait(timeout=10)
