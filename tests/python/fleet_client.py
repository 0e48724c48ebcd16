"""The official Python SDK reaching a machine through a fleet's signaling service, for the NAT
lab (``crates/cli/tests/nat.rs``):

    python fleet_client.py ADDRESS KEY_ID KEY [--force-relay] [--force-p2p] [--turn-uri URI] [--once]

Without ``--once``: connect, set_power, report, then hang. With it: connect, list, report,
exit (a failed dial reports its error and exits 1).

ADDRESS is the machine's name and the signaling service's port (``rover.nat.test:8089``); the
namespace's hosts file (``/etc/netns/NAME/hosts``) maps the name to the signaling service, so
the SDK's native dialer connects there, authenticates with the API key, and signals WebRTC with
``rpc-host`` = ADDRESS, which the service takes to mean the machine. Once connected it lists
the resources, sets motor ``left`` to 0.5 (starting a session), reports, and sleeps until
killed: its heartbeats hold the session until then.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any, Dict

from child_support import die_with_parent, emit


async def drive(args: argparse.Namespace, out: Dict[str, Any]) -> None:
    from viam.components.motor import Motor
    from viam.proto.robot import GetSessionsRequest, PeerConnectionType
    from viam.robot.client import RobotClient

    opts = RobotClient.Options.with_api_key(args.key, args.key_id)
    opts.dial_options.insecure = True
    opts.dial_options.force_relay = args.force_relay
    opts.dial_options.force_p2p = args.force_p2p
    opts.dial_options.turn_uri = args.turn_uri
    out["step"] = "connect"
    started = time.monotonic()
    try:
        robot = await asyncio.wait_for(RobotClient.at_address(args.address, opts), 25 if args.once else 60)
        out["resources"] = sorted(f"{r.namespace}:{r.type}:{r.subtype}/{r.name}" for r in robot.resource_names)
    finally:
        out["connect_s"] = round(time.monotonic() - started, 3)
    if args.once:
        out["ok"] = True
        emit(out)
        await robot.close()
        return
    left = Motor.from_robot(robot, "left")
    out["step"] = "set_power"
    await asyncio.wait_for(left.set_power(0.5), 30)
    out["session"] = robot._sessions_client._current_id
    sessions = (await robot._client.GetSessions(GetSessionsRequest())).sessions
    ours = [s for s in sessions if s.id == out["session"]]
    out["peer_type"] = PeerConnectionType.Name(ours[0].peer_connection_info.type) if ours else ""
    out["ok"] = True
    emit(out)
    await asyncio.sleep(3600)


def main() -> None:
    die_with_parent()
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("key_id")
    parser.add_argument("key")
    parser.add_argument("--force-relay", action="store_true")
    parser.add_argument("--force-p2p", action="store_true")
    parser.add_argument("--turn-uri")
    parser.add_argument("--once", action="store_true")
    args = parser.parse_args()
    out: Dict[str, Any] = {"ok": False}
    try:
        asyncio.run(drive(args, out))
    except Exception as e:  # the report says where it failed
        out["error"] = f"{type(e).__name__}: {e}"
        emit(out)
        sys.exit(1)


if __name__ == "__main__":
    main()
