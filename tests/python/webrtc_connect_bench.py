"""Connect-time benchmark of Viam's Python SDK over WebRTC to a Tether machine.

    python webrtc_connect_bench.py ADDRESS [N]

Run it where the only network interface is loopback (``ip netns exec NS``), next to a
plaintext machine: the SDK's native dialer multicasts mDNS. Connects N times (default 30) with
the SDK's default dial path (``DialOptions(insecure=True)``, WebRTC on, sessions off), checks
each connection really is WebRTC (its ``GetSessions`` peer type, with a session started for the
check on the first one), and prints the p50/p90/max of ``RobotClient.at_address`` (which
includes the SDK's own ``ResourceNames`` call).
"""

import asyncio
import socket
import statistics
import sys
import time

from viam.robot.client import RobotClient
from viam.rpc.dial import DialOptions


async def main(address: str, n: int) -> None:
    from viam.components.motor import Motor
    from viam.proto.robot import GetSessionsRequest, PeerConnectionType

    samples = []
    for i in range(n):
        sessions = i == 0
        opts = RobotClient.Options(dial_options=DialOptions(insecure=True), disable_sessions=not sessions)
        t = time.monotonic()
        robot = await asyncio.wait_for(RobotClient.at_address(address, opts), 60)
        samples.append(time.monotonic() - t)
        if sessions:
            names = [r.name for r in robot.resource_names if r.subtype == "motor"]
            await Motor.from_robot(robot, names[0]).set_power(0.1)  # monitored: starts a session
            await Motor.from_robot(robot, names[0]).stop()
            sid = robot._sessions_client._current_id
            listed = (await robot._client.GetSessions(GetSessionsRequest())).sessions
            kinds = [PeerConnectionType.Name(s.peer_connection_info.type) for s in listed if s.id == sid]
            assert kinds == ["PEER_CONNECTION_TYPE_WEBRTC"], f"not over WebRTC: {kinds}"
        await robot.close()
    samples.sort()
    ms = [s * 1e3 for s in samples]
    print(f"Python SDK connect over WebRTC, {n} connections: p50 {statistics.median(ms):.1f} ms, "
          f"p90 {ms[int(len(ms) * 0.9)]:.1f} ms, max {ms[-1]:.1f} ms")


if __name__ == "__main__":
    interfaces = sorted(name for _, name in socket.if_nameindex())
    if interfaces != ["lo"]:
        sys.exit(f"refusing to run the native dialer outside a loopback-only namespace: {interfaces}")
    asyncio.run(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 30))
