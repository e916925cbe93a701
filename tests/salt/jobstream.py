#!/usr/bin/env python3
"""The job stream of the real-Salt scenarios: runs inside a Salt venv's python.

scenarios.py's failback, native_failback and graceful_restart rounds start
``<venv>/bin/python jobstream.py _jobstream ...``: it publishes ``test.arg`` jobs with
distinct payloads on whichever master the minion is on (the sidecar's /status, or the
minion's own connection for native failover), listens for their returns on that
master's event bus, then looks every job up in every master's job cache
(``jobstream.py _jobcache``, one process per master). It never starts or stops a
master or the sidecar: scenarios.py does, and pauses the stream around a planned
stop (the pause file), or tells it about a kill: before (the dying file: let go of that
master) and after (the dead file: its jobs from before are not waited for).

Kept importable by Python 3.6 (Salt 2019.2.8's venv): no ``from __future__ import
annotations``, no ``subprocess.run(capture_output=, text=)``, nothing newer than 3.6,
and only the Salt API that 2019.2.8 to 3008 share (``LocalClient.run_job`` /
``event.get_event``, ``MasterMinion`` returners). scenarios.py's ``_jobstream`` and
``_jobcache`` subcommands are the same as this file's (they call it).
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any, Dict, List, Optional, Sequence, Tuple

sys.dont_write_bytecode = True  # no __pycache__ next to the harness

ADMIN = "127.0.0.1:9464"
MINION = "m1"


def sidecar_status(admin: str = ADMIN, timeout: float = 2.0) -> Optional[Dict[str, Any]]:
    """The sidecar's /status JSON, or None if it does not answer."""
    try:
        with urllib.request.urlopen("http://{}/status".format(admin), timeout=timeout) as r:
            return json.loads(r.read().decode())
    except (OSError, ValueError, urllib.error.URLError):
        return None


