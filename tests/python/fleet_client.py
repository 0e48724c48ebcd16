"""The official Python SDK reaching a machine through a fleet's signaling service, for the NAT
lab (``crates/cli/tests/nat.rs``):

    python fleet_client.py ADDRESS KEY_ID KEY    # connect, set_power, report, then hang

ADDRESS is the machine's name and the signaling service's port (``rover.nat.test:8089``); the
namespace's hosts file (``/etc/netns/NAME/hosts``) maps the name to the signaling service, so
the SDK's native dialer connects there, authenticates with the API key, and signals WebRTC with
``rpc-host`` = ADDRESS, which the service takes to mean the machine. Once connected it lists
the resources, sets motor ``left`` to 0.5 (starting a session), reports, and sleeps until
killed: its heartbeats hold the session until then.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, Dict

from child_support import die_with_parent, emit


async def drive(address: str, key_id: str, key: str, out: Dict[str, Any]) -> None:
    from viam.components.motor import Motor
    from viam.proto.robot import GetSessionsRequest, PeerConnectionType
    from viam.robot.client import RobotClient

    opts = RobotClient.Options.with_api_key(key, key_id)
    opts.dial_options.insecure = True
    out["step"] = "connect"
    started = time.monotonic()
    robot = await asyncio.wait_for(RobotClient.at_address(address, opts), 60)
    out["connect_s"] = round(time.monotonic() - started, 3)
    out["resources"] = sorted(f"{r.namespace}:{r.type}:{r.subtype}/{r.name}" for r in robot.resource_names)
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
    address, key_id, key = sys.argv[1:4]
    out: Dict[str, Any] = {"ok": False}
    try:
        asyncio.run(drive(address, key_id, key, out))
    except Exception as e:  # the report says where it failed
        out["error"] = f"{type(e).__name__}: {e}"
        emit(out)
        sys.exit(1)


if __name__ == "__main__":
    main()
