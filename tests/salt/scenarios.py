#!/usr/bin/env python3
"""Real-Salt scenarios for salt-sidecar (issue 3), built on harness.py.

Every scenario runs real ``salt-master`` / ``salt-minion`` processes of one Salt
release from a venv (``$SALT_SIDECAR_VENV``: Salt 3008 of ``scripts/test-deps`` by
default, or one of ``scripts/salt-venv VERSION``) on loopback: masters A = 127.0.0.2 and
B = 127.0.0.3 (ports 4505/4506), the minion ``m1`` with ``master: 127.0.0.1``,
and ``salt-sidecar run`` listening on 127.0.0.1:4505/4506 (admin 127.0.0.1:9464).
Labs use fixed addresses, so scenarios run one at a time: a run holds the
lock file ``$TMPDIR/salt-sidecar-salt-labs.lock`` (harness.lab_lock) from start to end.

Scenarios (``scenarios.py list``), one JSON line each from ``run``:

  sidecar_{zeromq,tcp}_crash    SIGKILL A; seconds from the kill to the first
                                test.ping return through B (harness pinger:
                                one LocalClient on B publishing every 0.5 s)
  sidecar_zeromq_crash_alive30  the same with the sidecar's master_alive_interval 30
  sidecar_zeromq_crash_reauth10 the same with random_reauth_delay 10 (the fleet jitter)
  sidecar_{zeromq,tcp}_frozen   SIGSTOP A (hung master: TCP handshakes still complete)
  native_*, haproxy_*           the same measurement without the sidecar: the minion
                                with master: [A, B], master_type: failover,
                                master_alive_interval 1; or HAProxy (A, B backup)
  failback                      crash A, stream of test.arg jobs, restart A; the sidecar
                                fails back after master_failback_interval; every job's
                                return is looked up in the job caches
  native_failback               failback without the sidecar: the minion's own
                                master_failback (interval 5 s), the same job stream
  graceful_restart              a planned restart while the stream runs: pause the
                                stream until nothing is in flight, SIGTERM A, resume
                                (on B), start A again (the stream ends on A)
  failback_tcp, graceful_restart_tcp
                                the same two with transport tcp: A restarts under
                                the sidecar's default `ping` probe
  crash_stream                  SIGKILL A during a stream of 50 test.arg jobs (on A until
                                it dies, then on B): returns lost, misrouted, duplicated,
                                and lost to the crash (published by A before the kill,
                                not in A's cache: no setup can save those); kill -> first
                                test.ping through B
  native_crash_stream           the same with Salt's own failover (NativeLab's minion)
  switch_events                 SIGKILL A, minion idle (issue 23): kill -> first test.ping
                                through B, the moved publish session's close, the window
                                of refused reconnects, the minion's event lines, and the
                                deafness (close -> first test.ping through B)
  enroll                        a minion whose key is accepted nowhere; `salt-sidecar
                                enroll` pins it to each master, the test accepts the
                                key as it appears; no master is stopped
  shuffle                       20 sidecars (m00..m19, master_shuffle: true), 3
                                stand-in masters: choice, spread, restart, kill one
  sidecar_{zeromq,tcp}_mute     A made mute: only its MWorker processes SIGSTOPped, so it
                                completes every handshake and answers nothing (checked
                                with a direct clear `ping`); then the minion's next
                                `salt-call test.ping`. `seconds`: from that call's first
                                ret connection to the first test.ping return through B;
                                the sidecar's ret_answer_timeout is 2 s (tcp: probe tcp,
                                so only the passive path sees it)
  native_zeromq_mute            the same with Salt's own failover (seconds from the
                                salt-call's start; None: B never answered within --cap)

Usage::

    scenarios.py list
    scenarios.py run NAME[:ROUNDS] [NAME...] [--rounds N] [--sidecar PATH] [--keep] [--verbose]
                     [--salt-reconnect]

``--salt-reconnect``: the minions keep Salt's default reconnect settings (the version
matrix of tests/salt_e2e.rs); otherwise they get harness.FAST_MINION_DEFAULTS' short
ZeroMQ reconnects. Every JSON line names the Salt release (``salt``) and which
(``reconnect``). Every scenario runs on every release from 2019.2.8 (Python 3.6): the
venv-side helpers, harness' pinger and jobstream.py's job stream (failback,
graceful_restart), are kept 3.6-compatible.

Needs root (the labs run masters and minions as root) and the venv
(${SALT_SIDECAR_VENV:-/var/cache/salt-sidecar/venv}); exits 2 without them.
The job stream runs as ``<venv>/bin/python jobstream.py _jobstream`` (it imports salt);
``scenarios.py _jobstream`` / ``_jobcache`` are the same helpers, kept as subcommands.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

sys.dont_write_bytecode = True  # no __pycache__ next to the harness
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402
import jobstream  # noqa: E402
from harness import A_IP, B_IP, SaltLab  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
ADMIN = "127.0.0.1:9464"


def admin_socket(listen: str = "127.0.0.1") -> str:
    """The admin socket (commands) of the sidecar listening on `listen`."""
    return f"/tmp/salt-sidecar-e2e/admin-{listen}.sock"
MINION = "m1"
FRONT_READY = (("127.0.0.1", 4505), ("127.0.0.1", 4506))
LABEL_TO_NAME = {A_IP: "A", B_IP: "B"}


def log(msg: str) -> None:
    print(f"[scenarios {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median(values: Sequence[Optional[float]]) -> Optional[float]:
    """Median with None (no answer within the cap) ranked above every number."""
    inf = float("inf")
    v = sorted(inf if x is None else x for x in values)
    if not v:
        return None
    m = statistics.median(v)
    return None if m == inf else round(m, 3)


def default_sidecar() -> str:
    return os.environ.get("SALT_SIDECAR_BIN") or os.path.join(ROOT, "target", "release", "salt-sidecar")


# ---------------------------------------------------------------------- sidecar helpers
def sidecar_config(transport: str = "zeromq", alive: int = 1, reauth: int = 0,
                   failback_interval: int = 5, masters: Sequence[str] = (A_IP, B_IP),
                   mid: str = MINION, listen: str = "127.0.0.1", admin: str = ADMIN,
                   shuffle: bool = False, drain_timeout: str = "60s") -> Dict[str, Any]:
    """The sidecar config of the labs (the brief's): both masters, alive 1 s,
    no reconnect jitter, connect_timeout 1 s; probe zmtp, or for transport tcp
    the default probe (ping)."""
    cfg: Dict[str, Any] = {
        "master": list(masters),
        "master_type": "failover",
        "master_alive_interval": alive,
        "master_failback": True,
        "master_failback_interval": failback_interval,
        "random_reauth_delay": reauth,
        "master_shuffle": shuffle,
        "id": mid,
    }
    if transport == "tcp":
        cfg["transport"] = "tcp"
    cfg["sidecar"] = {"listen": listen, "admin": admin, "admin_socket": admin_socket(listen),
                      "connect_timeout": "1s",
                      "drain_timeout": drain_timeout,
                      # ZeroMQ sessions move to the new master instead of being cut: what makes
                      # minions before 3007 fail over fast with Salt's default reconnect settings
                      "move_sessions": True}
    if transport != "tcp":
        cfg["sidecar"]["probe"] = "zmtp"
    return cfg


def write_sidecar_config(path: str, cfg: Dict[str, Any]) -> str:
    with open(path, "w") as f:
        f.write(harness.to_yaml(cfg))
    return path


def status(admin: str = ADMIN, timeout: float = 2.0) -> Optional[Dict[str, Any]]:
    """The sidecar's /status JSON, or None if it does not answer."""
    return jobstream.sidecar_status(admin, timeout)


def active_of(st: Optional[Dict[str, Any]]) -> Optional[str]:
    return st.get("active") if st else None


def wait_status(pred: Callable[[Dict[str, Any]], bool], timeout: float, admin: str = ADMIN,
                every: float = 0.05) -> Tuple[Optional[Dict[str, Any]], Optional[float]]:
    """Polls /status until pred holds; returns (status, time.monotonic()) or (last, None)."""
    end = time.monotonic() + timeout
    st = None
    while time.monotonic() < end:
        st = status(admin)
        if st is not None and pred(st):
            return st, time.monotonic()
        time.sleep(every)
    return st, None


_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z\s+\w+\s+(\S+): (.*)$")


def sidecar_events(path: str) -> List[Dict[str, Any]]:
    """The sidecar's decision lines (switched master / master is up|down) with Unix times."""
    out = []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                m = _TS.match(line.strip())
                if not m:
                    continue
                msg = m.group(3)
                if not ("switched master" in msg or "master is " in msg or "every master is down" in msg
                        or "admin:" in msg or "publish session closed after a switch" in msg
                        or "publish connections accepted again" in msg):
                    continue
                ts = m.group(1)
                if "." in ts:
                    head, frac = ts.split(".")
                    ts = head + "." + (frac + "000000")[:6]
                t = datetime.datetime.fromisoformat(ts).replace(tzinfo=datetime.timezone.utc).timestamp()
                out.append({"unix": t, "msg": msg})
    except OSError:
        pass
    return out


def mono_to_unix(t_mono: float) -> float:
    return time.time() - (time.monotonic() - t_mono)


def first_event(events: List[Dict[str, Any]], after_unix: float, *parts: str) -> Optional[float]:
    for e in events:
        if e["unix"] >= after_unix - 0.05 and all(p in e["msg"] for p in parts):
            return e["unix"]
    return None


# ---------------------------------------------------------------------- context
class Ctx:
    """What every scenario gets: the sidecar binary, a work root, flags."""

    def __init__(self, sidecar: str, workroot: str, keep: bool = False, verbose: bool = False,
                 log_level: str = "info", stream: Optional[Dict[str, Any]] = None):
        self.sidecar = sidecar
        self.workroot = workroot
        self.keep = keep
        self.verbose = verbose
        self.log_level = log_level
        self.stream = stream or {}  # JobStream overrides: interval, max_inflight, count

    def workdir(self, prefix: str) -> str:
        # short: the minion's Unix sockets live under it (sun_path is 108 bytes)
        return tempfile.mkdtemp(prefix=prefix[:20] + "-", dir=self.workroot)

    def done(self, workdir: str, ok: bool) -> Optional[str]:
        """Removes a round's files unless it failed or --keep; returns the path kept."""
        if ok and not self.keep:
            shutil.rmtree(workdir, ignore_errors=True)
            return None
        return workdir


# ---------------------------------------------------------------------- failover rounds
FAILOVER_MODES = {
    # name: (transport, front, signal, sidecar config overrides, minion config)
    "sidecar_zeromq_crash": ("zeromq", "sidecar", signal.SIGKILL, {}),
    "sidecar_zeromq_crash_alive30": ("zeromq", "sidecar", signal.SIGKILL, {"alive": 30}),
    "sidecar_zeromq_crash_reauth10": ("zeromq", "sidecar", signal.SIGKILL, {"reauth": 10}),
    "sidecar_tcp_crash": ("tcp", "sidecar", signal.SIGKILL, {}),
    "sidecar_zeromq_frozen": ("zeromq", "sidecar", signal.SIGSTOP, {}),
    "sidecar_tcp_frozen": ("tcp", "sidecar", signal.SIGSTOP, {}),
    "native_zeromq_crash": ("zeromq", "native", signal.SIGKILL, {}),
    "native_zeromq_crash_alive30": ("zeromq", "native", signal.SIGKILL, {"alive": 30}),
    "native_tcp_crash": ("tcp", "native", signal.SIGKILL, {}),
    "native_zeromq_frozen": ("zeromq", "native", signal.SIGSTOP, {}),
    "native_tcp_frozen": ("tcp", "native", signal.SIGSTOP, {}),
    "haproxy_zeromq_crash": ("zeromq", "haproxy", signal.SIGKILL, {}),
    "haproxy_tcp_crash": ("tcp", "haproxy", signal.SIGKILL, {}),
    "haproxy_zeromq_frozen": ("zeromq", "haproxy", signal.SIGSTOP, {}),
    "haproxy_tcp_frozen": ("tcp", "haproxy", signal.SIGSTOP, {}),
}


def failover_round(ctx: Ctx, name: str, cap: float) -> Dict[str, Any]:
    """One fresh lab through harness.measure_failover (the same code for every front)."""
    transport, front, sig, over = FAILOVER_MODES[name]
    workdir = ctx.workdir(name)
    if front == "native":
        minion = {"master": [A_IP, B_IP], "master_type": "failover",
                  "master_alive_interval": over.get("alive", 1)}
        argv: Any = None
    else:
        minion = {"master": "127.0.0.1"}
        argv = "haproxy"
        if front == "sidecar":
            # The recommended minion config (docs/salt-semantics.md): Salt's alive
            # check stays on, so its events fire through the sidecar.
            minion["master_alive_interval"] = over.get("alive", 1)
        if front == "sidecar":
            cfg = sidecar_config(transport, alive=over.get("alive", 1), reauth=over.get("reauth", 0))
            path = write_sidecar_config(os.path.join(workdir, "sidecar.yaml"), cfg)
            argv = [ctx.sidecar, "run", "--config", path]
    res = harness.measure_failover(transport, minion, front=argv, front_ready=FRONT_READY, sig=sig,
                                   cap=cap, check_job=True, workdir=workdir, quiet=not ctx.verbose)
    if front == "sidecar" and res.get("kill_unix"):
        ev = sidecar_events(os.path.join(workdir, "front.log"))
        t = first_event(ev, res["kill_unix"], "switched master", 'reason="failover"')
        res["sidecar_switch_s"] = None if t is None else round(t - res["kill_unix"], 3)
    # A frozen master that is never failed over from is the expected outcome for some
    # fronts: a round "fails" only on errors, not on a timeout.
    ok = "error" not in res and (res["seconds"] is not None or sig == signal.SIGSTOP)
    if ok and res["seconds"] is None:
        res.pop("workdir", None)  # a frozen master never failed over from: the expected outcome
    kept = ctx.done(workdir, ok and "workdir" not in res)
    if kept:
        res["workdir"] = kept
    res.pop("kill_unix", None)
    return res


# ---------------------------------------------------------------------- lab with the sidecar
class SidecarLab:
    """A SaltLab with masters A and B, the sidecar in front and minion m1 (``master: 127.0.0.1``)."""

    def __init__(self, ctx: Ctx, prefix: str, transport: str = "zeromq", preseed: bool = True,
                 mid: str = MINION, sidecar_over: Optional[Dict[str, Any]] = None,
                 sidecar_args: Sequence[str] = ()):
        """sidecar_args: more arguments of ``salt-sidecar run`` (e.g. a log level)."""
        self.ctx = ctx
        self.sidecar_args = list(sidecar_args)
        self.mid = mid
        self.workdir = ctx.workdir(prefix)
        self.lab = SaltLab(self.workdir, transport=transport, quiet=not ctx.verbose, log_level=ctx.log_level)
        self.lab.add_master("A", A_IP)
        self.lab.add_master("B", B_IP)
        # The recommended minion config: `master_alive_interval` kept (the sidecar's), so
        # Salt's own alive check runs and its events fire (docs/salt-semantics.md).
        alive = (sidecar_over or {}).get("alive", 1)
        self.lab.add_minion(mid, {"master": "127.0.0.1", "master_alive_interval": alive}, preseed=preseed)
        cfg = sidecar_config(transport, mid=mid, **(sidecar_over or {}))
        self.config = write_sidecar_config(os.path.join(self.workdir, "sidecar.yaml"), cfg)
        self.sidecar_log = os.path.join(self.workdir, "sidecar.log")

    def start(self, wait_ping: bool = True) -> float:
        """Masters, sidecar, minion; returns seconds until the first ping through A (or 0)."""
        self.lab.start_masters()
        self.lab.start_proc("sidecar", [self.ctx.sidecar, "run", "--config", self.config, *self.sidecar_args],
                            list(FRONT_READY))
        st, t = wait_status(lambda s: s.get("active") == A_IP, 15)
        if t is None:
            raise RuntimeError(f"sidecar never selected A: {st}")
        self.lab.start_minion(self.mid)
        if not wait_ping:
            return 0.0
        first = self.lab.wait_ping("A", self.mid, 90)
        if first is None:
            raise RuntimeError("minion never answered through master A")
        return round(first, 2)

    def events(self) -> List[Dict[str, Any]]:
        return sidecar_events(self.sidecar_log)

    def close(self, ok: bool) -> Optional[str]:
        if not ok:
            print(f"---- round failed; files kept in {self.workdir}", file=sys.stderr)
            self.lab.print_logs(30)
        self.lab.stop_all(grace=1.0)
        return self.ctx.done(self.workdir, ok)


# ---------------------------------------------------------------------- job stream
class JobStream:
    """A running ``jobstream.py _jobstream`` (venv python): test.arg jobs on whichever
    master the minion is on, until ``segments`` were seen; result() -> its summary."""

    def __init__(self, sl: Any, segments: str, count: int = 50, interval: float = 0.25,
                 min_last: int = 10, deadline: float = 150.0, max_inflight: int = 2,
                 locate: str = "sidecar"):
        """sl: a SidecarLab (or anything with lab, ctx, workdir, mid). locate: how to tell
        which master the minion is on: "sidecar" (its /status) or "sockets" (the minion's
        own established connection to a master's publish port: native failover)."""
        lab = sl.lab
        # While this file exists the stream issues no job; once nothing is in flight
        # it creates <pause_file>.idle (see pause()).
        self.pause_file = os.path.join(sl.workdir, "jobstream.pause")
        # Written by dead(): a master killed during the stream (crash_stream_round).
        self.dead_file = os.path.join(sl.workdir, "jobstream.dead")
        self.dying_file = os.path.join(sl.workdir, "jobstream.dying")
        over = sl.ctx.stream
        count = over.get("count", count)
        interval = over.get("interval", interval)
        max_inflight = over.get("max_inflight", max_inflight)
        masters = {n: {"conf": m.confdir, "label": m.ip} for n, m in lab.masters.items()}
        argv = [os.path.join(lab.bin, "python"), os.path.abspath(jobstream.__file__), "_jobstream",
                "--masters", json.dumps(masters), "--admin", ADMIN, "--id", sl.mid,
                "--count", str(count), "--interval", str(interval), "--segments", segments,
                "--min-last", str(min_last), "--deadline", str(deadline), "--max-inflight", str(max_inflight),
                "--pause-file", self.pause_file, "--locate", locate, "--dead-file", self.dead_file,
                "--dying-file", self.dying_file]
        self.deadline = deadline
        self.log = os.path.join(sl.workdir, "jobstream.log")
        with open(self.log, "ab") as err:
            self.popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True,
                                          env=lab._env(), stdin=subprocess.DEVNULL, start_new_session=True)
        import select
        rd, _, _ = select.select([self.popen.stdout], [], [], 60)
        line = self.popen.stdout.readline() if rd else ""
        if not line.startswith('{"ready"'):
            self.kill()
            raise RuntimeError(f"job stream did not start: {line!r}: {harness.tail(self.log, 20)}")
        self.started = json.loads(line)["ready"]

    def pause(self, timeout: float = 40.0) -> float:
        """Stops issuing jobs and waits until every job issued has returned (or timed
        out); returns the seconds it took."""
        t0 = time.monotonic()
        idle = self.pause_file + ".idle"
        with open(self.pause_file, "w"):
            pass
        while not os.path.exists(idle):
            if self.popen.poll() is not None or time.monotonic() - t0 > timeout:
                raise RuntimeError(f"job stream never idle after a pause: {harness.tail(self.log, 20)}")
            time.sleep(0.05)
        return time.monotonic() - t0

    def dying(self, master: str, timeout: float = 10.0) -> float:
        """Tells the stream ``master`` is about to be killed; returns once it has closed
        its event client there and stopped publishing on it (the seconds it took)."""
        t0 = time.monotonic()
        tmp = self.dying_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"master": master}, f)
        os.replace(tmp, self.dying_file)
        while not os.path.exists(self.dying_file + ".ack"):
            if self.popen.poll() is not None or time.monotonic() - t0 > timeout:
                raise RuntimeError(f"job stream never let go of {master}: {harness.tail(self.log, 20)}")
            time.sleep(0.005)
        return time.monotonic() - t0

    def dead(self, master: str, t_kill: float) -> None:
        """Tells the stream ``master`` was killed at ``t_kill`` (time.monotonic()): its
        jobs from before are looked up in the job caches but not waited for."""
        tmp = self.dead_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"master": master, "t": t_kill}, f)
        os.replace(tmp, self.dead_file)

    def resume(self) -> None:
        for p in (self.pause_file, self.pause_file + ".idle"):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass

    def result(self) -> Dict[str, Any]:
        try:
            out, _ = self.popen.communicate(timeout=self.deadline + 120)
        except subprocess.TimeoutExpired:
            self.kill()
            return {"error": "job stream hung"}
        data = SaltLab._json(out)
        return data if isinstance(data, dict) else {"error": f"job stream output: {out[-500:]!r}"}

    def kill(self) -> None:
        if self.popen.poll() is None:
            try:
                os.kill(self.popen.pid, signal.SIGUSR1)  # stack dump into the log
                time.sleep(0.5)
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(timeout=5)


