"""HTTP/2 abuse against a real ``tether serve``, with hand-built frames (Python's ``h2``,
pinned in ``scripts/setup-python``, plus raw frames where ``h2`` refuses to misbehave).

Each case attacks one connection the way the hardening review did — rapid reset,
CONTINUATION flood, HPACK bomb, SETTINGS and PING floods, more streams than allowed,
slowloris — and then checks, on a fresh connection, that the machine still answers a gRPC
call promptly. The machine may close the attacking connection (GOAWAY, reset); it must not
stall, crash or lock anyone else out. Every loop is bounded in count and time.
"""

from __future__ import annotations

import socket
import struct
import time

import h2.config
import h2.connection
import h2.events
import pytest

GET_VERSION = "/viam.robot.v1.RobotService/GetVersion"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def host_port(machine):
    host, port = machine.address.rsplit(":", 1)
    return host, int(port)


def raw_socket(machine, timeout=5.0) -> socket.socket:
    s = socket.create_connection(host_port(machine), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    """One HTTP/2 frame: 24-bit length, type, flags, 31-bit stream id, payload."""
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


DATA, HEADERS, RST_STREAM, SETTINGS, PING, CONTINUATION = 0x0, 0x1, 0x3, 0x4, 0x6, 0x9
END_STREAM, END_HEADERS = 0x1, 0x4


def grpc_frame(message: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(message)) + message


def client(machine):
    """A well-behaved h2 client connection: socket and state machine."""
    s = raw_socket(machine)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    s.sendall(conn.data_to_send())
    return s, conn


def request_headers(machine, path=GET_VERSION):
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", machine.address),
        (":path", path),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]


def healthy(machine, limit=5.0) -> float:
    """A GetVersion on a fresh connection; how long it took. Fails the test if it does not
    succeed within `limit`."""
    started = time.monotonic()
    s, conn = client(machine)
    try:
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, request_headers(machine))
        conn.send_data(stream, grpc_frame(b""), end_stream=True)
        s.sendall(conn.data_to_send())
        status = None
        s.settimeout(limit)
        while status is None:
            assert time.monotonic() - started < limit, "the machine did not answer in time"
            data = s.recv(65536)
            assert data, "the machine closed a well-behaved connection"
            for event in conn.receive_data(data):
                if isinstance(event, (h2.events.TrailersReceived, h2.events.ResponseReceived)):
                    for k, v in event.headers:
                        if k == "grpc-status":
                            status = v
                if isinstance(event, h2.events.StreamEnded) and status is None:
                    status = "missing"
            s.sendall(conn.data_to_send())
        assert status == "0", f"grpc-status {status}"
        return time.monotonic() - started
    finally:
        s.close()


def drain(s: socket.socket, limit: float) -> bytes:
    """Reads what the machine sends back until it closes or `limit` passes."""
    s.settimeout(0.2)
    got = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            data = s.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            break
        if not data:
            break
        got += data
        if len(got) > 1 << 20:
            break
    return got


def send_all(s: socket.socket, data: bytes) -> bool:
    """Sends, tolerating the machine having closed the connection (it may, under attack)."""
    try:
        s.sendall(data)
        return True
    except OSError:
        return False


def test_baseline_is_healthy(machine):
    assert healthy(machine) < 5


def test_rapid_reset(machine):
    """CVE-2023-44487: open and immediately reset thousands of streams."""
    s, conn = client(machine)
    burst = b""
    for i in range(2000):
        stream = 1 + 2 * i
        conn.send_headers(stream, request_headers(machine))
        conn.reset_stream(stream)
        if i % 200 == 199:
            burst += conn.data_to_send()
            if not send_all(s, burst):
                break
            burst = b""
    send_all(s, burst + conn.data_to_send())
    drain(s, 1.0)
    s.close()
    assert healthy(machine) < 5


