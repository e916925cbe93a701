#!/usr/bin/env python3
"""Stand-in Salt minion client, for salt-sidecar's integration tests.

Talks to a tests/helpers/zmq_master.py (usually through salt-sidecar) with real ZeroMQ sockets:
  * a DEALER connected to --ret sends [b"", b"ping N"], then waits up to --request-timeout for the
    reply before the next ping (pings start at most every --interval). Heartbeats (200 ms / 600 ms)
    and fast reconnects (50-200 ms) make it notice a dead or reset connection quickly.
  * with --publish, a SUB connected there, subscribed to everything.
Prints one JSON line per event on stdout, flushed, which the tests parse:
  {"t": <unix time>, "event": "reply", "seq": N, "from": "A"}   ("late": true if N had timed out;
                                                                 DEALER replies can arrive late)
  {"t": ..., "event": "timeout", "seq": N}
  {"t": ..., "event": "tick", "from": "A", "n": N}
  {"t": ..., "event": "monitor", "socket": "dealer"|"sub", "what": "CONNECTED"|"DISCONNECTED"|...}
                                                                (with --monitor: libzmq's socket events)
  {"event": "done", "replies": R, "timeouts": T}                 (last line; after --duration or SIGTERM)

Usage (run with the test venv, see scripts/test-deps):
  $SALT_SIDECAR_VENV/bin/python tests/helpers/zmq_minion.py --ret 127.0.0.1:24506 \
      [--publish 127.0.0.1:24505] [--interval 0.05] [--duration 30] [--request-timeout 0.5] \
      [--handshake-ivl 500] [--monitor]
"""
import argparse
import json
import signal
import time

import zmq
from zmq.utils.monitor import recv_monitor_message

# Milliseconds. Fast reconnects, and ZMTP heartbeats so a silently dead peer is dropped in ~0.6 s.
SOCKOPTS = ((zmq.LINGER, 0), (zmq.RECONNECT_IVL, 50), (zmq.RECONNECT_IVL_MAX, 200),
            (zmq.HEARTBEAT_IVL, 200), (zmq.HEARTBEAT_TIMEOUT, 600))


def emit(**event):
    print(json.dumps(event), flush=True)


def parse(payload):
    """b"A:ping 7" -> ("A", "ping", 7); anything else -> (None, None, None)."""
    try:
        src, _, rest = payload.decode().partition(":")
        kind, num = rest.rsplit(" ", 1)
        return src, kind, int(num)
    except (UnicodeDecodeError, ValueError):
        return None, None, None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ret", required=True, help="HOST:PORT for the DEALER to connect to")
    ap.add_argument("--publish", help="HOST:PORT for the SUB to connect to (optional)")
    ap.add_argument("--interval", type=float, default=0.05, help="seconds between pings")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds to run")
    ap.add_argument("--request-timeout", type=float, default=0.5, help="seconds to await a reply")
    ap.add_argument("--handshake-ivl", type=int, default=None,
                    help="ms: give up on a connection whose ZMTP handshake is not done by then, "
                         "and reconnect (libzmq's default is 30000)")
    ap.add_argument("--monitor", action="store_true",
                    help="print every libzmq socket event (connect, handshake, disconnect, ...)")
    args = ap.parse_args()
    sockopts = SOCKOPTS + (((zmq.HANDSHAKE_IVL, args.handshake_ivl),) if args.handshake_ivl else ())

    stop = False

    def on_signal(_signum, _frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    for opt, val in sockopts:
        dealer.setsockopt(opt, val)
    dealer.connect(f"tcp://{args.ret}")
    poller = zmq.Poller()
    poller.register(dealer, zmq.POLLIN)
    sub = None
    if args.publish:
        sub = ctx.socket(zmq.SUB)
        for opt, val in sockopts:
            sub.setsockopt(opt, val)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(f"tcp://{args.publish}")
        poller.register(sub, zmq.POLLIN)

    monitors = {}  # monitor socket -> name of the socket it watches
    if args.monitor:
        for name, sock in (("dealer", dealer), ("sub", sub)):
            if sock is not None:
                mon = sock.get_monitor_socket()
                monitors[mon] = name
                poller.register(mon, zmq.POLLIN)

    replies = timeouts = 0
    seq = 0
    outstanding = None  # (seq, deadline) of the ping being waited for
    timed_out = set()  # seqs reported as timeouts, so a late reply is flagged
    now = time.monotonic()
    end = now + args.duration
    next_send = now
    while not stop:
        now = time.monotonic()
        if now >= end:
            break
        if outstanding and now >= outstanding[1]:
            emit(t=time.time(), event="timeout", seq=outstanding[0])
            timeouts += 1
            timed_out.add(outstanding[0])
            outstanding = None
        if outstanding is None and now >= next_send:
            seq += 1
            # NOBLOCK: with no connection the message is queued (up to SNDHWM), never blocks.
            try:
                dealer.send_multipart([b"", b"ping %d" % seq], zmq.NOBLOCK)
            except zmq.Again:
                pass  # queue full: it simply times out
            outstanding = (seq, now + args.request_timeout)
            next_send = max(next_send + args.interval, now)
        wake = min(end, outstanding[1] if outstanding else next_send)
        events = dict(poller.poll(min(100, max(0, int((wake - time.monotonic()) * 1000)) + 1)))
        if dealer in events:
            while True:
                try:
                    frames = dealer.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                src, _, n = parse(frames[-1])
                ev = {"t": time.time(), "event": "reply", "seq": n, "from": src}
                if n in timed_out:
                    ev["late"] = True
                elif src is None:
                    ev["raw"] = frames[-1].decode(errors="replace")
                emit(**ev)
                replies += 1
                if outstanding and n == outstanding[0]:
                    outstanding = None
        if sub is not None and sub in events:
            while True:
                try:
                    msg = sub.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                src, _, n = parse(msg)
                emit(**{"t": time.time(), "event": "tick", "from": src, "n": n})

        for mon, name in monitors.items():
            if mon not in events:
                continue
            while True:
                try:
                    ev = recv_monitor_message(mon, zmq.NOBLOCK)
                except zmq.Again:
                    break
                try:
                    what = zmq.Event(ev["event"]).name
                except ValueError:
                    what = str(ev["event"])
                emit(t=time.time(), event="monitor", socket=name, what=what)

    emit(event="done", replies=replies, timeouts=timeouts)
    for mon in monitors:
        mon.close()
    dealer.close()
    if sub is not None:
        sub.close()
    ctx.term()


if __name__ == "__main__":
    main()