def failback_round(ctx: Ctx, graceful: bool, transport: str = "zeromq") -> Dict[str, Any]:
    """Scenario 3 (crash, then A returns) or 4 (SIGTERM A, then start it), with a job stream;
    transport tcp: A restarts under the sidecar's default `ping` probe."""
    name = ("graceful_restart" if graceful else "failback") + ("_tcp" if transport == "tcp" else "")
    sl = SidecarLab(ctx, name, transport=transport)
    lab = sl.lab
    res: Dict[str, Any] = {}
    ok = False
    try:
        res["first_ping_a_s"] = sl.start()
        if not graceful:
            watch = lab.watch_ping("B", sl.mid, 60)
            t_kill = lab.kill_master("A", signal.SIGKILL)
            r = watch.result()
            res["failover_s"] = None if r.get("t_ok") is None else round(r["t_ok"] - t_kill, 3)
            if res["failover_s"] is None:
                raise RuntimeError(f"no ping through B after killing A: {r}")
            stream = JobStream(sl, segments="B,A")
            time.sleep(1.0)  # a few jobs on B first
            t_start = time.monotonic()
            lab.start_master("A")
            t_up = time.monotonic()
            res["a_start_s"] = round(t_up - t_start, 2)
        else:
            stream = JobStream(sl, segments="A,B,A")
            time.sleep(2.0)  # jobs on A first
            # A planned restart: no job in flight on A when it stops. (A return in
            # flight to a master that stops is lost with or without the sidecar: the
            # minion's main process drops what it forwards while it reconnects.)
            res["pause_s"] = round(stream.pause(), 2)
            t_stop = time.monotonic()
            lab.kill_master("A", signal.SIGTERM)  # waits until A's process group is gone
            res["a_stop_s"] = round(time.monotonic() - t_stop, 2)
            stream.resume()
            _, t_b = wait_status(lambda s: s.get("active") == B_IP, 30)
            res["switch_to_b_s"] = None if t_b is None else round(t_b - t_stop, 3)
            time.sleep(1.0)
            t_start = time.monotonic()
            lab.start_master("A")
            t_up = time.monotonic()
            res["a_start_s"] = round(t_up - t_start, 2)
        _, t_back = wait_status(lambda s: s.get("active") == A_IP, 60)
        res["failback_after_start_s"] = None if t_back is None else round(t_back - t_start, 3)
        # the failback bar counts from A listening again (its start-up is Salt's, not the sidecar's)
        res["up_to_failback_s"] = None if t_back is None else round(t_back - t_up, 3)
        js = stream.result()
        res.update(stream_verdict(js))
        # timings from the stream: first return through the other master, first through A again
        jobs = js.get("jobs", [])
        if graceful:
            on_b = [j for j in jobs if j["master"] == "B" and j.get("t_ret")]
            res["sigterm_to_first_return_b_s"] = round(min(j["t_ret"] for j in on_b) - t_stop, 3) if on_b else None
        back = [j for j in jobs if j["master"] == "A" and j.get("t_ret") and j["t_pub"] > t_start]
        res["start_to_first_return_a_s"] = round(min(j["t_ret"] for j in back) - t_start, 3) if back else None
        # includes the job stream's first publication on the fresh master A (its client, A's workers)
        res["up_to_first_return_a_s"] = round(min(j["t_ret"] for j in back) - t_up, 3) if back else None
        ev = sl.events()
        res["switches"] = [e["msg"].split("switched master ", 1)[1] for e in ev if "switched master" in e["msg"]]
        ok = (res["lost"] == 0 and res["misrouted"] == 0 and res["issued"] >= 50
              and not js.get("error") and t_back is not None)
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
    finally:
        kept = sl.close(ok)
        if kept:
            res["workdir"] = kept
    return res


