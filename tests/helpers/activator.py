#!/usr/bin/env python3
"""A minimal socket activator, as systemd's .socket units do it, for salt-sidecar's tests.

Binds the listening sockets itself and keeps them open for its whole life, then runs the
command with them as fds 3, 4, ... and LISTEN_FDS / LISTEN_PID / LISTEN_FDNAMES set (the
sd_listen_fds(3) protocol). On SIGUSR1 it SIGKILLs the command and starts it again at once
(a crash and a restart); connections that arrive meanwhile wait in the kernel's accept queue
of the sockets it holds. Prints one JSON line per event on stdout:
  {"event": "listening"}   {"event": "started", "pid": N}   {"event": "exited", "code": C}

Usage:
  activator.py --listen 127.0.0.1:4505 --listen 127.0.0.1:4506 --fdnames publish:ret -- CMD...
(systemd-socket-activate(1) cannot do the restart: it execs the command, so the sockets
die with it.)
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time


def emit(**event):
    print(json.dumps(event), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", action="append", required=True, help="HOST:PORT to bind")
    ap.add_argument("--fdnames", default="", help="LISTEN_FDNAMES, colon-separated")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.cmd[1:] if args.cmd and args.cmd[0] == "--" else args.cmd
    socks = []
    for spec in args.listen:
        host, port = spec.rsplit(":", 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, int(port)))
        s.listen(4096)
        socks.append(s)
    emit(event="listening")

    def start():
        def in_child():
            # fds 3.. in order, inherited across exec (through high numbers first, so a
            # socket that already is fd 3 or 4 is not overwritten before it is moved).
            high = [os.dup(s.fileno()) for s in socks]
            for i, fd in enumerate(high):
                os.dup2(fd, 3 + i, inheritable=True)

        env = dict(os.environ, LISTEN_FDS=str(len(socks)))
        if args.fdnames:
            env["LISTEN_FDNAMES"] = args.fdnames
        # LISTEN_PID must be the exec'd process's pid: set it in the child, before exec.
        p = subprocess.Popen(["/bin/sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh"] + cmd,
                             env=env, preexec_fn=in_child, pass_fds=tuple(range(3, 3 + len(socks))),
                             stdin=subprocess.DEVNULL)
        emit(event="started", pid=p.pid)
        return p

    child = start()
    restart = False

    def on_usr1(_signum, _frame):
        nonlocal restart
        restart = True

    stop = False

    def on_term(_signum, _frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGUSR1, on_usr1)
    signal.signal(signal.SIGTERM, on_term)
    while not stop:
        if restart:
            restart = False
            child.kill()
            code = child.wait()
            emit(event="exited", code=code)
            child = start()
        if child.poll() is not None:
            emit(event="exited", code=child.returncode)
            break
        time.sleep(0.02)
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
    sys.exit(0)


if __name__ == "__main__":
    main()