def last_json(text: str) -> Any:
    """The last JSON document of a helper's stdout (Salt may log above it), or None."""
    for line in reversed((text or "").strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def close_client(lc: Any) -> None:
    """Closes a LocalClient's event bus (2019.2.8's LocalClient has no destroy())."""
    try:
        destroy = getattr(lc, "destroy", None)
        if destroy is None:
            destroy = lc.event.destroy
        destroy()
    except Exception:  # closing a client of a master that is gone: nothing to keep
        pass


def run_stream(args: argparse.Namespace) -> int:
    """Publishes test.arg jobs with distinct payloads on the master the minion is on,
    then looks every job up in every master's job cache. Prints {"ready": t} first,
    then one summary JSON document."""
    import faulthandler
    import logging
    import uuid

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # JobStream.kill dumps the stacks first

    import salt.client

    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    masters = json.loads(args.masters)  # type: Dict[str, Dict[str, str]]
    by_label = {m["label"]: n for n, m in masters.items()}
    want = [s for s in args.segments.split(",") if s]
    clients = {}  # type: Dict[str, Any]
    jobs = []  # type: List[Dict[str, Any]]
    by_jid = {}  # type: Dict[str, Dict[str, Any]]
    segments = []  # type: List[List[Any]]
    counters = {"publish_errors": 0, "clients_closed_paused": 0, "relocated": 0}
    last_error = None
    waited = 0.0

    def client(name: str, fresh: bool = False) -> Any:
        if fresh and name in clients:
            close_client(clients.pop(name))
        if name not in clients:
            lc = salt.client.LocalClient(c_path=os.path.join(masters[name]["conf"], "master"))
            lc.event.connect_pub(timeout=10)
            clients[name] = lc
        return clients[name]

    def pump(wait: float = 0.0) -> None:
        if not clients and wait > 0:
            time.sleep(wait)
            return
        for name, lc in list(clients.items()):
            while True:
                try:
                    # wait=0 would mean "forever" to get_event: no_block for a poll
                    ev = lc.event.get_event(wait=wait, tag="salt/job/", match_type="startswith", full=True,
                                            no_block=wait <= 0)
                except Exception:
                    break
                wait = 0.0
                if not ev:
                    break
                parts = str(ev.get("tag", "")).split("/")
                if len(parts) >= 5 and parts[3] == "ret" and parts[4] == args.id and parts[2] in by_jid:
                    j = by_jid[parts[2]]
                    # every return event, per master's bus: a return delivered twice shows here
                    rets = j.setdefault("ret_events", {})
                    rets[name] = rets.get(name, 0) + 1
                    if not j.get("t_ret"):
                        j["t_ret"] = time.monotonic()
                        j["ret_seen_on"] = name

    def minion_on(st: Optional[Dict[str, Any]]) -> Optional[str]:
        """The master the minion is on: the active one, holding the only publish session(s),
        and the minion not in the middle of noticing a switch (``minion_notice``: its moved
        publish session is about to be closed at a quiet moment, or it is signing in again
        and hears nothing: a job published then is missed, as natively; see
        docs/salt-semantics.md)."""
        if not st or not st.get("active") or st.get("minion_notice"):
            return None
        with_pub = [m["master"] for m in st.get("masters", []) if m.get("sessions", {}).get("publish", 0) > 0]
        if with_pub != [st["active"]]:
            return None
        return by_label.get(st["active"])

    def minion_on_sockets() -> Optional[str]:
        """Native failover: the master whose publish port has the only established
        connection (in a lab, only the minion connects to a publish port)."""
        try:
            out = subprocess.run(["ss", "-Htn", "state", "established"], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, universal_newlines=True, timeout=5).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        peers = set()
        for line in out.splitlines():
            f = line.split()
            if len(f) >= 4 and f[-1].endswith(":4505"):
                peers.add(f[-1].rsplit(":", 1)[0])
        if len(peers) != 1:
            return None
        return by_label.get(peers.pop())

    def satisfied() -> bool:
        if len(jobs) < args.count:
            return False
        names = [s[0] for s in segments]
        return names[-len(want):] == want and len(names) >= len(want) and segments[-1][1] >= args.min_last

    print(json.dumps({"ready": time.monotonic()}), flush=True)
    t_start = time.monotonic()
    end = t_start + args.deadline
    next_pub = t_start
    on_since = (None, 0.0)  # type: Tuple[Optional[str], float]
    i = 0
    dying = None  # type: Optional[str]
    while time.monotonic() < end and not satisfied():
        now = time.monotonic()
        if dying is None and args.dying_file and os.path.exists(args.dying_file):
            # The caller is about to kill this master: close its event client first (polled
            # while its master dies, Salt 3006.30's client reconnects inside get_event and
            # never returns; seen in 2 of 2 rounds) and publish nothing more on it.
            try:
                with open(args.dying_file) as f:
                    dying = json.load(f)["master"]
            except (OSError, ValueError, KeyError):
                dying = None
            if dying in clients:
                close_client(clients.pop(dying))
            with open(args.dying_file + ".ack", "w"):
                pass
        if args.pause_file and os.path.exists(args.pause_file):
            if not any(not j.get("t_ret") and now - j["t_pub"] < args.job_timeout for j in jobs):
                # Nothing in flight: close every client before saying so, since the caller
                # may now stop a master. (Salt 3007.17's event client, polled with
                # get_event(wait=0.05) while its master stops, can stop honouring the
                # timeout: it reconnects to the restarted master and waits for the next
                # event on that bus, which this paused stream never causes. Seen twice;
                # an event sent on A's bus minutes later released it.) A new segment
                # opens a fresh client.
                for name in list(clients):
                    close_client(clients.pop(name))
                    counters["clients_closed_paused"] += 1
                with open(args.pause_file + ".idle", "w"):
                    pass
            pump(0.05)
            waited += time.monotonic() - now
            continue
        on = minion_on(sidecar_status(args.admin)) if args.locate == "sidecar" else minion_on_sockets()
        if on is not None and on == dying:
            on = None
        if on != on_since[0]:
            on_since = (on, now)
        if on is None or now - on_since[1] < args.settle:
            pump(0.05)
            waited += time.monotonic() - now
            continue
        # in flight on this master (a job left on the previous master does not hold the stream)
        inflight = sum(1 for j in jobs if j["master"] == on and not j.get("t_ret")
                       and now - j["t_pub"] < args.job_timeout)
        if now < next_pub or inflight >= args.max_inflight:
            pump(min(0.05, max(0.0, next_pub - now)) or 0.05)
            continue
        next_pub = now + args.interval
        new_segment = not segments or segments[-1][0] != on
        try:
            lc = client(on, fresh=new_segment and any(s[0] == on for s in segments))
            if new_segment and args.locate == "sidecar":
                # A new client may take seconds on a loaded machine: still there?
                if minion_on(sidecar_status(args.admin)) != on:
                    counters["relocated"] += 1
                    continue
            payload = "p{:03d}-{}".format(i, uuid.uuid4().hex[:12])
            t_pub = time.monotonic()
            pub = lc.run_job(args.id, "test.arg", arg=[payload], timeout=args.publish_timeout, listen=True)
        except Exception as e:
            counters["publish_errors"] += 1
            last_error = repr(e)
            clients.pop(on, None)
            continue
        if not pub or not pub.get("jid"):
            counters["publish_errors"] += 1
            last_error = "publish returned {!r}".format(pub)
            continue
        if new_segment:
            segments.append([on, 0])
        segments[-1][1] += 1
        j = {"i": i, "master": on, "jid": str(pub["jid"]), "payload": payload, "t_pub": t_pub}
        jobs.append(j)
        by_jid[j["jid"]] = j
        i += 1
        pump(0.0)
    def awaited(j: Dict[str, Any]) -> bool:
        """False for a job its master cannot return any more: published by a master the
        caller killed (the dead file: {"master": NAME, "t": time.monotonic() of the kill})
        before it died. Such a job is still looked up in every job cache, but not waited
        for: its return can only land elsewhere, and whatever did by the time the other
        jobs are settled is what the caller counts."""
        if not args.dead_file:
            return True
        try:
            with open(args.dead_file) as f:
                dead = json.load(f)
        except (OSError, ValueError):
            return True
        return not (j["master"] == dead.get("master") and j["t_pub"] < dead.get("t", 0))

    # late returns
    tail_end = time.monotonic() + args.job_timeout
    while time.monotonic() < tail_end and any(not j.get("t_ret") and awaited(j) for j in jobs):
        pump(0.1)
    # the job caches: where did each return land? (one lookup process per master: two
    # MasterMinions in one process share the local_cache module and its __opts__)
    cache_end = time.monotonic() + args.job_timeout
    while True:
        todo = [j for j in jobs if not j.get("cache_issuer")]
        if not todo:
            break
        for name, m in masters.items():
            hits = lookup_jobs(m["conf"], args.id, todo)
            for j in todo:
                if name == j["master"]:
                    j["cache_issuer"] = hits.get(j["jid"], False)
                elif hits.get(j["jid"]) and name not in j.setdefault("cache_other", []):
                    j["cache_other"].append(name)
        if all(j.get("cache_issuer") or not awaited(j) for j in jobs) or time.monotonic() > cache_end:
            break
        time.sleep(1.0)
    for lc in clients.values():
        close_client(lc)
    out = {"jobs": jobs, "segments": segments, "publish_errors": counters["publish_errors"],
           "last_error": last_error, "waited_s": round(waited, 2), "satisfied": satisfied(),
           "clients_closed_paused": counters["clients_closed_paused"]}
    if not satisfied():
        out["error"] = "stream ended before segments {} (got {})".format(want, segments)
    print(json.dumps(out), flush=True)
    return 0


def lookup_jobs(conf: str, mid: str, jobs: List[Dict[str, Any]]) -> Dict[str, bool]:
    """{jid: True if the master's job cache holds mid's test.arg return with the job's payload}."""
    want = {j["jid"]: j["payload"] for j in jobs}
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "_jobcache", "--conf", conf, "--id", mid],
                       input=json.dumps(want), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, timeout=120)
    data = last_json(r.stdout)
    return data if isinstance(data, dict) else {}


