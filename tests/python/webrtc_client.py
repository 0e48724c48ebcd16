"""An SDK client for ``test_webrtc.py``, on the SDK's DEFAULT dial path (WebRTC enabled).

    python webrtc_client.py drive ADDRESS    # connect, prove WebRTC, set_power, then hang
    python webrtc_client.py observe ADDRESS  # direct (disable_webrtc) look at motor `left`

``drive`` dials with ``dial_options.insecure = True`` and no credentials: viam's native
rust-utils dialer connects to ADDRESS (h2c after its TLS attempt), calls
``OptionalWebRTCConfig`` and ``Call`` there (the machine's own signaling) and, once the data
channel is open, hands grpclib a Unix-socket proxy that carries every call over WebRTC. It
reports ``connect_s``, the resources, its session id after ``left.set_power(0.5)``, and what
``GetSessions`` says about that session's peer (``PEER_CONNECTION_TYPE_WEBRTC`` is the
proof), prints its report line, then sleeps until killed: its heartbeats keep going until
the test SIGKILLs it.

``observe`` reports ``is_moving`` and the motor's history of commands.

The native dialer multicasts mDNS on every interface, so this script refuses to run unless
the only interface it sees is loopback (a network namespace of its own).
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


async def drive(address: str, out: Dict[str, Any]) -> None:
    from viam.components.motor import Motor
    from viam.proto.robot import GetSessionsRequest, PeerConnectionType
    from viam.robot.client import RobotClient

    from viam.rpc.dial import DialOptions

    opts = RobotClient.Options(dial_options=DialOptions(insecure=True))
    assert opts.dial_options.disable_webrtc is False  # the default, native dial path
    out["step"] = "connect"
    started = time.monotonic()
    robot = await asyncio.wait_for(RobotClient.at_address(address, opts), 60)
    out["connect_s"] = round(time.monotonic() - started, 3)
    out["channel_path"] = robot._channel._path or ""
    out["resources"] = sorted(f"{r.namespace}:{r.type}:{r.subtype}/{r.name}" for r in robot.resource_names)
    left = Motor.from_robot(robot, "left")
    out["step"] = "set_power"
    await asyncio.wait_for(left.set_power(0.5), 30)
    out["session"] = robot._sessions_client._current_id
    out["moving"] = await asyncio.wait_for(left.is_moving(), 30)
    out["step"] = "get_sessions"
    sessions = (await robot._client.GetSessions(GetSessionsRequest())).sessions
    ours = [s for s in sessions if s.id == out["session"]]
    out["peer_type"] = PeerConnectionType.Name(ours[0].peer_connection_info.type) if ours else ""
    out["ok"] = True
    out["ready_t"] = time.time()
    emit(out)
    # Hold the session (the SDK heartbeats in the background) until SIGKILL.
    await asyncio.sleep(3600)


async def observe(address: str, out: Dict[str, Any]) -> None:
    from viam.components.motor import Motor
    from viam.robot.client import RobotClient

    from viam.rpc.dial import DialOptions

    opts = RobotClient.Options(disable_sessions=True,
                               dial_options=DialOptions(insecure=True, disable_webrtc=True))
    robot = await asyncio.wait_for(RobotClient.at_address(address, opts), 60)
    try:
        left = Motor.from_robot(robot, "left")
        out["moving"] = await left.is_moving()
        result = await left.do_command({"command": "history"})
        out["history"] = [e.get("command") for e in result["history"]]
        out["ok"] = True
    finally:
        await robot.close()
    emit(out)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["drive", "observe"])
    p.add_argument("address")
    args = p.parse_args()
    interfaces = sorted(name for _, name in socket.if_nameindex())
    out: Dict[str, Any] = {"ok": False, "netns": os.readlink("/proc/self/ns/net"), "interfaces": interfaces}
    if interfaces != ["lo"]:
        out["error"] = f"refusing to dial outside a loopback-only namespace: interfaces {interfaces}"
        emit(out)
        return 3
    try:
        asyncio.run(drive(args.address, out) if args.mode == "drive" else observe(args.address, out))
    except BaseException as e:  # report everything, the test decides
        out["ok"] = False
        out["error_type"] = f"{type(e).__module__}.{type(e).__qualname__}"
        out["error"] = str(e)
        emit(out)
        return 1
    return 0


if __name__ == "__main__":
    die_with_parent()
    sys.exit(main())
