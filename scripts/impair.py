#!/usr/bin/env python3
"""A userspace netem: joins two network namespaces through a pair of TUN devices and forwards
IP packets between them with loss and delay.

The kernel here has no netem qdisc (``tc qdisc add ... netem`` says "Specified qdisc kind is
unknown"), so impairment is done on the packets themselves: every packet, in either direction,
is dropped with probability LOSS, or else delivered after a delay drawn uniformly from
[DELAY_MIN, DELAY_MAX] (independently per packet, so jitter reorders packets, as netem's does).
The kernels on both sides are unchanged: TCP, SCTP and their retransmissions are real.

    impair.py NS_A ADDR_A NS_B ADDR_B [--loss P] [--delay-min S] [--delay-max S] [--seed N]

It must run as root inside NS_A (``ip netns exec NS_A impair.py ...``). It creates a TUN device
there for ADDR_A, creates a second one and moves it into NS_B for ADDR_B (both /30, point to
point), prints "ready" on stdout, and forwards until SIGTERM or SIGINT, when it prints its
counters. The namespaces are joined to each other only; nothing reaches any other.
"""

import argparse
import fcntl
import heapq
import os
import random
import select
import signal
import struct
import subprocess
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def open_tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def ip(*args):
    subprocess.run(["ip", *args], check=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("ns_a")
    p.add_argument("addr_a")
    p.add_argument("ns_b")
    p.add_argument("addr_b")
    p.add_argument("--loss", type=float, default=0.0)
    p.add_argument("--delay-min", type=float, default=0.0)
    p.add_argument("--delay-max", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=None)
    a = p.parse_args()
    if not 0.0 <= a.loss < 1.0 or not 0.0 <= a.delay_min <= a.delay_max:
        sys.exit("impair: need 0 <= loss < 1 and 0 <= delay-min <= delay-max")
    rng = random.Random(a.seed)

    tag = str(os.getpid() % 100000)
    name_a, name_b = "tia" + tag, "tib" + tag
    fd_a, fd_b = open_tun(name_a), open_tun(name_b)
    # The device keeps its file descriptor when it moves to the other namespace.
    ip("link", "set", name_b, "netns", a.ns_b)
    ip("link", "set", "lo", "up")
    ip("addr", "add", a.addr_a, "peer", a.addr_b, "dev", name_a)
    ip("link", "set", name_a, "up")
    ip("-n", a.ns_b, "link", "set", "lo", "up")
    ip("-n", a.ns_b, "addr", "add", a.addr_b, "peer", a.addr_a, "dev", name_b)
    ip("-n", a.ns_b, "link", "set", name_b, "up")

    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    # direction -> [forwarded, dropped]
    counts = {"a->b": [0, 0], "b->a": [0, 0]}
    out_of = {fd_a: (fd_b, "a->b"), fd_b: (fd_a, "b->a")}
    pending = []  # (due, sequence, fd, packet)
    seq = 0
    print("ready", flush=True)
    while not stopping:
        now = time.monotonic()
        while pending and pending[0][0] <= now:
            _, _, fd, packet = heapq.heappop(pending)
            try:
                os.write(fd, packet)
            except OSError:
                pass  # the device's queue is full or it is going away: the packet is lost
        timeout = max(0.0, pending[0][0] - now) if pending else 0.5
        try:
            readable, _, _ = select.select([fd_a, fd_b], [], [], timeout)
        except InterruptedError:
            continue
        now = time.monotonic()
        for fd in readable:
            to, direction = out_of[fd]
            for _ in range(64):
                try:
                    packet = os.read(fd, 65536)
                except BlockingIOError:
                    break
                except OSError:
                    stopping = True
                    break
                if rng.random() < a.loss:
                    counts[direction][1] += 1
                    continue
                counts[direction][0] += 1
                delay = rng.uniform(a.delay_min, a.delay_max)
                seq += 1
                heapq.heappush(pending, (now + delay, seq, to, packet))
    for direction, (sent, dropped) in counts.items():
        total = sent + dropped
        share = 100.0 * dropped / total if total else 0.0
        print(
            f"impair {direction}: {total} packets, {dropped} dropped ({share:.2f} %)",
            flush=True,
        )


if __name__ == "__main__":
    main()
