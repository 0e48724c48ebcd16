"""Shared by the SDK child scripts the tests run (session_client.py, native_client.py)."""

import json
import signal
import sys
from typing import Any, Dict

# Report lines start with this, because the SDK logs to stdout too.
PREFIX = "@@ "


def die_with_parent() -> None:
    """Have the kernel SIGKILL this client if the test process dies: no orphans."""
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:
        pass


def emit(result: Dict[str, Any]) -> None:
    """Writes one report line for the test to read."""
    sys.stdout.write(PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()