class NativeLab:
    """Masters A and B and minion m1 with Salt's own failover (no sidecar), for the
    failback baseline: master [A, B], master_type failover, master_alive_interval 1,
    master_failback True, master_failback_interval 5 (the sidecar's values)."""

    def __init__(self, ctx: Ctx, prefix: str):
        self.ctx, self.mid = ctx, MINION
        self.workdir = ctx.workdir(prefix)
        self.lab = SaltLab(self.workdir, quiet=not ctx.verbose, log_level=ctx.log_level)
        self.lab.add_master("A", A_IP)
        self.lab.add_master("B", B_IP)
        self.lab.add_minion(self.mid, {"master": [A_IP, B_IP], "master_type": "failover",
                                       "master_alive_interval": 1, "master_failback": True,
                                       "master_failback_interval": 5})


def native_failback_round(ctx: Ctx) -> Dict[str, Any]:
    """Scenario 3 without the sidecar: crash A, job stream, restart A; the minion's own
    failback moves it back; every return looked up in the job caches."""
    nl = NativeLab(ctx, "native_failback")
    lab = nl.lab
    res: Dict[str, Any] = {}
    ok = False
    try:
        lab.start_masters()
        lab.start_minion(nl.mid)
        first = lab.wait_ping("A", nl.mid, 90)
        if first is None:
            raise RuntimeError("minion never answered through master A")
        res["first_ping_a_s"] = round(first, 2)
        watch = lab.watch_ping("B", nl.mid, 60)
        t_kill = lab.kill_master("A", signal.SIGKILL)
        r = watch.result()
        res["failover_s"] = None if r.get("t_ok") is None else round(r["t_ok"] - t_kill, 3)
        if res["failover_s"] is None:
            raise RuntimeError(f"no ping through B after killing A: {r}")
        stream = JobStream(nl, segments="B,A", locate="sockets")
        time.sleep(1.0)  # a few jobs on B first
        t_start = time.monotonic()
        lab.start_master("A")
        js = stream.result()
        res.update(stream_verdict(js))
        jobs = js.get("jobs", [])
        back = [j for j in jobs if j["master"] == "A" and j.get("t_ret") and j["t_pub"] > t_start]
        res["start_to_first_return_a_s"] = round(min(j["t_ret"] for j in back) - t_start, 3) if back else None
        res["failback_after_start_s"] = res["start_to_first_return_a_s"]
        ok = not js.get("error") and res["issued"] >= 50
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
    finally:
        if not ok:
            print(f"---- round failed; files kept in {nl.workdir}", file=sys.stderr)
            lab.print_logs(30)
        lab.stop_all(grace=1.0)
        kept = ctx.done(nl.workdir, ok)
        if kept:
            res["workdir"] = kept
    return res


# ---------------------------------------------------------------------- crash during a job stream
# SIGKILL A when the minion starts running the stream's 20th job: about 20 jobs on A, 30+ on B,
# and a return likely still on its way to A (the job runs, then returns, in a process of its own)
CRASH_AFTER_RUNS = 20
# A return the minion sent (or a job it had not returned) at most this long before the kill
# was in flight at the crash: longer before, the master had time to store it (a test.arg
# return is stored well within a second, a few on a loaded box): not stored, it was lost
# before the crash. (Seen with native failover on 3008: two returns sent 30 s before the
# kill never reached A.)
IN_FLIGHT_S = 5.0
# the sidecar's session lines (debug) around the kill, kept in the round's JSON
SIDECAR_SESSION_LOG = "info,salt_sidecar=debug"

_SALT_TS = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")
_SALT_LINES = (
    ("run", re.compile(r"Executing command '?test\.arg'? with jid (\d+)")),  # minion: the job starts
    ("sent", re.compile(r"Returning information for job: (\d+)")),  # minion: its return leaves
    ("got", re.compile(r"Got return from \S+ for job (\d+)")),  # master: a return arrived
)


def salt_log_lines(path: str, offset: int = 0) -> Dict[str, Dict[str, List[float]]]:
    """{kind: {jid: [Unix time, ...]}} of a Salt log file's job lines (``_SALT_LINES``,
    INFO; Salt writes local time with milliseconds), from byte ``offset``."""
    out: Dict[str, Dict[str, List[float]]] = {k: {} for k, _ in _SALT_LINES}
    try:
        with open(path, errors="replace") as f:
            f.seek(offset)
            for line in f:
                m = _SALT_TS.match(line)
                if not m:
                    continue
                for kind, rx in _SALT_LINES:
                    hit = rx.search(line)
                    if hit:
                        t = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000
                        out[kind].setdefault(hit.group(1), []).append(t)
                        break
    except OSError:
        pass
    return out


def wait_runs(path: str, n: int, timeout: float, stream: "JobStream") -> int:
    """Until the minion's log shows ``n`` distinct test.arg jobs started (the job stream's);
    returns how many it saw. Polls every 20 ms: the kill follows the n-th at once."""
    end = time.monotonic() + timeout
    pos, seen = 0, set()
    rx = _SALT_LINES[0][1]
    buf = ""
    while time.monotonic() < end:
        try:
            with open(path, errors="replace") as f:
                f.seek(pos)
                chunk = f.read()
                pos = f.tell()
        except OSError:
            chunk = ""
        buf += chunk
        lines = buf.split("\n")
        buf = lines.pop()  # a line still being written
        for line in lines:
            hit = rx.search(line)
            if hit:
                seen.add(hit.group(1))
        if len(seen) >= n:
            return len(seen)
        if stream.popen.poll() is not None:
            raise RuntimeError(f"job stream ended before the crash: {harness.tail(stream.log, 20)}")
        time.sleep(0.02)
    raise RuntimeError(f"the minion ran only {len(seen)} of {n} jobs within {timeout:.0f} s")


