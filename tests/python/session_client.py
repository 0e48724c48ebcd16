"""A session-holding client for ``test_sessions.py``, run as a child process.

    python session_client.py ADDRESS MODE

MODE:
* ``set_power``: connect (sessions enabled, the SDK default), ``left.set_power(0.5)``
  (a safety-monitored call: the SDK starts a session and heartbeats it from a background
  thread on a second connection), then report ``ready``.
* ``read``: connect (sessions enabled) and make only non-monitored calls
  (``get_position``, ``is_moving``), then report ``ready``. Never starts a session.
* ``nosession``: connect with ``disable_sessions=True``, ``left.set_power(0.5)``, report ``ready``.

After ``ready`` it reads commands from stdin, one per line, and answers each with one
report line:
* ``set_power``: one more ``left.set_power(0.5)``; reports whether it raised and how.
* ``session``: reports the SDK's current session id.
* ``close``: closes the RobotClient cleanly, reports ``closed`` and exits 0.
EOF on stdin makes it idle (sleep) until it is killed.

Reports go to stdout as single lines ``@@ {json}`` (the SDK logs to stdout too, so the
test only reads lines with that prefix). Every report carries ``session``: the SDK's
current session id ("" when it has none).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time

PREFIX = "@@ "


def _die_with_parent() -> None:
    """Have the kernel SIGKILL this client if the test process dies: no orphans."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:
        pass


def report(event: str, **fields) -> None:
    sys.stdout.write(PREFIX + json.dumps({"event": event, "t": time.time(), **fields}) + "\n")
    sys.stdout.flush()


async def main(address: str, mode: str) -> int:
    from grpclib.exceptions import GRPCError
    from viam.components.motor import Motor
    from viam.robot.client import RobotClient
    from viam.rpc.dial import DialOptions

    opts = RobotClient.Options(
        dial_options=DialOptions(insecure=True, disable_webrtc=True),
        disable_sessions=(mode == "nosession"),
    )
    robot = await asyncio.wait_for(RobotClient.at_address(address, opts), 30)

    def session_id() -> str:
        return robot._sessions_client._current_id

    left = Motor.from_robot(robot, "left")
    if mode in ("set_power", "nosession"):
        await asyncio.wait_for(left.set_power(0.5), 30)
    elif mode == "read":
        await asyncio.wait_for(left.get_position(), 30)
        await asyncio.wait_for(left.is_moving(), 30)
    else:
        report("error", message=f"unknown mode {mode!r}")
        return 2
    report("ready", mode=mode, session=session_id())

    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:  # EOF: idle until killed
            while True:
                await asyncio.sleep(3600)
        cmd = line.strip()
        if cmd == "set_power":
            started = time.time()
            try:
                await asyncio.wait_for(left.set_power(0.5), 30)
            except GRPCError as e:
                report("set_power", ok=False, status=e.status.name, message=e.message,
                       started=started, session=session_id())
            except Exception as e:  # anything else: report it, the test decides
                report("set_power", ok=False, status=None, message=f"{type(e).__name__}: {e}",
                       started=started, session=session_id())
            else:
                report("set_power", ok=True, started=started, session=session_id())
        elif cmd == "session":
            report("session", session=session_id())
        elif cmd == "close":
            await robot.close()
            report("closed", session="")
            return 0
        elif cmd:
            report("error", message=f"unknown command {cmd!r}", session=session_id())


if __name__ == "__main__":
    _die_with_parent()
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2])))
