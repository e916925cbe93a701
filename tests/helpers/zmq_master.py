#!/usr/bin/env python3
"""Stand-in Salt master made of real ZeroMQ sockets, for salt-sidecar's integration tests.

Binds what a Salt master binds -- a PUB on the publish port and a ROUTER on the ret port --
but speaks a trivial protocol so tests can tell which master answered:
  * ROUTER: each request [identity, *frames] gets [identity, *frames[:-1], NAME:frames[-1]]
    (a DEALER sending [b"", b"ping 7"] gets [b"", b"A:ping 7"]; a REQ sending b"ping 7" gets b"A:ping 7").
  * PUB: publishes b"NAME:tick N" (N = 1, 2, ...) every --tick seconds.
  * --answer-delay S: each request is answered S seconds after the previous answer (or its
    arrival), one after another: a master whose one worker is busy S seconds per request.
  * --log-requests: prints "request PAYLOAD" (the last frame, as text) for each request it
    receives, before answering it (a test counts what reached the master).
Prints one line "ready" on stdout once both sockets are bound. SIGTERM/SIGINT exit
cleanly (status 0); tests SIGKILL it to simulate a crashed master.

Usage (run with the test venv, see scripts/test-deps):
  $SALT_SIDECAR_VENV/bin/python tests/helpers/zmq_master.py --name A \
      --publish 127.0.0.2:14505 --ret 127.0.0.2:14506 [--tick 0.1] [--answer-delay 0]
"""
import argparse
import signal
import sys
import time

import zmq


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True, help="reply/tick prefix, e.g. A")
    ap.add_argument("--publish", required=True, help="HOST:PORT to bind the PUB socket")
    ap.add_argument("--ret", required=True, help="HOST:PORT to bind the ROUTER socket")
    ap.add_argument("--tick", type=float, default=0.1, help="seconds between ticks")
    ap.add_argument("--log-requests", action="store_true",
                    help='print "request PAYLOAD" for each request received')
    ap.add_argument("--answer-delay", type=float, default=0.0,
                    help="seconds of 'work' per request, one request after another")
    args = ap.parse_args()
    name = args.name.encode()

    stop = False

    def on_signal(_signum, _frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    router = ctx.socket(zmq.ROUTER)
    for s in (pub, router):
        s.setsockopt(zmq.LINGER, 0)
    pub.bind(f"tcp://{args.publish}")
    router.bind(f"tcp://{args.ret}")
    print("ready", flush=True)

    poller = zmq.Poller()
    poller.register(router, zmq.POLLIN)
    tick_n = 0
    next_tick = time.monotonic()
    served = 0
    # Requests waiting for their answer (--answer-delay): (due, frames), in order.
    pending = []
    busy_until = 0.0
    while not stop:
        now = time.monotonic()
        while pending and pending[0][0] <= now:
            _, frames = pending.pop(0)
            router.send_multipart(frames)
            served += 1
        if now >= next_tick:
            tick_n += 1
            pub.send(name + b":tick %d" % tick_n)
            next_tick = max(next_tick + args.tick, now)  # no burst after a stall
        # pyzmq retries poll() after a signal, so cap the wait to notice `stop` promptly.
        wake = min(next_tick, pending[0][0]) if pending else next_tick
        timeout_ms = min(100, max(0, int((wake - time.monotonic()) * 1000)))
        if not poller.poll(timeout_ms):
            continue
        while True:  # drain everything queued
            try:
                frames = router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if len(frames) < 2:  # identity only: nothing to answer
                continue
            if args.log_requests:
                print("request " + frames[-1].decode("latin-1"), flush=True)
            answer = [*frames[:-1], name + b":" + frames[-1]]
            if args.answer_delay > 0:
                busy_until = max(busy_until, time.monotonic()) + args.answer_delay
                pending.append((busy_until, answer))
                continue
            router.send_multipart(answer)
            served += 1

    print(f"zmq_master {args.name}: stopping, served {served} requests", file=sys.stderr)
    pub.close()
    router.close()
    ctx.term()


if __name__ == "__main__":
    main()