def crash_verdict(js: Dict[str, Any], t_kill: float, kill_unix: float, dead: str,
                  minion_log: Dict[str, Dict[str, List[float]]],
                  master_logs: Dict[str, Dict[str, Dict[str, List[float]]]]) -> Dict[str, Any]:
    """Where each job's return ended up when master ``dead`` was killed at ``t_kill``
    (time.monotonic(); ``kill_unix`` the same instant as Unix time) during the stream.

    A job counts once, first matching:
      returned_to_issuer  its return is in the job cache of the master that published it;
      lost_to_the_crash   published by the dead master before the kill, not in its cache,
                          and in flight at the kill: the minion sent its return (or, if it
                          never did, the job was published) less than IN_FLIGHT_S before
                          the kill. Its master could not take the return (the same with or
                          without the sidecar); crash_returned_elsewhere: of these, in
                          another cache;
      misrouted           in another master's cache only;
      lost                in no cache.
    duplicated: the minion ran the job more than once, or the masters got its return more
    than once (their logs' "Got return" lines, the return events on their buses, or both
    caches). Not a "Got return" of the dead master's own job before the kill that never
    reached its cache: the crash took it between the log line and the cache (seen 6 ms
    before a kill), the minion's request went unanswered, and Salt sent the return again,
    to the master it then had; stored once, it is crash_returned_elsewhere. Per job that is not plainly returned to its issuer: times relative to the kill
    (minion ran it, sent its return, each master got it)."""
    jobs = js.get("jobs", [])
    out: Dict[str, Any] = {"issued": len(jobs), "by_master": {}, "returned_to_issuer": 0, "lost_to_the_crash": 0,
                           "crash_returned_elsewhere": 0, "misrouted": 0, "lost": 0, "duplicated": 0,
                           "live_returns": sum(1 for j in jobs if j.get("t_ret")),
                           "publish_errors": js.get("publish_errors", 0),
                           "waited_for_minion_s": js.get("waited_s"), "segments": js.get("segments")}
    detail = []

    def rel(ts: List[float]) -> List[float]:
        return [round(t - kill_unix, 3) for t in ts]

    for j in jobs:
        jid = j["jid"]
        out["by_master"][j["master"]] = out["by_master"].get(j["master"], 0) + 1
        runs = minion_log["run"].get(jid, [])
        got = {n: lg["got"].get(jid, []) for n, lg in master_logs.items()}
        if j["master"] == dead and not j.get("cache_issuer"):
            # got by the dead master before the kill, never stored: the crash took it
            got_counted = dict(got, **{dead: [t for t in got.get(dead, []) if t >= kill_unix]})
        else:
            got_counted = got
        events = j.get("ret_events") or {}
        dup = (len(runs) > 1 or sum(len(v) for v in got_counted.values()) > 1 or sum(events.values()) > 1
               or (bool(j.get("cache_issuer")) and bool(j.get("cache_other"))))
        out["duplicated"] += dup
        sent = minion_log["sent"].get(jid, [])
        # when the return was last on its way: sent by the minion, else the publication
        on_way = max(sent) - kill_unix if sent else j["t_pub"] - t_kill
        crash = (j["master"] == dead and j["t_pub"] < t_kill and not j.get("cache_issuer")
                 and on_way > -IN_FLIGHT_S)
        if j.get("cache_issuer"):
            out["returned_to_issuer"] += 1
            kind = "returned_to_issuer"
        elif crash:
            out["lost_to_the_crash"] += 1
            out["crash_returned_elsewhere"] += bool(j.get("cache_other"))
            kind = "lost_to_the_crash"
        elif j.get("cache_other"):
            out["misrouted"] += 1
            kind = "misrouted"
        else:
            out["lost"] += 1
            kind = "lost"
        if kind != "returned_to_issuer" or dup:
            detail.append({"i": j["i"], "master": j["master"], "jid": jid, "kind": kind, "duplicated": dup,
                           "published_s": round(j["t_pub"] - t_kill, 3),
                           "live_return_s": None if not j.get("t_ret") else round(j["t_ret"] - t_kill, 3),
                           "ret_events": events, "minion_ran_s": rel(runs),
                           "minion_sent_s": rel(sent),
                           "master_got_s": {n: rel(v) for n, v in got.items() if v},
                           "cache_issuer": j.get("cache_issuer"), "cache_other": j.get("cache_other")})
    if detail:
        out["jobs_of_note"] = detail[:12]
    if js.get("error"):
        out["stream_error"] = js["error"]
    return out


def crash_stream_round(ctx: Ctx, native: bool) -> Dict[str, Any]:
    """SIGKILL of A while a stream of test.arg jobs runs: jobs on A until it dies, then on
    B (segments A,B, 50+ jobs, 10+ on B), through the sidecar or with Salt's own failover
    (NativeLab: master [A, B], master_type failover, the sidecar's intervals). A dies when
    the minion starts the stream's CRASH_AFTER_RUNS-th job. Measures kill -> first
    test.ping through B (harness pinger, as the crash rows) and kill -> first stream return
    through B, and counts returns as crash_verdict does (the job caches of A and B, which
    outlive A's process; the minion's and masters' logs)."""
    name = "native_crash_stream" if native else "crash_stream"
    host: Any = (NativeLab(ctx, name) if native
                 else SidecarLab(ctx, name, sidecar_args=["--log-level", SIDECAR_SESSION_LOG]))
    lab = host.lab
    mid = host.mid
    res: Dict[str, Any] = {}
    ok = False
    stream: Optional[JobStream] = None
    try:
        if native:
            lab.start_masters()
            lab.start_minion(mid)
            first = lab.wait_ping("A", mid, 90)
            if first is None:
                raise RuntimeError("minion never answered through master A")
            res["first_ping_a_s"] = round(first, 2)
        else:
            res["first_ping_a_s"] = host.start()
        # started first: the pinger's and the stream's start-up is not in the measure
        watch = lab.watch_ping("B", mid, 180)
        stream = JobStream(host, segments="A,B", locate="sockets" if native else "sidecar")
        t0 = time.monotonic()
        # generous: a return lost before the crash holds the stream for its job timeout (30 s)
        res["runs_before_kill"] = wait_runs(lab.minions[mid].log_file, CRASH_AFTER_RUNS, 150, stream)
        res["stream_let_go_s"] = round(stream.dying("A"), 3)
        t_kill = lab.kill_master("A", signal.SIGKILL)
        stream.dead("A", t_kill)
        res["stream_to_kill_s"] = round(t_kill - t0, 2)
        kill_unix = mono_to_unix(t_kill)
        r = watch.result()
        res["failover_s"] = None if r.get("t_ok") is None else round(r["t_ok"] - t_kill, 3)
        js = stream.result()
        minion_log = salt_log_lines(lab.minions[mid].log_file)
        master_logs = {n: salt_log_lines(m.log_file) for n, m in lab.masters.items()}
        res.update(crash_verdict(js, t_kill, kill_unix, "A", minion_log, master_logs))
        on_b = [j["t_ret"] for j in js.get("jobs", []) if j["master"] == "B" and j.get("t_ret")]
        res["first_return_b_s"] = round(min(on_b) - t_kill, 3) if on_b else None
        if not native:
            ev = sidecar_events(host.sidecar_log)
            t = first_event(ev, kill_unix, "switched master")
            res["sidecar_switch_s"] = None if t is None else round(t - kill_unix, 3)
            res["sidecar_after_kill"] = sidecar_session_lines(host.sidecar_log, kill_unix - 0.5, kill_unix + 5)
        ok = (not js.get("error") and res["issued"] >= 50 and res["failover_s"] is not None
              and (native or (res["lost"] == 0 and res["misrouted"] == 0 and res["duplicated"] == 0)))
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
    finally:
        if stream is not None:
            stream.kill()  # a no-op once it has ended; on SIGTERM (SystemExit) too
        if native:
            if not ok:
                print(f"---- round failed; files kept in {host.workdir}", file=sys.stderr)
                lab.print_logs(30)
            lab.stop_all(grace=1.0)
            kept = ctx.done(host.workdir, ok)
        else:
            kept = host.close(ok)
        if kept:
            res["workdir"] = kept
    return res


def sidecar_session_lines(path: str, since_unix: float, until_unix: float, most: int = 20) -> List[str]:
    """The sidecar's log lines (messages with their fields) between two Unix times that
    concern sessions and switches: what it did with the minion's connections at a crash."""
    out = []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                m = _TS.match(line.strip())
                if not m or not any(w in m.group(3) for w in ("session", "switched", "master is")):
                    continue
                ts = m.group(1)
                if "." in ts:
                    head, frac = ts.split(".")
                    ts = head + "." + (frac + "000000")[:6]
                t = datetime.datetime.fromisoformat(ts).replace(tzinfo=datetime.timezone.utc).timestamp()
                if since_unix <= t <= until_unix:
                    out.append(f"{t - since_unix - 0.5:+.3f} {m.group(3)}")
    except OSError:
        pass
    return out[:most]


def stream_verdict(js: Dict[str, Any]) -> Dict[str, Any]:
    """Counts from a job stream's summary: where each job's return ended up."""
    jobs = js.get("jobs", [])
    out = {
        "issued": len(jobs),
        "by_master": {},
        "returned_to_issuer": sum(1 for j in jobs if j.get("cache_issuer")),
        "misrouted": sum(1 for j in jobs if not j.get("cache_issuer") and j.get("cache_other")),
        "lost": sum(1 for j in jobs if not j.get("cache_issuer") and not j.get("cache_other")),
        "live_returns": sum(1 for j in jobs if j.get("t_ret")),
        "publish_errors": js.get("publish_errors", 0),
        "waited_for_minion_s": js.get("waited_s"),
        "segments": js.get("segments"),
    }
    for j in jobs:
        out["by_master"][j["master"]] = out["by_master"].get(j["master"], 0) + 1
    bad = [{k: j.get(k) for k in ("i", "master", "jid", "cache_issuer", "cache_other", "t_pub")}
           for j in jobs if not j.get("cache_issuer")]
    if bad:
        out["not_on_issuer"] = bad[:10]
    if js.get("error"):
        out["stream_error"] = js["error"]
    return out


