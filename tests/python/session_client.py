"""A session-holding client for ``test_sessions.py``, run as a child process.

    python session_client.py ADDRESS MODE [--api-key-id ID --api-key KEY] [--tls]

Dialing: by default direct gRPC, plaintext, no credentials
(``DialOptions(insecure=True, disable_webrtc=True)``). ``--api-key-id``/``--api-key`` use
``RobotClient.Options.with_api_key(api_key=KEY, api_key_id=ID)`` (the SDK then authenticates
every connection it opens, including its second, heartbeat connection);
``--tls`` dials with TLS (``insecure=False``; the SDK does not verify certificates for
``localhost``/``127.*``). WebRTC stays disabled in every case (direct dial only).

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
current session id ("" when it has none). ``ready`` also carries ``main_local``: the local
``host:port`` of the client's main connection ("" if unknown), so a test can tell it apart
from the SDK's heartbeat connection.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from child_support import die_with_parent, emit

def report(event: str, **fields) -> None:
    emit({"event": event, "t": time.time(), **fields})


def _main_local(robot) -> str:
    """Local host:port of the RobotClient's main grpclib connection (grpclib internals)."""
    try:
        sockname = robot._channel._protocol.connection._transport.get_extra_info("sockname")
        return f"{sockname[0]}:{sockname[1]}"
    except Exception:
        return ""


def _options(args: argparse.Namespace):
    from viam.robot.client import RobotClient
    from viam.rpc.dial import DialOptions

    disable_sessions = args.mode == "nosession"
    if args.api_key_id or args.api_key:
        opts = RobotClient.Options.with_api_key(
            api_key=args.api_key, api_key_id=args.api_key_id, disable_sessions=disable_sessions)
        opts.dial_options.disable_webrtc = True
        opts.dial_options.insecure = not args.tls
        return opts
    return RobotClient.Options(
        dial_options=DialOptions(insecure=not args.tls, disable_webrtc=True),
        disable_sessions=disable_sessions,
    )


async def main(args: argparse.Namespace) -> int:
    from grpclib.exceptions import GRPCError
    from viam.components.motor import Motor
    from viam.robot.client import RobotClient

    mode = args.mode
    robot = await asyncio.wait_for(RobotClient.at_address(args.address, _options(args)), 30)

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
    report("ready", mode=mode, session=session_id(), main_local=_main_local(robot))

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


def parse_args(argv) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="session-holding SDK client for the tether tests")
    p.add_argument("address")
    p.add_argument("mode", help="set_power, read or nosession")
    p.add_argument("--api-key-id", default="", help="API key id (a UUID); with --api-key")
    p.add_argument("--api-key", default="", help="API key; with --api-key-id")
    p.add_argument("--tls", action="store_true", help="dial with TLS (default: plaintext)")
    args = p.parse_args(argv)
    if bool(args.api_key_id) != bool(args.api_key):
        p.error("--api-key-id and --api-key go together")
    return args


if __name__ == "__main__":
    die_with_parent()
    sys.exit(asyncio.run(main(parse_args(sys.argv[1:]))))
