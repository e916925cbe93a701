#!/usr/bin/env python3
"""Stand-in Salt master speaking Salt's `transport: tcp` framing, for salt-sidecar's tests.

No dependencies (a minimal msgpack codec is built in). Each message on the wire is one
msgpack map {"head": {...}, "body": ...}; a reply echoes the request's head (its "mid").
  * ret port: a body {"enc": "clear", "load": {"cmd": "ping"}} (Salt's clear ping, the
    sidecar's re-probe) is answered at once with the load, as Salt's ClearFuncs.ping does.
    Any other body is a job: the string "job SECONDS" is answered after SECONDS (in a thread
    of its own, as a master's worker would) with the body "NAME:job".
  * publish port: connections are accepted and held (nothing is published).
Prints exactly one line "ready" on stdout once both ports listen. Tests SIGSTOP it (a hung
master: the kernel still accepts connections) and SIGKILL it by PID.

Usage: python3 tests/helpers/tcp_master.py --name A --publish 127.0.0.2:4505 --ret 127.0.0.2:4506
"""
import argparse
import socket
import struct
import sys
import threading
import time


class Incomplete(Exception):
    pass


def unpack(buf, pos=0):
    """One msgpack value at buf[pos:] -> (value, next position); Incomplete if cut short."""
    def need(n):
        if pos + n > len(buf):
            raise Incomplete()

    need(1)
    b = buf[pos]
    pos += 1

    def take(n):
        nonlocal pos
        need(n)
        out = buf[pos:pos + n]
        pos += n
        return out

    def uint(n):
        return int.from_bytes(take(n), "big")

    if b <= 0x7F:
        return b, pos
    if b >= 0xE0:
        return b - 0x100, pos
    if 0x80 <= b <= 0x8F or b in (0xDE, 0xDF):
        n = b & 0x0F if b <= 0x8F else uint(2 if b == 0xDE else 4)
        out = {}
        for _ in range(n):
            k, pos = unpack(buf, pos)
            v, pos = unpack(buf, pos)
            out[k] = v
        return out, pos
    if 0x90 <= b <= 0x9F or b in (0xDC, 0xDD):
        n = b & 0x0F if b <= 0x9F else uint(2 if b == 0xDC else 4)
        out = []
        for _ in range(n):
            v, pos = unpack(buf, pos)
            out.append(v)
        return out, pos
    if 0xA0 <= b <= 0xBF or b in (0xD9, 0xDA, 0xDB):
        n = b & 0x1F if b <= 0xBF else uint({0xD9: 1, 0xDA: 2, 0xDB: 4}[b])
        return take(n).decode("utf-8", "replace"), pos
    if b in (0xC4, 0xC5, 0xC6):
        return bytes(take(uint({0xC4: 1, 0xC5: 2, 0xC6: 4}[b]))), pos
    if b == 0xC0:
        return None, pos
    if b in (0xC2, 0xC3):
        return b == 0xC3, pos
    if b in (0xCC, 0xCD, 0xCE, 0xCF):
        return uint({0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}[b]), pos
    if b in (0xD0, 0xD1, 0xD2, 0xD3):
        n = {0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}[b]
        return int.from_bytes(take(n), "big", signed=True), pos
    if b == 0xCB:
        return struct.unpack(">d", take(8))[0], pos
    raise ValueError(f"unsupported msgpack marker {b:#x}")


def pack(v):
    if v is None:
        return b"\xc0"
    if v is True or v is False:
        return b"\xc3" if v else b"\xc2"
    if isinstance(v, int) and 0 <= v <= 0x7F:
        return bytes([v])
    if isinstance(v, int):
        return b"\xd3" + v.to_bytes(8, "big", signed=True)
    if isinstance(v, str):
        raw = v.encode()
        if len(raw) <= 31:
            return bytes([0xA0 | len(raw)]) + raw
        return b"\xdb" + len(raw).to_bytes(4, "big") + raw
    if isinstance(v, bytes):
        return b"\xc6" + len(v).to_bytes(4, "big") + v
    if isinstance(v, dict):
        out = b"\xdf" + len(v).to_bytes(4, "big")
        for k, x in v.items():
            out += pack(k) + pack(x)
        return out
    if isinstance(v, list):
        return b"\xdd" + len(v).to_bytes(4, "big") + b"".join(pack(x) for x in v)
    raise TypeError(type(v))


def listen(hostport):
    host, port = hostport.rsplit(":", 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, int(port)))
    s.listen(64)
    return s


def serve_ret(name, conn):
    lock = threading.Lock()

    def send(head, body):
        data = pack({"head": head, "body": body})
        with lock:
            try:
                conn.sendall(data)
            except OSError:
                pass

    def job(head, seconds):
        time.sleep(seconds)
        send(head, f"{name}:job")

    buf = b""
    while True:
        try:
            chunk = conn.recv(65536)
        except OSError:
            break
        if not chunk:
            break
        buf += chunk
        while buf:
            try:
                msg, used = unpack(buf)
            except Incomplete:
                break
            buf = buf[used:]
            head, body = msg.get("head", {}), msg.get("body")
            if isinstance(body, dict) and isinstance(body.get("load"), dict) \
                    and body["load"].get("cmd") == "ping":
                send(head, body["load"])
            elif isinstance(body, str) and body.startswith("job"):
                parts = body.split()
                seconds = float(parts[1]) if len(parts) > 1 else 0.0
                threading.Thread(target=job, args=(head, seconds), daemon=True).start()
            else:
                send(head, "bad load")
    conn.close()


def accept_loop(sock, handler):
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=handler, args=(conn,), daemon=True).start()


def hold(conn):
    try:
        while conn.recv(65536):
            pass
    except OSError:
        pass
    conn.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--publish", required=True, help="HOST:PORT")
    ap.add_argument("--ret", required=True, help="HOST:PORT")
    args = ap.parse_args()
    pub, ret = listen(args.publish), listen(args.ret)
    threading.Thread(target=accept_loop, args=(pub, hold), daemon=True).start()
    threading.Thread(target=accept_loop, args=(ret, lambda c: serve_ret(args.name, c)),
                     daemon=True).start()
    print("ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