# ---------------------------------------------------------------------- enrollment
def enroll_round(ctx: Ctx) -> Dict[str, Any]:
    """Scenario 5: a new minion, key accepted nowhere; `salt-sidecar enroll` walks A and B."""
    mid = "m-new"
    sl = SidecarLab(ctx, "enroll", preseed=False, mid=mid)
    lab = sl.lab
    # As in any fleet, each master has another accepted minion, so a job targeted '*' is
    # published (a master publishes nothing when no accepted key matches): accept_nudged.
    _, other_pub = lab.gen_keypair("minion:fleet-other")
    for m in lab.masters.values():
        lab._write(os.path.join(m.pki, "minions", "fleet-other"), other_pub)
    res: Dict[str, Any] = {}
    ok = False
    enroll = None
    try:
        sl.start(wait_ping=False)
        pids = {n: m.proc.pid for n, m in lab.masters.items() if m.proc}
        # the minion authenticates through the sidecar to A: its key shows up as pending there
        t0 = time.monotonic()
        end = t0 + 60
        while mid not in lab.list_keys("A").get("minions_pre", []):
            if time.monotonic() > end:
                raise RuntimeError(f"key of {mid} never pending on A: {lab.list_keys('A')}")
            time.sleep(0.5)
        res["pending_on_a_s"] = round(time.monotonic() - t0, 2)
        res["keys_before"] = {n: _key_state(lab, n, mid) for n in lab.masters}
        elog = os.path.join(sl.workdir, "enroll.log")
        t_enroll = time.monotonic()
        enroll = subprocess.Popen([ctx.sidecar, "enroll", "--socket", admin_socket(), "--per-master-timeout", "120s"],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
        accepted: List[Dict[str, Any]] = []
        lines: List[str] = []
        assert enroll.stdout is not None
        for line in enroll.stdout:
            lines.append(line.rstrip("\n"))
            if ctx.verbose:
                log(f"enroll| {line.rstrip()}")
            m = re.search(r"accept the key of (\S+) on (\S+)", line)
            if m:
                label = m.group(2).rstrip(".:,")
                master = LABEL_TO_NAME.get(label)
                if master is None or m.group(1) != mid:
                    raise RuntimeError(f"enroll asked for an unknown key/master: {line!r}")
                t_ask = time.monotonic()
                nudges = accept_nudged(lab, master, mid, timeout=90)
                accepted.append({"master": master, "asked_at_s": round(t_ask - t_enroll, 2),
                                 "accepted_after_s": round(time.monotonic() - t_ask, 2), "nudges": nudges})
        rc = enroll.wait(timeout=30)
        with open(elog, "w") as f:
            f.write("\n".join(lines) + "\n")
        res["enroll_rc"] = rc
        res["enroll_s"] = round(time.monotonic() - t_enroll, 2)
        res["accepted"] = accepted
        res["enroll_output"] = lines[-6:]
        res["keys_after"] = {n: _key_state(lab, n, mid) for n in lab.masters}
        st = status()
        res["pinned_after"] = st.get("pinned") if st else "<no status>"
        res["active_after"] = active_of(st)
        res["masters_never_stopped"] = all(
            lab.masters[n].proc is not None and lab.masters[n].proc.alive() and lab.masters[n].proc.pid == p
            for n, p in pids.items())
        # the enrolled minion works through the master it is on now
        t = lab.wait_ping(LABEL_TO_NAME.get(res["active_after"] or "", "A"), mid, 60)
        res["ping_after_s"] = None if t is None else round(t, 2)
        ok = (rc == 0 and all(v == "accepted" for v in res["keys_after"].values())
              and res["pinned_after"] is None and res["masters_never_stopped"] and t is not None
              and sorted(a["master"] for a in accepted) == ["A", "B"])
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
    finally:
        if enroll is not None and enroll.poll() is None:
            os.killpg(enroll.pid, signal.SIGKILL)
            enroll.wait(timeout=5)
        kept = sl.close(ok)
        if kept:
            res["workdir"] = kept
    return res


def accept_nudged(lab: SaltLab, master: str, mid: str, timeout: float = 90.0, nudge_after: float = 10.0) -> int:
    """lab.accept_key, but while the key is not pending on ``master`` after ``nudge_after`` s,
    runs a job there every 5 s, as `enroll` tells the operator to: a ZeroMQ minion before
    Salt 3007 does not sign in to a master the sidecar moved it to until a publication from
    that master reaches it (it cannot decrypt it and re-authenticates); 3007 and later sign
    in at once. Returns the number of jobs run."""
    t0 = time.monotonic()
    end, next_nudge, nudges = t0 + timeout, t0 + nudge_after, 0
    while time.monotonic() < end:
        keys = lab.list_keys(master)
        if mid in keys.get("minions", []) or mid in keys.get("minions_pre", []):
            break
        if time.monotonic() >= next_nudge:
            lab.salt(master, "*", "test.ping", "--timeout", "1", timeout=30)
            nudges += 1
            next_nudge = time.monotonic() + 5
        time.sleep(0.5)
    lab.accept_key(master, mid, timeout=max(1.0, end - time.monotonic()))
    return nudges


def _key_state(lab: SaltLab, master: str, mid: str) -> str:
    keys = lab.list_keys(master)
    for state, k in (("accepted", "minions"), ("pending", "minions_pre"), ("rejected", "minions_rejected"),
                     ("denied", "minions_denied")):
        if mid in keys.get(k, []):
            return state
    return "absent"


# ---------------------------------------------------------------------- shuffle
SHUFFLE_MASTERS = {"X": "127.0.0.2", "Y": "127.0.0.3", "Z": "127.0.0.4"}


def shuffle_round(ctx: Ctx, n: int = 20) -> Dict[str, Any]:
    """Scenario 6: n sidecars with master_shuffle: true in front of 3 stand-in masters."""
    workdir = ctx.workdir("shuffle")
    lab = SaltLab(workdir, quiet=not ctx.verbose)  # only used to run and stop processes
    res: Dict[str, Any] = {"sidecars": n}
    ok = False
    py = os.path.join(lab.bin, "python")
    helper = os.path.join(ROOT, "tests", "helpers", "zmq_master.py")
    sidecars = {}
    try:
        for name, ip in SHUFFLE_MASTERS.items():
            lab.start_proc(f"master-{name}", [py, helper, "--name", name, "--publish", f"{ip}:4505",
                                              "--ret", f"{ip}:4506", "--tick", "1"],
                           [(ip, 4505), (ip, 4506)], wait=30)
        for i in range(n):
            mid = f"m{i:02d}"
            ip = f"127.0.1.{i + 1}"
            cfg = sidecar_config(masters=list(SHUFFLE_MASTERS.values()), mid=mid, listen=ip,
                                 admin=f"{ip}:9464", shuffle=True)
            sidecars[mid] = (ip, write_sidecar_config(os.path.join(workdir, f"{mid}.yaml"), cfg))

        def start_all() -> None:
            for mid, (ip, path) in sidecars.items():
                lab.start_proc(f"sidecar-{mid}", [ctx.sidecar, "run", "--config", path])
            for mid, (ip, _) in sidecars.items():
                harness.wait_ports([(ip, 4505), (ip, 4506), (ip, 9464)], 20)

        def choices(timeout: float = 20) -> Dict[str, Optional[str]]:
            out = {}
            for mid, (ip, _) in sidecars.items():
                st, _t = wait_status(lambda s: s.get("active") is not None, timeout, admin=f"{ip}:9464")
                out[mid] = active_of(st)
            return out

        t0 = time.monotonic()
        start_all()
        first = choices()
        res["start_s"] = round(time.monotonic() - t0, 2)
        label = {ip: name for name, ip in SHUFFLE_MASTERS.items()}
        res["choice"] = {mid: label.get(a or "", None) for mid, a in first.items()}
        spread = {name: sum(1 for a in first.values() if a == ip) for name, ip in SHUFFLE_MASTERS.items()}
        res["spread"] = spread
        # restart every sidecar: the same choice
        for mid in sidecars:
            lab.stop_proc(f"sidecar-{mid}")
        start_all()
        again = choices()
        res["restart_same"] = sum(1 for mid in sidecars if again[mid] == first[mid])
        # kill the master most sidecars chose: only its sidecars move
        victim = max(spread, key=lambda k: (spread[k], k))
        vip = SHUFFLE_MASTERS[victim]
        res["killed"] = victim
        t_kill = time.monotonic()
        lab.extra_procs[f"master-{victim}"].send(signal.SIGKILL)
        lab.extra_procs[f"master-{victim}"].popen.wait(timeout=10)
        movers = [mid for mid in sidecars if again[mid] == vip]
        moved_at = {}
        end = t_kill + 20
        while time.monotonic() < end and len(moved_at) < len(movers):
            for mid in movers:
                if mid in moved_at:
                    continue
                a = active_of(status(f"{sidecars[mid][0]}:9464"))
                if a is not None and a != vip:
                    moved_at[mid] = time.monotonic() - t_kill
            time.sleep(0.05)
        time.sleep(2.0)  # let any wrong move show up
        after = choices()
        stayed = [mid for mid in sidecars if mid not in movers]
        res["moved"] = len(movers)
        res["moved_ok"] = sum(1 for mid in movers if after[mid] not in (None, vip))
        res["others_unchanged"] = sum(1 for mid in stayed if after[mid] == again[mid])
        res["others"] = len(stayed)
        res["moved_to"] = {name: sum(1 for mid in movers if after[mid] == ip)
                           for name, ip in SHUFFLE_MASTERS.items() if name != victim}
        res["move_s_max"] = round(max(moved_at.values()), 3) if moved_at else None
        res["move_s_median"] = median(list(moved_at.values())) if moved_at else None
        ok = (all(v is not None for v in first.values()) and res["restart_same"] == n
              and res["moved_ok"] == len(movers) and res["others_unchanged"] == len(stayed)
              and min(spread.values()) >= 3)
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
    finally:
        if not ok:
            lab.keep = True
            print(f"---- shuffle failed; files kept in {workdir}", file=sys.stderr)
            lab.print_logs(15)
        lab.stop_all(grace=1.0)
        kept = ctx.done(workdir, ok)
        if kept:
            res["workdir"] = kept
    return res


# ---------------------------------------------------------------------- mute master
# A master whose request workers are stuck while its ports stay open (issue 21): only its
# MWorker processes are SIGSTOPped. The main process, the request server's MWorkerQueue
# device (libzmq's I/O thread; the tcp transport's request server) and the publisher run
# on, so every ZMTP handshake and TCP connect still completes, and no request is answered
# (what all workers busy on a slow ext_pillar, or dead workers, look like from outside).
# Nothing is published either: a publication is a request to the workers. The minion's
# next request is a `salt-call test.ping` on its host; the sidecar suspects A once that
# request has waited `ret_answer_timeout`, its `ping` re-check goes unanswered too, and it
# fails over. The sidecar's idle checks alone cannot see such a master (zmtp: handshakes
# complete; for tcp the scenario sets `probe: tcp`, a plain connect, so that only the
# passive path is measured — the default `ping` probe would leave A on its own, request
# or not).
MUTE_MODES: Dict[str, Tuple[str, str]] = {
    # name: (transport, front)
    "sidecar_zeromq_mute": ("zeromq", "sidecar"),
    "sidecar_tcp_mute": ("tcp", "sidecar"),
    "native_zeromq_mute": ("zeromq", "native"),
}
# The sidecar's `ret_answer_timeout` in the mute scenarios (tests/salt_e2e.rs: the bar is
# this + 3 s); the alive interval is the labs' 1 s.
MUTE_RET_ANSWER_TIMEOUT_S = 2.0
# How long the scenario's own clear `ping` waits for the master (a healthy one: milliseconds).
MUTE_PROBE_WAIT_S = 3.0
# How long the triggering salt-call is given from its start (then it is killed and recorded so).
MUTE_CALL_CAP_S = 60.0
# Salt's clear ping ({"enc": "clear", "load": {"cmd": "ping"}, "version": 3}), msgpack; as a
# tcp-transport message it is wrapped in {"head": {"mid": 1}, "body": ...} (zmtp/saltreq.rs).
_PING_BODY = b"\x83\xa3enc\xa5clear\xa4load\x81\xa3cmd\xa4ping\xa7version\x03"
_PING_TCP = b"\x82\xa4head\x81\xa3mid\x01\xa4body" + _PING_BODY


def mworkers(lab: SaltLab, name: str) -> List[Tuple[int, str]]:
    """(pid, title) of master ``name``'s request workers: the processes of its session whose
    title (Salt's setproctitle) names an ``MWorker-`` (3008: ``MWorker-default-0``, earlier
    ``MWorker-0``) — not ``MWorkerQueue`` (the request server's device) nor the main process."""
    m = lab.masters[name]
    if m.proc is None:
        raise RuntimeError(f"master {name} not started")
    out = subprocess.run(["ps", "-o", "pid=,args=", "--sid", str(m.proc.pid)], capture_output=True,
                         text=True, timeout=10).stdout
    found = []
    for line in out.splitlines():
        pid, _, args = line.strip().partition(" ")
        w = re.search(r"\bMWorker-\S*", args)
        if w and pid.isdigit():
            found.append((int(pid), w.group(0)))
    return found


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def ret_ping(ip: str, transport: str, wait: float, port: int = 4506) -> Dict[str, Any]:
    """Salt's clear `ping` straight to a master's ret port, as a minion sends it — ZeroMQ: a
    REQ peer after a full ZMTP 3.0 NULL handshake; tcp: Salt's msgpack framing — with
    ``wait`` s for an answer. Returns {"connected", "handshake" (ZeroMQ: the master's
    greeting and a READY naming ROUTER arrived), "answered", "answer_s", "error"?}."""
    res: Dict[str, Any] = {"connected": False, "handshake": None, "answered": False, "answer_s": None}
    try:
        with socket.create_connection((ip, port), timeout=wait) as s:
            res["connected"] = True
            s.settimeout(wait)
            if transport == "zeromq":
                res["handshake"] = False
                # signature, version 3.0, mechanism NULL, as-server 0, filler
                s.sendall(b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00") + b"\x00" * 32)
                peer = _recv_exact(s, 64)
                ready = b"\x05READY" + b"\x0bSocket-Type" + struct.pack(">I", 3) + b"REQ"
                s.sendall(bytes([0x04, len(ready)]) + ready)
                flags = _recv_exact(s, 1)[0]
                size = struct.unpack(">Q", _recv_exact(s, 8))[0] if flags & 0x02 else _recv_exact(s, 1)[0]
                cmd = _recv_exact(s, min(size, 4096))
                res["handshake"] = (peer[0] == 0xFF and peer[9] == 0x7F and flags & 0x04 != 0
                                    and cmd.startswith(b"\x05READY") and b"ROUTER" in cmd)
                # a REQ message: the empty delimiter frame (MORE), then the body
                req = bytes([0x01, 0x00, 0x00, len(_PING_BODY)]) + _PING_BODY
            else:
                req = _PING_TCP
            t0 = time.monotonic()
            s.sendall(req)
            try:
                data = s.recv(4096)
                if data:  # b"": the master closed, which is no answer
                    res["answered"] = True
                    res["answer_s"] = round(time.monotonic() - t0, 3)
            except socket.timeout:
                pass
    except (OSError, ValueError) as e:
        res["error"] = f"{type(e).__name__}: {e}"
    return res


def minion_quiet(lab: SaltLab, mid: str, quiet_s: float = 3.0, timeout: float = 90.0,
                 watch_log: bool = True) -> float:
    """Waits until minion ``mid`` has run no job (its cachedir/proc is empty) and, with
    ``watch_log``, its log has not grown for ``quiet_s`` s, at most ``timeout`` s: the pings
    published while it started (a slow start on a loaded machine leaves a backlog) must not
    be the request that meets the mute master. (A minion with Salt's own failover logs its
    alive check every second: watch_log=False.) Returns the seconds waited."""
    mn = lab.minions[mid]
    procdir = os.path.join(mn.cfg["cachedir"], "proc")
    t0 = time.monotonic()
    last_size, since = -1, t0
    while time.monotonic() - t0 < timeout:
        try:
            size = os.path.getsize(mn.log_file)
        except OSError:
            size = 0
        busy = os.path.isdir(procdir) and bool(os.listdir(procdir))
        now = time.monotonic()
        if (watch_log and size != last_size) or busy:
            last_size, since = size, now
        elif now - since >= quiet_s:
            break
        time.sleep(0.2)
    return round(time.monotonic() - t0, 2)


class SaltCall:
    """A running ``salt-call -c <minion conf> test.ping --out json`` on the minion's host."""

    def __init__(self, lab: SaltLab, mid: str):
        self.log = os.path.join(lab.workdir, f"salt-call-{int(time.time() * 1000)}.log")
        argv = [os.path.join(lab.bin, "salt-call"), "-c", lab.minions[mid].confdir, "test.ping",
                "--out", "json", "-l", "warning"]
        self.t0 = time.monotonic()
        self.unix = time.time()
        with open(self.log, "wb") as err:
            self.popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True, env=lab._env(),
                                          stdin=subprocess.DEVNULL, start_new_session=True)

    def result(self, timeout: float) -> Dict[str, Any]:
        """{"s": wall seconds, "ret": its test.ping return (True) or None, "rc", "stderr"}."""
        try:
            out, _ = self.popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return {"s": None, "ret": None, "rc": None,
                    "stderr": f"still running {time.monotonic() - self.t0:.0f} s after its start, killed: "
                              + harness.tail(self.log, 2)}
        s = round(time.monotonic() - self.t0, 3)
        data = SaltLab._json(out)
        ret = data.get("local") if isinstance(data, dict) else None
        return {"s": s, "ret": ret, "rc": self.popen.returncode, "stderr": harness.tail(self.log, 3)}

    def kill(self) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(timeout=5)


_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z\s+\w+\s+\S+: (.*)$")


def sidecar_lines(path: str, *parts: str) -> List[Tuple[float, str]]:
    """(Unix time, message) of every sidecar log line that contains all of ``parts``."""
    out = []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                m = _LOG_LINE.match(line.strip())
                if not m or not all(p in m.group(2) for p in parts):
                    continue
                ts = m.group(1)
                if "." in ts:
                    head, frac = ts.split(".")
                    ts = head + "." + (frac + "000000")[:6]
                t = datetime.datetime.fromisoformat(ts).replace(tzinfo=datetime.timezone.utc).timestamp()
                out.append((t, m.group(2)))
    except OSError:
        pass
    return out


def passive_suspicions(transport: str, admin: str = ADMIN, master: str = A_IP) -> Dict[str, float]:
    """``salt_sidecar_passive_suspicions_total`` of ``master`` and ``transport`` by outcome,
    from /metrics."""
    import urllib.request
    out: Dict[str, float] = {}
    try:
        with urllib.request.urlopen(f"http://{admin}/metrics", timeout=3) as r:
            text = r.read().decode("utf-8", "replace")
    except OSError:
        return out
    for line in text.splitlines():
        if (line.startswith("salt_sidecar_passive_suspicions_total{") and f'master="{master}"' in line
                and f'transport="{transport}"' in line):
            m = re.search(r'outcome="(\w+)"', line)
            if m:
                out[m.group(1)] = float(line.rsplit(" ", 1)[1])
    return out


def mute_round(ctx: Ctx, name: str, cap: float) -> Dict[str, Any]:
    """One fresh lab: A made mute (its MWorkers SIGSTOPped; checked with a direct ping that
    it completes handshakes and answers nothing), then the minion's next `salt-call
    test.ping`. ``seconds``: through the sidecar, from the salt-call's first ret connection
    (the sidecar's debug log; its request follows at once, so this is an upper bound) to the
    first test.ping return through B (harness pinger on B, started before the call);
    natively, from the salt-call's start (None: no return through B within ``cap``)."""
    transport, front = MUTE_MODES[name]
    workdir = ctx.workdir(name)
    lab = SaltLab(workdir, transport=transport, quiet=not ctx.verbose, log_level=ctx.log_level)
    res: Dict[str, Any] = {"seconds": None, "transport": transport}
    ok = False
    stopped: List[int] = []
    call: Optional[SaltCall] = None
    sidecar_log = os.path.join(workdir, "sidecar.log")
    try:
        lab.add_master("A", A_IP)
        lab.add_master("B", B_IP)
        if front == "native":
            lab.add_minion(MINION, {"master": [A_IP, B_IP], "master_type": "failover", "master_alive_interval": 1})
        else:
            lab.add_minion(MINION, {"master": "127.0.0.1"})
        lab.start_masters()
        if front == "sidecar":
            cfg = sidecar_config(transport)
            cfg["sidecar"]["ret_answer_timeout"] = f"{MUTE_RET_ANSWER_TIMEOUT_S:g}s"
            if transport == "tcp":
                cfg["sidecar"]["probe"] = "tcp"  # only the passive path can see a mute master
            res["ret_answer_timeout_s"] = MUTE_RET_ANSWER_TIMEOUT_S
            res["probe"] = cfg["sidecar"].get("probe", "ping")
            path = write_sidecar_config(os.path.join(workdir, "sidecar.yaml"), cfg)
            # debug: the "session open" lines date the salt-call's connection
            lab.start_proc("sidecar", [ctx.sidecar, "run", "--config", path, "--log-level", "salt_sidecar=debug"],
                           list(FRONT_READY))
            st, t = wait_status(lambda s: s.get("active") == A_IP, 15)
            if t is None:
                raise RuntimeError(f"sidecar never selected A: {st}")
        lab.start_minion(MINION)
        # one ping every 2 s, not 0.5 s: each publication keeps one of a fresh 3008 master's 3
        # workers busy for about a second on a loaded 2-core machine, and a saturated pool
        # leaves the minion's first requests unanswered long enough to be taken for hung
        first = lab.wait_ping("A", MINION, 90, interval=2.0)
        if first is None:
            raise RuntimeError("minion never answered through master A")
        res["first_ping_a_s"] = round(first, 2)
        res["settle_s"] = minion_quiet(lab, MINION, watch_log=front != "native")
        healthy = SaltCall(lab, MINION).result(120)
        res["salt_call_healthy_s"] = healthy["s"]
        if healthy["ret"] is not True:
            raise RuntimeError(f"salt-call test.ping through a healthy A: {healthy}")
        before = ret_ping(A_IP, transport, MUTE_PROBE_WAIT_S)
        if not before["answered"]:
            raise RuntimeError(f"A did not answer a clear ping before it was muted: {before}")
        res["ping_a_healthy_s"] = before["answer_s"]
        workers = mworkers(lab, "A")
        if not workers:
            raise RuntimeError("no MWorker process found under master A (process titles)")
        t_mute = time.monotonic()
        if front == "sidecar":
            # a start-up suspicion (a healthy master too busy to answer) is recorded, not hidden
            res["suspicions_before_mute"] = len([t for t, _m in sidecar_lines(sidecar_log, "suspected hung")])
        for pid, _title in workers:
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        res["stopped"] = sorted(title for _pid, title in workers)
        after = ret_ping(A_IP, transport, MUTE_PROBE_WAIT_S)
        res["ping_a_mute"] = {k: v for k, v in after.items() if v is not None}
        if not after["connected"] or after["answered"] or after["handshake"] is False:
            raise RuntimeError(f"A is not mute (connects, completes handshakes, answers nothing): {after}")
        if front == "sidecar":
            # the idle checks (zmtp handshake; tcp connect) pass on a mute master: A is still
            # the minion's master some seconds after it went mute, until a minion request
            st = status()
            res["idle_checks_kept_a_s"] = round(time.monotonic() - t_mute, 2)
            if active_of(st) != A_IP:
                raise RuntimeError(f"the sidecar left A before any minion request (not the passive path): {st}")
        watch = lab.watch_ping("B", MINION, cap)
        call = SaltCall(lab, MINION)
        r = watch.result()
        t_ok = r.get("t_ok")
        if t_ok is None:
            res["pinger"] = {k: r.get(k) for k in ("published", "errors", "last_error", "error")}
        called = call.result(max(1.0, call.t0 + MUTE_CALL_CAP_S - time.monotonic()))
        res["salt_call_s"] = called["s"]
        res["salt_call_ret"] = called["ret"]
        if called["s"] is not None and healthy["s"] is not None:
            res["salt_call_extra_s"] = round(called["s"] - healthy["s"], 3)
        if called["ret"] is not True:
            res["salt_call_stderr"] = called["stderr"]
        res["call_to_b_s"] = None if t_ok is None else round(t_ok - call.t0, 3)
        if front == "sidecar":
            rets = [t for t, _m in sidecar_lines(sidecar_log, "session open", 'port="ret"') if t >= call.unix - 0.05]
            t_req = rets[0] if rets else None
            res["call_to_ret_connection_s"] = None if t_req is None else round(t_req - call.unix, 3)
            sus = [(t, m) for t, m in sidecar_lines(sidecar_log, "suspected hung") if t >= call.unix - 0.05]
            if sus:
                w = re.search(r"waited=([\d.]+)s", sus[0][1])
                res["suspicion"] = "confirmed" if "does not answer a ping" in sus[0][1] else "cleared"
                res["waited_s"] = float(w.group(1)) if w else None
            sw = [t for t, m in sidecar_lines(sidecar_log, "switched master", 'reason="failover"') if t >= call.unix - 0.05]
            if sw and t_req is not None:
                res["request_to_switch_s"] = round(sw[0] - t_req, 3)
            res["call_to_switch_s"] = round(sw[0] - call.unix, 3) if sw else None
            if t_ok is not None and t_req is not None:
                res["seconds"] = round(mono_to_unix(t_ok) - t_req, 3)
            res["suspicions_total"] = passive_suspicions(transport)
        else:
            res["seconds"] = res["call_to_b_s"]
            res["minion_on"] = _native_master(lab, MINION)
        if t_ok is not None:
            if front == "sidecar" and transport == "zeromq":
                # As in the crash scenarios: with `salt_events` (the default) the sidecar
                # closes the moved publish session at its first quiet moment and the minion
                # is deaf until it signs in again (Salt's semantics, natively too); a job
                # published meanwhile never reaches it (seen: test.echo sent 85 ms after
                # that close, lost). The job is for B's job cache: run it once the minion
                # hears B again.
                res["notice_s"] = harness.wait_notice(sidecar_log, t_ok)
                back = lab.poll_ping("B", MINION, 60)
                if back.get("t_ok") is not None:
                    res["heard_again_s"] = round(back["t_ok"] - t_ok, 3)
            jid, ret = lab.run_job("B", MINION, "test.echo", ["after-mute"])
            cached = lab.lookup_jid("B", jid) if jid else {}
            res["job_cache_ok"] = ret == "after-mute" and cached.get(MINION) == "after-mute"
        ok = mute_ok(name, res)
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
    finally:
        if call is not None:
            call.kill()
        for pid in stopped:  # let the workers go before the lab stops them
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        if not ok:
            lab.keep = True
            print(f"---- {name} round failed ({res}); files kept in {workdir}", file=sys.stderr)
            lab.print_logs(30)
        lab.stop_all(grace=1.0)
        kept = ctx.done(workdir, ok)
        if kept:
            res["workdir"] = kept
    return res


def _native_master(lab: SaltLab, mid: str) -> Optional[str]:
    """Which master's publish port minion ``mid`` holds a connection to ("A", "B" or None),
    from the kernel's socket table (`ss`)."""
    mn = lab.minions[mid]
    if mn.proc is None:
        return None
    out = subprocess.run(["ss", "-Htn", "state", "established"], capture_output=True, text=True, timeout=10).stdout
    for line in out.splitlines():
        fields = line.split()  # Recv-Q Send-Q Local Peer
        for ip, label in LABEL_TO_NAME.items():
            if len(fields) > 3 and fields[3] == f"{ip}:4505":
                return label
    return None


def mute_ok(name: str, r: Dict[str, Any]) -> bool:
    """A round's verdict: through the sidecar, answered through B (the job cache too), and
    on zeromq the salt-call returned True (Salt resends its request after its own timeout,
    to B). On tcp the salt-call is recorded, not required: Salt 3008's tcp client never
    gets an answer to the request whose connection the failover reset. Natively, only no
    error (never leaving A is the expected outcome)."""
    if r.get("error"):
        return False
    transport, front = MUTE_MODES[name]
    if front == "native":
        return True
    call_ok = transport == "tcp" or r.get("salt_call_ret") is True
    return r.get("seconds") is not None and call_ok and r.get("job_cache_ok") is True


# ---------------------------------------------------------------------- registry
# Salt's own lines for its master events (minion log, INFO), per release: 3006+ with
# master_type str re-signs in and fires salt/minion/<id>/start right before "ready";
# 2019.2 with str only marks the connection re-established (no start event).
_EVENT_LINES = (
    ("disconnected", "Connection to master 127.0.0.1 lost"),
    ("start_fired", "Minion is ready to receive requests!"),
    ("connected", "Connection to master 127.0.0.1 re-established"),
)


def minion_event_times(path: str, after_unix: float) -> Dict[str, Optional[float]]:
    """Unix time of the first line of each of _EVENT_LINES after ``after_unix``."""
    out: Dict[str, Optional[float]] = {k: None for k, _ in _EVENT_LINES}
    try:
        with open(path, errors="replace") as f:
            for line in f:
                m = _SALT_TS.match(line)
                if not m:
                    continue
                t = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000
                if t < after_unix:
                    continue
                for kind, text in _EVENT_LINES:
                    if out[kind] is None and text in line:
                        out[kind] = t
    except OSError:
        pass
    return out


def switch_events_round(ctx: Ctx, cap: float) -> Dict[str, Any]:
    """Issue 23: SIGKILL of A with the minion idle, through the sidecar (salt_events on, the
    minion with master_alive_interval 1). Measures kill -> first test.ping through B (as the
    crash rows), when the sidecar closed the moved publish session (its first quiet moment),
    how long it refused the minion's publish reconnects (the window) and why it ended, the
    minion's own event lines (__master_disconnected handled, start event fired / connection
    re-established), and the deafness: the close -> the first test.ping through B answered
    (a pinger started once the close is logged: its ~0.5-1 s start-up is included)."""
    host = SidecarLab(ctx, "switch_events", sidecar_args=["--log-level", SIDECAR_SESSION_LOG])
    lab = host.lab
    mid = host.mid
    res: Dict[str, Any] = {}
    ok = False
    try:
        res["first_ping_a_s"] = host.start()
        watch = lab.watch_ping("B", mid, min(cap, 60))
        t_kill = lab.kill_master("A", signal.SIGKILL)
        kill_unix = mono_to_unix(t_kill)
        r = watch.result()
        res["failover_s"] = None if r.get("t_ok") is None else round(r["t_ok"] - t_kill, 3)
        close_unix = None
        end = time.time() + 90
        while close_unix is None and time.time() < end:
            close_unix = first_event(sidecar_events(host.sidecar_log), kill_unix,
                                     "publish session closed after a switch")
            if close_unix is None:
                time.sleep(0.1)
        if close_unix is None:
            raise RuntimeError("the sidecar never closed the moved publish session")
        res["close_after_kill_s"] = round(close_unix - kill_unix, 3)
        t_close = time.monotonic() - (time.time() - close_unix)
        back = lab.poll_ping("B", mid, 60, interval=0.25, timeout=1)
        res["deaf_s"] = None if back.get("t_ok") is None else round(back["t_ok"] - t_close, 3)
        reopened = first_event(sidecar_events(host.sidecar_log), close_unix, "publish connections accepted again")
        res["window_s"] = None if reopened is None else round(reopened - close_unix, 3)
        why = [e["msg"] for e in sidecar_events(host.sidecar_log)
               if e["unix"] >= close_unix - 0.05 and "accepted again" in e["msg"]]
        res["window_end"] = ("minion reacted" if why and "request channel" in why[0]
                             else "expired" if why else None)
        ev = minion_event_times(lab.minions[mid].log_file, kill_unix - 1)
        for kind, t in ev.items():
            res[f"{kind}_after_close_s"] = None if t is None else round(t - close_unix, 3)
        ok = res["failover_s"] is not None and res["deaf_s"] is not None
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
    finally:
        kept = host.close(ok)
        if kept:
            res["workdir"] = kept
    return res


def _failover_runner(name: str) -> Callable[[Ctx, float], Dict[str, Any]]:
    return lambda ctx, cap: failover_round(ctx, name, cap)


SCENARIOS: Dict[str, Callable[[Ctx, float], Dict[str, Any]]] = {n: _failover_runner(n) for n in FAILOVER_MODES}
SCENARIOS["failback"] = lambda ctx, cap: failback_round(ctx, graceful=False)
SCENARIOS["graceful_restart"] = lambda ctx, cap: failback_round(ctx, graceful=True)
SCENARIOS["failback_tcp"] = lambda ctx, cap: failback_round(ctx, graceful=False, transport="tcp")
SCENARIOS["graceful_restart_tcp"] = lambda ctx, cap: failback_round(ctx, graceful=True, transport="tcp")
SCENARIOS["native_failback"] = lambda ctx, cap: native_failback_round(ctx)
SCENARIOS["crash_stream"] = lambda ctx, cap: crash_stream_round(ctx, native=False)
SCENARIOS["switch_events"] = switch_events_round
SCENARIOS["native_crash_stream"] = lambda ctx, cap: crash_stream_round(ctx, native=True)
SCENARIOS["enroll"] = lambda ctx, cap: enroll_round(ctx)
SCENARIOS["shuffle"] = lambda ctx, cap: shuffle_round(ctx)
for _name in MUTE_MODES:
    SCENARIOS[_name] = (lambda n: lambda ctx, cap: mute_round(ctx, n, cap))(_name)

# the headline timing of a round
HEADLINE = {n: "seconds" for n in FAILOVER_MODES}
HEADLINE.update({"failback": "failback_after_start_s", "native_failback": "failback_after_start_s", "graceful_restart": "sigterm_to_first_return_b_s",
                 "failback_tcp": "failback_after_start_s", "graceful_restart_tcp": "sigterm_to_first_return_b_s",
                 "enroll": "enroll_s", "shuffle": "move_s_max",
                 "crash_stream": "failover_s", "native_crash_stream": "failover_s",
                 "switch_events": "deaf_s"})
HEADLINE.update({n: "seconds" for n in MUTE_MODES})


def round_ok(name: str, r: Dict[str, Any]) -> bool:
    if r.get("error"):
        return False
    if name in FAILOVER_MODES:
        return r.get("seconds") is not None or FAILOVER_MODES[name][2] == signal.SIGSTOP
    if name in MUTE_MODES:
        return mute_ok(name, r)
    return "workdir" not in r


def run_scenario(ctx: Ctx, name: str, rounds: int, cap: float) -> Dict[str, Any]:
    """Runs ``rounds`` fresh rounds of scenario ``name``; returns its JSON line."""
    transport = FAILOVER_MODES[name][0] if name in FAILOVER_MODES else MUTE_MODES.get(name, ("zeromq",))[0]
    line: Dict[str, Any] = {"scenario": name, "transport": transport, "rounds": []}
    t0 = time.monotonic()
    for i in range(rounds):
        r = SCENARIOS[name](ctx, cap)
        r["round"] = i + 1
        log(f"{name} round {i + 1}/{rounds}: {json.dumps(r)}")
        line["rounds"].append(r)
    key = HEADLINE[name]
    vals = [r.get(key) for r in line["rounds"]]
    line["metric"] = key
    line["values"] = vals
    line["median"] = median(vals)
    line["ok"] = all(round_ok(name, r) for r in line["rounds"])
    line["wall_s"] = round(time.monotonic() - t0, 1)
    return line


# ---------------------------------------------------------------------- CLI
def salt_version() -> Optional[str]:
    """The venv's Salt release ("3006.30"), from ``salt-minion --version``."""
    try:
        out = subprocess.run([os.path.join(harness.venv_dir(), "bin", "salt-minion"), "--version"],
                             capture_output=True, text=True, timeout=60).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[1] if len(out) >= 2 else None


def preflight() -> Optional[str]:
    if not harness.salt_available():
        return f"no Salt in the venv {harness.venv_dir()}: run ./scripts/test-deps"
    if os.geteuid() != 0:
        return "the Salt labs run masters and minions as root: run as root"
    return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("_jobstream", "_jobcache"):
        return jobstream.main(argv)  # the venv-side helpers (JobStream runs jobstream.py itself)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="scenario names")
    rp = sub.add_parser("run", help="run scenarios, one JSON line each")
    rp.add_argument("names", nargs="+", help="NAME or NAME:ROUNDS (rounds of that scenario; default --rounds)")
    rp.add_argument("--rounds", type=int, default=1)
    rp.add_argument("--cap", type=float, default=60.0, help="seconds to wait for B in failover rounds")
    rp.add_argument("--sidecar", default=default_sidecar(), help="salt-sidecar binary")
    rp.add_argument("--workdir", help="root for the labs' files (default: a temp dir)")
    rp.add_argument("--keep", action="store_true")
    rp.add_argument("--verbose", action="store_true")
    rp.add_argument("--debug", action="store_true", help="Salt log files at debug level")
    rp.add_argument("--salt-reconnect", action="store_true",
                    help="minions keep Salt's default reconnect settings (recon_default 1000, recon_max "
                         "10000, recon_randomize True) instead of the labs' fast ones: the version matrix")
    rp.add_argument("--stream-interval", type=float, help="job stream: seconds between jobs (default 0.25)")
    rp.add_argument("--stream-inflight", type=int, help="job stream: jobs without a return at most (default 2)")
    rp.add_argument("--stream-count", type=int, help="job stream: jobs at least (default 50)")
    args = ap.parse_args(argv)
    if args.command == "list":
        print("\n".join(SCENARIOS))
        return 0
    plan: List[Tuple[str, int]] = []  # NAME or NAME:ROUNDS
    for n in args.names:
        name, _, rounds = n.partition(":")
        plan.append((name, int(rounds) if rounds.isdigit() and int(rounds) > 0 else args.rounds))
    bad = [n for n, _ in plan if n not in SCENARIOS]
    if bad:
        print(f"unknown scenario(s) {bad}; known: {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    why = preflight()
    if why:
        print(f"scenarios.py: {why}", file=sys.stderr)
        return 2
    if not os.access(args.sidecar, os.X_OK):
        print(f"scenarios.py: no salt-sidecar binary at {args.sidecar} (cargo build --release)", file=sys.stderr)
        return 2
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, lambda *_: sys.exit(128 + 15))
    workroot = args.workdir or tempfile.mkdtemp(prefix="salt-e2e-")
    os.makedirs(workroot, exist_ok=True)
    stream = {k: v for k, v in (("interval", args.stream_interval), ("max_inflight", args.stream_inflight),
                                ("count", args.stream_count)) if v is not None}
    ctx = Ctx(os.path.abspath(args.sidecar), workroot, keep=args.keep, verbose=args.verbose,
              log_level="debug" if args.debug else "info", stream=stream)
    if args.salt_reconnect:
        harness.use_salt_reconnect_defaults()
    salt = salt_version()
    failed = False
    with harness.lab_lock():
        for name, rounds in plan:
            line = run_scenario(ctx, name, rounds, args.cap)
            line["salt"] = salt
            line["reconnect"] = "salt defaults" if args.salt_reconnect else "fast (recon_default 100, recon_max 500)"
            failed = failed or not line["ok"]
            print(json.dumps(line), flush=True)
    if not args.workdir and not os.listdir(workroot):
        os.rmdir(workroot)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
