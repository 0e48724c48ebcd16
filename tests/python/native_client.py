"""A one-shot SDK client on the SDK's DEFAULT dial path, for ``test_auth.py`` (b).

    python native_client.py ADDRESS --api-key-id ID --api-key KEY [--hold SECONDS]

Dials with ``RobotClient.Options.with_api_key(api_key=KEY, api_key_id=ID)`` plus
``dial_options.insecure = True`` and WebRTC left enabled (``disable_webrtc=False``, the
default), i.e. through viam's native rust-utils dialer, which tries TLS, falls back to h2c,
and hands grpclib a local Unix-socket proxy. Then: ``resource_names``, ``left.set_power(0.5)``
(starts a session), ``is_moving``; holds the session ``--hold`` seconds (its heartbeats run
through the proxy); ``is_moving`` again; ``left.stop()``; ``is_moving``; close.

The native dialer always sends mDNS multicast queries on every interface. This script
therefore REFUSES to dial unless the only network interface it can see is loopback, i.e.
unless it runs in a network namespace of its own (``ip netns exec NS ...``).

It prints exactly one line ``@@ {json}`` (the SDK logs to stdout too): ``ok`` and the
observations, or ``ok: false`` with ``error_type``/``error`` and the step that failed.
Also reported: ``netns`` (this process's network-namespace link) and ``interfaces``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import time
from typing import Any, Dict
from child_support import die_with_parent, emit

async def run(args: argparse.Namespace, out: Dict[str, Any]) -> None:
    from viam.components.motor import Motor
    from viam.robot.client import RobotClient

    opts = RobotClient.Options.with_api_key(api_key=args.api_key, api_key_id=args.api_key_id)
    opts.dial_options.insecure = True
    assert opts.dial_options.disable_webrtc is False  # the default, native dial path
    out["step"] = "connect"
    started = time.monotonic()
    robot = await asyncio.wait_for(RobotClient.at_address(args.address, opts), 60)
    out["connect_s"] = round(time.monotonic() - started, 3)
    try:
        # The native path hands grpclib a Unix socket (the rust-utils proxy).
        out["channel_path"] = robot._channel._path or ""
        out["step"] = "resource_names"
        out["resources"] = sorted(
            f"{r.namespace}:{r.type}:{r.subtype}/{r.name}" for r in robot.resource_names)
        left = Motor.from_robot(robot, "left")
        out["step"] = "set_power"
        await asyncio.wait_for(left.set_power(0.5), 30)
        out["session"] = robot._sessions_client._current_id
        out["step"] = "is_moving"
        out["moving_after_set_power"] = await asyncio.wait_for(left.is_moving(), 30)
        await asyncio.sleep(args.hold)
        out["step"] = "is_moving after hold"
        out["moving_after_hold"] = await asyncio.wait_for(left.is_moving(), 30)
        out["session_after_hold"] = robot._sessions_client._current_id
        out["step"] = "stop"
        out["stop_t"] = time.time()
        await asyncio.wait_for(left.stop(), 30)
        out["moving_after_stop"] = await asyncio.wait_for(left.is_moving(), 30)
        out["step"] = "done"
    finally:
        await robot.close()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("address")
    p.add_argument("--api-key-id", required=True)
    p.add_argument("--api-key", required=True)
    p.add_argument("--hold", type=float, default=0.0)
    args = p.parse_args()

    try:
        netns = os.readlink("/proc/self/ns/net")
    except OSError as e:
        netns = f"? ({e})"
    interfaces = sorted(name for _, name in socket.if_nameindex())
    out: Dict[str, Any] = {"ok": False, "netns": netns, "interfaces": interfaces}
    if interfaces != ["lo"]:
        out["error_type"] = "Refused"
        out["error"] = (f"refusing the native dial path (it multicasts mDNS on every interface): "
                        f"interfaces {interfaces}, want only ['lo']; run me in a fresh network namespace")
        emit(out)
        return 3
    try:
        asyncio.run(run(args, out))
        out["ok"] = True
    except BaseException as e:  # report everything, the test decides
        out["error_type"] = f"{type(e).__module__}.{type(e).__qualname__}"
        out["error"] = str(e)
    emit(out)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    die_with_parent()
    sys.exit(main())
