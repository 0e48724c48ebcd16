"""Authentication and TLS with Viam's Python SDK (viam-sdk 0.85.1) against a real ``tether serve``.

Server side (PROTOCOL.md §5): ``auth.handlers: [{"type": "api-key", "config": {ID: KEY}}]``
turns authentication on; every call but ``proto.rpc.v1.AuthService/Authenticate`` then needs
``authorization: Bearer <token>``. ``network.tls_cert_file``/``tls_key_file`` serve TLS
(``tether cert`` writes a self-signed pair), ``--no-tls`` serves h2c regardless.

SDK side (PROTOCOL.md §8.2–8.3): the working option combinations are
* TLS server: ``RobotClient.Options.with_api_key(...)`` + ``dial_options.disable_webrtc = True``
  on ``localhost:PORT`` (the SDK skips certificate verification for localhost/127.*);
* plaintext server: the default (native rust-utils) dial path with ``insecure = True``
  (direct + insecure + credentials raises ``ValueError`` in 0.85.1, an SDK bug).

The native dialer multicasts mDNS on every interface, so test (b) runs the server AND the
client inside a fresh network namespace that has only loopback (``ip netns``), and skips when
that is not possible. Every other test dials directly on 127.0.0.1 only.

Every test gets its own server; every child process is killed in a ``finally``.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List

import pytest
from grpclib import Status
from grpclib.exceptions import GRPCError
from viam.components.motor import Motor
from viam.proto.robot import GetSessionsRequest, ResourceNamesRequest
from viam.proto.robot import RobotServiceStub
from viam.robot.client import RobotClient
from viam.rpc.dial import DialOptions, dial

from conftest import Machine, start_machine, tether_bin
from test_sessions import CHILD_START_TIMEOUT_S, Child, history, stopped_within_window, stops_in

HERE = Path(__file__).resolve().parent
NATIVE_CLIENT = HERE / "native_client.py"

KEY_ID = str(uuid.uuid4())  # with_api_key insists on a UUID key id
KEY = secrets.token_urlsafe(24)
WINDOW = "500ms"
W = 0.5
CONNECT_TIMEOUT_S = 30.0

TLS_LINE = "(gRPC over TLS"
H2C_LINE = "(gRPC over h2c, plaintext)"


# ----- helpers ---------------------------------------------------------------------------


def run(body, timeout: float = 100.0):
    return asyncio.run(asyncio.wait_for(body(), timeout))


def localhost_address(m: Machine) -> str:
    """The server listens on 127.0.0.1:PORT; dial it as ``localhost:PORT`` (a name in the cert)."""
    host, port = m.address.rsplit(":", 1)
    assert host == "127.0.0.1", m.address
    return f"localhost:{port}"


def log_time(line: str) -> float:
    """``time.time()`` of a server log line (tracing's RFC 3339 UTC timestamp)."""
    stamp = line.split()[0].rstrip("Z")
    whole, _, frac = stamp.partition(".")
    dt = datetime.datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    return dt.timestamp() + (float("0." + frac) if frac else 0.0)


def listen_line(m: Machine) -> str:
    return next(l for l in m.log_lines() if "listening on " in l)


def api_key_options(key: str = KEY, key_id: str = KEY_ID, **kwargs) -> RobotClient.Options:
    """The documented way to use an API key, over direct gRPC (TLS: ``insecure`` stays False)."""
    opts = RobotClient.Options.with_api_key(api_key=key, api_key_id=key_id, **kwargs)
    opts.dial_options.disable_webrtc = True
    return opts


async def connect_tls(address: str, **kwargs) -> RobotClient:
    return await asyncio.wait_for(RobotClient.at_address(address, api_key_options(**kwargs)), CONNECT_TIMEOUT_S)


def names(robot: RobotClient) -> List[str]:
    return sorted(f"{r.namespace}:{r.type}:{r.subtype}/{r.name}" for r in robot.resource_names)


def tls_version(robot: RobotClient) -> str:
    """TLS version of the RobotClient's main connection ("" when plaintext); grpclib internals."""
    ssl_object = robot._channel._protocol.connection._transport.get_extra_info("ssl_object")
    return ssl_object.version() if ssl_object is not None else ""


def write_config(path: Path, certs=None) -> Path:
    network: Dict[str, Any] = {"sessions": {"heartbeat_window": WINDOW}}
    if certs is not None:
        network["tls_cert_file"], network["tls_key_file"] = str(certs[0]), str(certs[1])
    path.write_text(json.dumps({
        "components": [{"name": "left", "api": "rdk:component:motor", "model": "fake"}],
        "auth": {"handlers": [{"type": "api-key", "config": {KEY_ID: KEY}}]},
        "network": network,
    }))
    return path


# ----- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A self-signed certificate from ``tether cert`` (valid for the name, localhost, 127.0.0.1)."""
    d = tmp_path_factory.mktemp("certs")
    cert, key = d / "cert.pem", d / "key.pem"
    p = subprocess.run([str(tether_bin()), "cert", "--name", "tether-test", "--cert", str(cert), "--key", str(key)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"tether cert failed ({p.returncode}): {p.stdout}{p.stderr}"
    assert "BEGIN CERTIFICATE" in cert.read_text() and "PRIVATE KEY" in key.read_text()
    assert (key.stat().st_mode & 0o077) == 0, f"key file readable by others: {oct(key.stat().st_mode)}"
    return cert, key


@pytest.fixture
def machine(tmp_path, certs):
    """A fresh TLS + API-key server per test, one fake motor ``left``, W = 500 ms."""
    m = start_machine(write_config(tmp_path / "tether.json", certs))
    try:
        assert TLS_LINE in listen_line(m), m.log()
        m.wait_for_log(r"authentication required: 1 API key\(s\)")
        yield m
    finally:
        m.stop()


@pytest.fixture
def netns():
    """A fresh network namespace with only loopback (up); deleted at teardown. Skips when
    ``ip netns`` cannot be used (not root, no ``ip``, no permission)."""
    ip = shutil.which("ip")
    if ip is None:
        pytest.skip("the `ip` command (iproute2) is missing: cannot make a network namespace, "
                    "and the SDK's native dial path must not run outside one (it multicasts mDNS)")
    if os.geteuid() != 0:
        pytest.skip("not root: cannot make a network namespace with `ip netns add`, and the SDK's "
                    "native dial path must not run outside one (it multicasts mDNS)")
    name = f"tether-{secrets.token_hex(4)}"
    p = subprocess.run([ip, "netns", "add", name], capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        pytest.skip(f"`ip netns add {name}` failed ({p.returncode}: {p.stderr.strip()}): cannot isolate "
                    "the SDK's native dial path (it multicasts mDNS), so it is not run")
    try:
        up = subprocess.run([ip, "netns", "exec", name, ip, "link", "set", "lo", "up"],
                            capture_output=True, text=True, timeout=30)
        assert up.returncode == 0, f"cannot bring lo up in {name}: {up.stderr}"
        links = subprocess.run([ip, "netns", "exec", name, ip, "-o", "link"],
                               capture_output=True, text=True, timeout=30)
        ifaces = [l.split(":")[1].strip() for l in links.stdout.splitlines() if l.strip()]
        assert ifaces == ["lo"], f"namespace {name} has interfaces {ifaces}, want only lo"
        yield name
    finally:
        subprocess.run([ip, "netns", "del", name], capture_output=True, timeout=30)


@pytest.fixture
def netns_machine(netns, tmp_path, certs):
    """A plaintext (``--no-tls`` although certificates are configured) + API-key server,
    running inside ``netns``; connection-level debug logging on."""
    m = start_machine(
        write_config(tmp_path / "tether.json", certs),
        extra_args=["--no-tls"],
        wrapper=["ip", "netns", "exec", netns],
        env={"RUST_LOG": "info,tether_serve::connection=debug"},
    )
    try:
        assert H2C_LINE in listen_line(m), m.log()
        m.netns = netns
        yield m
    finally:
        m.stop()


# ----- (a) TLS + API key, direct dial ----------------------------------------------------


def test_tls_api_key_direct_dial(machine):
    """(a) Self-signed TLS, ``with_api_key`` + ``disable_webrtc=True``, address localhost:PORT:
    connect, list resources, drive the motor."""
    address = localhost_address(machine)

    async def body():
        robot = await connect_tls(address)
        try:
            version = tls_version(robot)
            print(f"(a) connected to {address} over {version}")
            assert version.startswith("TLSv1."), f"main connection is not TLS: {version!r}"
            assert names(robot) == ["rdk:component:motor/left"]
            left = Motor.from_robot(robot, "left")
            await left.set_power(0.5)
            assert await left.is_moving() is True
            await left.stop()
            assert await left.is_moving() is False
            entries = await history(left)
            assert [e["command"] for e in entries] == ["set_power", "stop"], entries
        finally:
            await robot.close()
        assert not any("failed authentication" in l for l in machine.log_lines()), machine.log()

    run(body)


def test_tls_without_credentials_is_refused(machine):
    """Companion of (a): the same TLS dial without credentials gets its first real call
    refused with UNAUTHENTICATED (only Authenticate is open)."""
    address = localhost_address(machine)

    async def body():
        channel = await asyncio.wait_for(dial(address, DialOptions(disable_webrtc=True)), CONNECT_TIMEOUT_S)
        try:
            with pytest.raises(GRPCError) as ei:
                await asyncio.wait_for(RobotServiceStub(channel.channel).ResourceNames(ResourceNamesRequest()), 30)
            print(f"(a') no credentials: {type(ei.value).__name__} {ei.value.status.name} {ei.value.message!r}")
            assert ei.value.status == Status.UNAUTHENTICATED, ei.value
            assert "authentication required" in (ei.value.message or ""), ei.value
        finally:
            channel.close()

    run(body)


# ----- (b) plaintext + API key, SDK default (native) dial path, in a network namespace ----


def test_native_dial_insecure_with_api_key_in_netns(netns_machine):
    """(b) h2c server with auth, SDK default dial path (rust-utils; ``disable_webrtc=False``),
    ``insecure=True`` + API key, address localhost:PORT. Server and client both run in a
    fresh network namespace with only loopback, because the native dialer multicasts mDNS."""
    m = netns_machine
    address = localhost_address(m)
    own_ns = os.readlink("/proc/self/ns/net")
    server_ns = os.readlink(f"/proc/{m.proc.pid}/ns/net")
    assert server_ns != own_ns, f"server is not in its own network namespace ({server_ns})"

    hold = 3 * W
    cmd = ["ip", "netns", "exec", m.netns, sys.executable, "-u", str(NATIVE_CLIENT), address,
           "--api-key-id", KEY_ID, "--api-key", KEY, "--hold", str(hold)]
    proc = subprocess.Popen(cmd, cwd=str(HERE), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
    lines = [l for l in out.splitlines() if l.startswith("@@ ")]
    assert len(lines) == 1, f"native client (exit {proc.returncode}) printed no result; output:\n{out}"
    r = json.loads(lines[0][3:])
    print(f"(b) native client result: {r}")
    assert r["interfaces"] == ["lo"] and r["netns"] == server_ns, f"client not in the server's namespace: {r}"
    assert r["netns"] != own_ns, r
    assert r["ok"], f"native dial failed at step {r.get('step')!r}: {r.get('error_type')}: {r.get('error')}\n{out}"
    assert proc.returncode == 0, out
    assert r["channel_path"], f"not the native path (no proxy socket): {r}"
    assert r["resources"] == ["rdk:component:motor/left"], r
    assert r["moving_after_set_power"] is True, r
    assert r["session"], f"set_power started no session: {r}"
    # The session was held through 3 W by heartbeats going through the rust-utils proxy.
    assert r["moving_after_hold"] is True and r["session_after_hold"] == r["session"], r
    assert r["moving_after_stop"] is False, r

    log = m.log_lines()
    conns = [l for l in log if "tether_serve::connection" in l and "connection" in l]
    # Expected: the native dialer first tries TLS (the h2c server sees a non-HTTP/2 preface and
    # drops it), then falls back to h2c.
    print("(b) server connections:\n  " + "\n  ".join(conns))
    assert any("protocol=Http2" in l for l in conns), f"no HTTP/2 (h2c) connection logged:\n{m.log()}"
    assert not any("failed authentication" in l for l in log), m.log()
    # The session lapses only once the client stopped heartbeating (after its stop/close).
    for l in log:
        if "session expired" in l:
            assert log_time(l) >= r["stop_t"], f"session lapsed while the client held it:\n{m.log()}"


# ----- (c) wrong key ---------------------------------------------------------------------


@pytest.mark.parametrize("which", ["wrong key", "unknown key id"])
def test_wrong_key_fails_clearly(machine, which):
    """(c) A wrong key (or an unknown key id) fails the connection with the SDK's
    GRPCError UNAUTHENTICATED "invalid credentials", quickly, and the server logs it."""
    address = localhost_address(machine)
    kwargs = {"key": KEY + "x"} if which == "wrong key" else {"key_id": str(uuid.uuid4())}

    async def body():
        started = time.monotonic()
        with pytest.raises(Exception) as ei:
            robot = await connect_tls(address, **kwargs)
            await robot.close()
        took = time.monotonic() - started
        e = ei.value
        print(f"(c) {which}: {type(e).__module__}.{type(e).__qualname__}: {e!r} after {took:.2f}s")
        assert type(e) is GRPCError, f"unexpected exception type {type(e)}: {e!r}"
        assert e.status == Status.UNAUTHENTICATED, e
        assert e.message == "invalid credentials", e
        assert "invalid credentials" in str(e)
        assert took < 15, f"wrong key took {took:.1f}s to fail"

    run(body)
    failed = [l for l in machine.log_lines() if "failed authentication" in l]
    assert failed, machine.log()
    # The SDK retries the dial (initial_connection_attempts = 3 by default).
    assert len(failed) <= 3, failed
    assert KEY not in machine.log(), "the server logged the key"


# ----- (d) sessions + safety stop, authenticated -----------------------------------------


def test_authenticated_session_heartbeats_and_safety_stop(machine):
    """(d) TLS + API key, W = 500 ms. A child client sets power (the SDK starts a session and
    heartbeats it from a second, separately authenticated connection); for 3 W nothing stops
    the motor; after SIGKILL of the child a stop comes within W + 0.25 s. The observer is
    authenticated too and makes only non-monitored calls."""
    address = localhost_address(machine)
    w = W

    async def body():
        observer = await connect_tls(address)
        child = None
        try:
            left = Motor.from_robot(observer, "left")
            child = Child(address, "set_power", "auth",
                          extra_args=["--api-key-id", KEY_ID, "--api-key", KEY, "--tls"])
            r = await asyncio.to_thread(child.expect, "ready", CHILD_START_TIMEOUT_S)
            sid = r["session"]
            assert sid, f"child has no session after set_power: {r}"

            # 3 W with no stop: check every 100 ms (bounded loop).
            deadline = time.monotonic() + 3 * w
            checks = 0
            while time.monotonic() < deadline:
                assert await left.is_moving() is True, f"motor stopped while its session holder was alive"
                assert stops_in(await history(left)) == [], f"stop while the session was alive: {await history(left)}"
                checks += 1
                await asyncio.sleep(0.1)
            assert checks >= 5, checks

            # The session is alive and last heartbeated from a connection other than the
            # child's main one: the SDK's heartbeat connection, which had to authenticate
            # on its own (every call but Authenticate needs a token).
            sessions = (await observer._client.GetSessions(GetSessionsRequest())).sessions
            ours = [s for s in sessions if s.id == sid]
            assert len(ours) == 1, f"child's session {sid} not in GetSessions: {sessions}"
            remote = ours[0].peer_connection_info.remote_address
            print(f"(d) session {sid}: main connection {r['main_local']}, last heartbeat from {remote}")
            if r["main_local"]:
                assert remote and remote != r["main_local"], (
                    f"heartbeats not from a second connection: main {r['main_local']}, last {remote}")

            kill_time = child.kill()
            await stopped_within_window(left, machine, w, kill_time, "(d) SIGKILL, authenticated")
            assert await left.is_moving() is False

            expiry = [l for l in machine.log_lines() if "session expired" in l and sid in l]
            assert expiry and f"owner={KEY_ID}" in expiry[0], f"expiry not logged with the key id as owner:\n{machine.log()}"
            assert observer._sessions_client._current_id == "", "the observer started a session"
            assert not any("failed authentication" in l for l in machine.log_lines()), machine.log()
        finally:
            if child is not None:
                child.cleanup()
            await observer.close()

    run(body)