def read_cache(args: argparse.Namespace) -> int:
    """Reads {jid: payload} on stdin; prints {jid: found} from the master's job cache."""
    import logging

    import salt.config
    import salt.minion

    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    want = json.loads(sys.stdin.read())
    opts = salt.config.master_config(os.path.join(args.conf, "master"))
    mm = salt.minion.MasterMinion(opts, states=False, rend=False, matcher=False)
    get_jid = mm.returners["{}.get_jid".format(opts["master_job_cache"])]
    out = {}
    for jid, payload in want.items():
        try:
            ret = ((get_jid(jid) or {}).get(args.id) or {}).get("return")
        except Exception:
            ret = None
        out[jid] = isinstance(ret, dict) and list(ret.get("args") or []) == [payload]
    print(json.dumps(out), flush=True)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_jobstream":
        p = argparse.ArgumentParser(prog="jobstream.py _jobstream")
        p.add_argument("--masters", required=True, help='{"A": {"conf": CONFDIR, "label": IP}, ...}')
        p.add_argument("--admin", default=ADMIN)
        p.add_argument("--id", default=MINION)
        p.add_argument("--count", type=int, default=50)
        p.add_argument("--interval", type=float, default=0.25)
        p.add_argument("--segments", default="")
        p.add_argument("--min-last", type=int, default=10)
        p.add_argument("--deadline", type=float, default=150)
        p.add_argument("--settle", type=float, default=0.5)
        p.add_argument("--publish-timeout", type=float, default=3)
        p.add_argument("--job-timeout", type=float, default=30)
        p.add_argument("--max-inflight", type=int, default=2, help="jobs without a return yet (the box has 2 cores)")
        p.add_argument("--locate", default="sidecar", choices=["sidecar", "sockets"])
        p.add_argument("--dying-file", help="JSON {master}: that master is about to be killed: close its "
                       "event client, publish nothing more on it, create <it>.ack")
        p.add_argument("--dead-file", help="JSON {master, t}: that master was killed at t (monotonic); "
                       "its jobs from before are looked up but not waited for")
        p.add_argument("--pause-file", help="issue no job while this file exists; create <it>.idle once none is in flight")
        return run_stream(p.parse_args(argv[1:]))
    if argv and argv[0] == "_jobcache":
        p = argparse.ArgumentParser(prog="jobstream.py _jobcache")
        p.add_argument("--conf", required=True)
        p.add_argument("--id", default=MINION)
        return read_cache(p.parse_args(argv[1:]))
    print("usage: jobstream.py _jobstream ARGS | _jobcache --conf DIR [--id ID] (run by scenarios.py "
          "with a Salt venv's python)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