def test_continuation_flood(machine):
    """HEADERS without END_HEADERS, then endless CONTINUATION frames of header bytes."""
    s = raw_socket(machine)
    s.sendall(PREFACE + frame(SETTINGS, 0, 0, b""))
    # A literal header never indexed, name "x", value that keeps growing across frames.
    s.sendall(frame(HEADERS, 0, 1, b"\x10\x01x\x7f\xff\xff\x03"))
    chunk = b"a" * 16000
    sent = 0
    started = time.monotonic()
    while sent < 2000 and time.monotonic() - started < 10:
        if not send_all(s, frame(CONTINUATION, 0, 1, chunk)):
            break
        sent += 1
    drain(s, 1.0)
    s.close()
    assert healthy(machine) < 5


def test_hpack_bomb(machine):
    """A 4 KB header put in the dynamic table, then referenced thousands of times."""
    s = raw_socket(machine)
    s.sendall(PREFACE + frame(SETTINGS, 0, 0, b""))
    value = b"a" * 4000
    # Literal with incremental indexing, new name "x": 0x40, name length 1, "x", value length
    # 4000 (7-bit prefix integer: 127 then 3873 in base 128).
    literal = b"\x40\x01x" + b"\x7f" + bytes([(3873 % 128) | 0x80, 3873 // 128]) + value
    # The pseudo-headers (static table), then the entry (dynamic index 62 = 0xbe) 4000 times.
    block = b"\x83\x86\x84" + literal + b"\xbe" * 4000
    s.sendall(frame(HEADERS, END_HEADERS, 1, block))
    drain(s, 1.0)
    s.close()
    assert healthy(machine) < 5


def test_settings_flood(machine):
    s = raw_socket(machine)
    s.sendall(PREFACE)
    settings = frame(SETTINGS, 0, 0, struct.pack(">HI", 0x3, 100))
    for _ in range(20):
        if not send_all(s, settings * 500):
            break
    drain(s, 1.0)
    s.close()
    assert healthy(machine) < 5


def test_ping_flood(machine):
    s = raw_socket(machine)
    s.sendall(PREFACE + frame(SETTINGS, 0, 0, b""))
    ping = frame(PING, 0, 0, b"\x00" * 8)
    for _ in range(20):
        if not send_all(s, ping * 500):
            break
    drain(s, 1.0)
    s.close()
    assert healthy(machine) < 5


def frames_in(data: bytes):
    """The (type, flags, stream) of each whole frame in `data`."""
    out, i = [], 0
    while i + 9 <= len(data):
        length = int.from_bytes(data[i : i + 3], "big")
        if i + 9 + length > len(data):
            break
        out.append((data[i + 3], data[i + 4], int.from_bytes(data[i + 5 : i + 9], "big") & 0x7FFFFFFF))
        i += 9 + length
    return out


def test_more_streams_than_allowed(machine):
    """1,100 open streams on one connection, past the 1,024 the machine allows: the ones past
    the limit are refused (RST_STREAM), the connection and everyone else go on."""
    import hpack

    s = raw_socket(machine)
    s.sendall(PREFACE + frame(SETTINGS, 0, 0, b""))
    encoder = hpack.Encoder()
    burst = b""
    for i in range(1100):
        block = encoder.encode(request_headers(machine))
        burst += frame(HEADERS, END_HEADERS, 1 + 2 * i, block)
    send_all(s, burst)
    # Acknowledge the machine's SETTINGS so it applies its limit, and collect its answers.
    send_all(s, frame(SETTINGS, 0x1, 0, b""))
    got = drain(s, 3)
    s.close()
    resets = [f for f in frames_in(got) if f[0] == RST_STREAM]
    assert len(resets) >= 1100 - 1024, f"only {len(resets)} streams refused past the limit"
    assert healthy(machine) < 5


def test_slowloris(machine):
    """A connection that sends its preface one byte at a time and never finishes: others are
    served meanwhile, and the machine drops it after its header-read timeout."""
    s = raw_socket(machine, timeout=1)
    closed = False
    started = time.monotonic()
    for b in PREFACE[:-1]:
        if not send_all(s, bytes([b])):
            closed = True
            break
        time.sleep(0.3)
        if time.monotonic() - started > 3:
            break
    assert healthy(machine) < 5
    if not closed:
        got = drain(s, 15)
        assert time.monotonic() - started < 20
        assert got == b"" or b"HTTP/1.1" in got, got[:100]
    s.close()
