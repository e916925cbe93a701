#!/usr/bin/env python3
"""Real-Salt-on-one-box test harness for salt-sidecar.

Pure standard library: it runs the Salt binaries of a venv (default
``${SALT_SIDECAR_VENV:-/var/cache/salt-sidecar/venv}``, created by
``scripts/test-deps``) as subprocesses, so it can be imported by any Python 3.9+. The
part that runs inside a venv's python (``_pinger``: test.ping through a LocalClient)
imports under Python 3.6 too, for Salt 2019.2.8's venv: no ``from __future__ import
annotations`` here, and nothing newer than 3.6 on the ``_pinger`` path.

Everything lives under one work directory: configs, pki, caches, sockets, logs.
Nothing touches /etc/salt or /var/cache/salt; every salt command gets ``-c``.

Library use::

    from harness import SaltLab
    with SaltLab(transport="zeromq") as lab:          # temp workdir, stop_all() on exit
        lab.add_master("A", "127.0.0.2")
        lab.add_master("B", "127.0.0.3")
        lab.add_minion("m1", {"master": ["127.0.0.2", "127.0.0.3"],
                              "master_type": "failover", "master_alive_interval": 1})
        lab.start_masters()                              # both in parallel, wait for ports + IPC
        lab.start_minion("m1")                           # key is pre-seeded on every master
        assert lab.wait_ping("A", "m1", 60) is not None  # seconds until the first return
        watch = lab.watch_ping("B", "m1", 120)           # pinger ready *before* the kill
        t_kill = lab.kill_master("A")                    # SIGKILL to A's whole process group
        r = watch.result()                               # {"t_ok": monotonic or None, ...}
        print(r["t_ok"] - t_kill)                        # seconds until B answered
        jid, ret = lab.run_job("B", "m1", "test.echo", ["hi"])
        assert ret == "hi" and lab.lookup_jid("B", jid)["m1"] == "hi"
        lab.ping("B", "m1", timeout=2)                   # one `salt -c .. test.ping` -> bool

    # or the whole measurement in one call (fresh lab, logs printed on failure):
    from harness import measure_failover
    measure_failover("tcp", {"master": "127.0.0.1"}, front=["salt-sidecar", "run", "-c", CFG])

On an exception inside ``with`` the tail of every log is printed to stderr and the
lab's files are kept.

CLI::

    tests/salt/harness.py check                   # {"venv":..,"salt":bool,"haproxy":bool}; exit 1 without salt
    tests/salt/harness.py smoke [--transport tcp] [--workdir DIR] [--keep]
    tests/salt/harness.py failover [--transport tcp] [--rounds N] [--cap S] [--max-seconds S]
        [--minion '{"master": "127.0.0.1"}'] [--haproxy | --proxy 'CMD ... {workdir}'] [--ready H:P]
        [--kill SIGKILL|SIGTERM|SIGSTOP] [--no-job]
      -> one JSON line per round, then {"rounds_s": [...], "median_s": x}; exit 1 on a
         failed round or one slower than --max-seconds.
"""

import argparse
import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

DEFAULT_VENV = "/var/cache/salt-sidecar/venv"

# Minion options every lab minion gets (fast=True): short zmq reconnects, short
# key-acceptance retries, no slow grains. Salt's own auth/failover timing is
# left at its defaults; add FAST_AUTH to shorten that too.
FAST_MINION_DEFAULTS: Dict[str, Any] = {
    "recon_default": 100,  # ms, zmq reconnect interval (default 1000 + random up to recon_max)
    "recon_max": 500,  # ms (default 10000)
    "recon_randomize": False,
    "acceptance_wait_time": 1,  # s between auth retries while the key is pending (default 10)
    "acceptance_wait_time_max": 1,
    "enable_fqdns_grains": False,  # reverse DNS of every address: slow without network
    "enable_gpu_grains": False,
    "grains_refresh_every": 0,
    "mine_enabled": False,
    "startup_states": "",
    "ipv6": False,
}

# The zmq reconnect knobs of FAST_MINION_DEFAULTS. A fleet runs Salt's defaults
# (recon_default 1000 ms, recon_max 10000 ms, recon_randomize True), and before 3007 they
# decide when a ZeroMQ minion comes back after its connection is cut: the version matrix
# (tests/salt_versions.rs, scripts/salt-e2e --salt-reconnect) leaves them unset.
RECON_KEYS = ("recon_default", "recon_max", "recon_randomize")


def use_salt_reconnect_defaults() -> None:
    """Every minion written from now on (by this process) gets Salt's default reconnect
    settings; the other FAST_MINION_DEFAULTS stay: they only shorten key-acceptance
    retries (preseeded keys never wait for acceptance) and skip slow grains, none of which
    is on the failover path."""
    for k in RECON_KEYS:
        FAST_MINION_DEFAULTS.pop(k, None)


# Salt's failover/auth knobs set low (defaults: random_reauth_delay 10,
# auth_timeout 5, auth_tries 7, retry_dns 30).
FAST_AUTH: Dict[str, Any] = {
    "random_reauth_delay": 0,
    "auth_timeout": 2,
    "auth_tries": 1,
    "retry_dns": 0,
}


def venv_dir() -> str:
    return os.environ.get("SALT_SIDECAR_VENV", DEFAULT_VENV)


def salt_available(venv: Optional[str] = None) -> bool:
    """True when the venv has salt-master, salt-minion and salt."""
    b = os.path.join(venv or venv_dir(), "bin")
    return all(os.access(os.path.join(b, x), os.X_OK) for x in ("salt-master", "salt-minion", "salt", "python"))


def _yaml_scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "True" if v else "False"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))  # a JSON string is a valid YAML scalar


def to_yaml(d: Dict[str, Any], indent: int = 0) -> str:
    """Tiny YAML writer for config dicts (str/int/float/bool/None/list/dict)."""
    pad = " " * indent
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out.append(f"{pad}{k}:")
            out.append(to_yaml(v, indent + 2).rstrip("\n"))
        elif isinstance(v, (list, tuple)):
            if not v:
                out.append(f"{pad}{k}: []")
                continue
            out.append(f"{pad}{k}:")
            for item in v:
                if isinstance(item, dict):
                    body = to_yaml(item, indent + 4).rstrip("\n").lstrip()
                    out.append(f"{pad}  - {body}")
                else:
                    out.append(f"{pad}  - {_yaml_scalar(item)}")
        else:
            out.append(f"{pad}{k}: {_yaml_scalar(v)}")
    return "\n".join(out) + "\n"


def tail(path: str, n: int = 40) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"<{e}>"
    return "\n".join(data.splitlines()[-n:])


def port_open(ip: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_ports(addrs: Iterable[Tuple[str, int]], deadline: float, proc: Optional[subprocess.Popen] = None) -> None:
    end = time.monotonic() + deadline
    for ip, port in addrs:
        while not port_open(ip, port):
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"process {proc.pid} exited ({proc.returncode}) before {ip}:{port} listened")
            if time.monotonic() > end:
                raise TimeoutError(f"{ip}:{port} not listening after {deadline}s")
            time.sleep(0.1)


LOCK_FILE = os.path.join(tempfile.gettempdir(), "salt-sidecar-salt-labs.lock")


class lab_lock:
    """Context manager: exclusive use of the lab addresses (127.0.0.1-.4:4505/4506,
    127.0.0.1:9464) across processes, via flock on LOCK_FILE. Labs cannot run in
    parallel; every script and test that starts one holds this for its whole run."""

    def __init__(self, timeout: float = 3600.0):
        self.timeout = timeout
        self.fd: Optional[int] = None

    def __enter__(self) -> "lab_lock":
        import fcntl
        self.fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        end = time.monotonic() + self.timeout
        told = False
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if not told:
                    print(f"waiting for {LOCK_FILE} (another Salt lab is running)", file=sys.stderr, flush=True)
                    told = True
                if time.monotonic() > end:
                    os.close(self.fd)
                    raise TimeoutError(f"{LOCK_FILE} held for more than {self.timeout}s")
                time.sleep(0.5)

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the flock
            self.fd = None


_LABS: "weakref.WeakSet[SaltLab]" = weakref.WeakSet()


def _stop_all_labs() -> None:
    for lab in list(_LABS):
        try:
            lab.stop_all()
        except Exception:  # pragma: no cover - best effort at exit
            pass


atexit.register(_stop_all_labs)


class Proc:
    """A child started in its own session (so its own process group)."""

    def __init__(self, name: str, argv: List[str], log: str, env: Optional[Dict[str, str]] = None):
        self.name = name
        self.argv = argv
        self.log = log
        with open(log, "ab") as out:
            out.write(f"\n==== {time.strftime('%H:%M:%S')} start: {' '.join(argv)}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env=env, close_fds=True,
            )
        self.pid = self.popen.pid
        self.pgid = self.pid  # start_new_session => setsid => pgid == pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def send(self, sig: int) -> None:
        """Send sig to the whole process group (salt forks many workers)."""
        try:
            os.killpg(self.pgid, sig)
        except ProcessLookupError:
            pass

    def stop(self, sig: int = signal.SIGTERM, grace: float = 5.0) -> None:
        self.send(sig)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        # children of a master/minion may outlive the leader: sweep the group
        self.send(signal.SIGKILL)
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._wait_group_gone(3.0)

    def _wait_group_gone(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                os.killpg(self.pgid, 0)
            except ProcessLookupError:
                return
            except PermissionError:
                return
            time.sleep(0.05)


class PingWatch:
    """A running ``harness.py _pinger``: one LocalClient bound to one master's
    config that publishes test.ping to one minion every ``interval`` s (each
    with ``timeout``) and exits at the first return event.

    result() -> {"t_ok": time.monotonic() of the first return or None,
                 "latency": publish->return of that ping, "published", "errors",
                 "last_error"}. CLOCK_MONOTONIC is system-wide, so t_ok compares
    with the caller's time.monotonic().
    """

    def __init__(self, lab: "SaltLab", master: str, mid: str, deadline: float, interval: float,
                 timeout: float, ready_timeout: float = 30.0):
        m = lab.masters[master]
        self.deadline = deadline
        argv = [os.path.join(lab.bin, "python"), os.path.abspath(__file__), "_pinger",
                "--conf", m.confdir, "--id", mid, "--deadline", str(deadline),
                "--interval", str(interval), "--timeout", str(timeout)]
        self.log = os.path.join(lab.workdir, f"pinger-{master}.log")
        with open(self.log, "ab") as err:
            self.popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True,
                                          env=lab._env(), stdin=subprocess.DEVNULL,
                                          start_new_session=True)
        lab._watches.append(self)
        # {"ready": ...} once the LocalClient is connected to the master's event bus
        import select
        rd, _, _ = select.select([self.popen.stdout], [], [], ready_timeout)
        line = self.popen.stdout.readline() if rd else "<no ready line within %ss>" % ready_timeout
        if not line.startswith('{"ready"'):
            self.kill()
            raise RuntimeError(f"pinger did not start: {line!r}; see {self.log}: {tail(self.log, 20)}")

    def result(self) -> Dict[str, Any]:
        try:
            out, _ = self.popen.communicate(timeout=self.deadline + 60)
        except subprocess.TimeoutExpired:
            self.kill()
            return {"t_ok": None, "error": "pinger hung"}
        data = SaltLab._json(out)
        return data if isinstance(data, dict) else {"t_ok": None, "error": f"pinger output: {out!r}"}

    def kill(self) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(timeout=5)


class Master:
    """confdir (pass to -c), pki, log_file (Salt's log), stdout_log, proc."""

    def __init__(self, name: str, ip: str, confdir: str, publish_port: int, ret_port: int):
        self.name, self.ip, self.confdir = name, ip, confdir
        self.publish_port, self.ret_port = publish_port, ret_port
        self.proc: Optional[Proc] = None
        self.pki = self.log_file = self.stdout_log = ""
        self.started = 0.0
        self.log_start = 0  # size of log_file when this start began


class Minion:
    """confdir (pass to -c), cfg (the written config), pki, log_file, stdout_log, pub, proc."""

    def __init__(self, mid: str, confdir: str, cfg: Dict[str, Any]):
        self.id, self.confdir, self.cfg = mid, confdir, cfg
        self.proc: Optional[Proc] = None
        self.pki = self.log_file = self.stdout_log = self.pub = ""
        self.preseed = False


class SaltLab:
    """A set of Salt masters, minions (and optionally HAProxy) on one box.

    workdir: None -> a fresh temp dir (removed by stop_all unless keep=True).
    transport: "zeromq" or "tcp" (written as ``transport:`` on masters and minions).
    log_level: the log files' level (debug helps when a scenario misbehaves).
    """

    def __init__(self, workdir: Optional[str] = None, transport: str = "zeromq",
                 venv: Optional[str] = None, keep: bool = False, log_level: str = "info",
                 quiet: bool = False, reuse_keys: bool = True):
        if transport not in ("zeromq", "tcp"):
            raise ValueError("transport must be zeromq or tcp")
        self.transport = transport
        self.venv = venv or venv_dir()
        self.bin = os.path.join(self.venv, "bin")
        if not salt_available(self.venv):
            raise RuntimeError(f"salt not installed in venv {self.venv} (run scripts/test-deps)")
        self._own_workdir = workdir is None
        self.workdir = os.path.abspath(workdir or tempfile.mkdtemp(prefix="salt-lab-"))
        os.makedirs(self.workdir, exist_ok=True)
        self.keep = keep
        self.log_level = log_level
        self.quiet = quiet
        self.reuse_keys = reuse_keys
        self.masters: Dict[str, Master] = {}
        self.minions: Dict[str, Minion] = {}
        self.extra_procs: Dict[str, Proc] = {}
        self._watches: List[PingWatch] = []
        self._master_key: Optional[Tuple[str, str]] = None
        self._stopped = False
        _LABS.add(self)

    # ------------------------------------------------------------ helpers
    def _log(self, msg: str) -> None:
        if not self.quiet:
            print(f"[lab {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def _env(self) -> Dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = self.bin + os.pathsep + env.get("PATH", "")
        env.pop("PYTHONPATH", None)
        return env

    # key pairs by role, shared by every lab of this process (RSA generation plus
    # a salt import costs ~0.5 s per call); pass reuse_keys=False to SaltLab to
    # get fresh ones.
    _KEY_CACHE: Dict[Tuple[str, str], Tuple[str, str]] = {}

    def gen_keypair(self, role: str = "", keysize: int = 2048) -> Tuple[str, str]:
        """(private PEM, public PEM) made with salt.crypt.gen_keys in the venv.

        With a role (e.g. "master", "minion:m1") and reuse_keys, the pair is
        cached per process."""
        key = (self.venv, role)
        if role and self.reuse_keys and key in SaltLab._KEY_CACHE:
            return SaltLab._KEY_CACHE[key]
        # Salt 3008 returns the PEMs; up to 3007 gen_keys(keydir, keyname, keysize) writes
        # <keydir>/<keyname>.pem and .pub (the venv may be a legacy one: keep this Python 3.6).
        code = ("import inspect,json,os,shutil,tempfile,salt.crypt\n"
                "if 'keydir' in inspect.signature(salt.crypt.gen_keys).parameters:\n"
                "    d = tempfile.mkdtemp()\n"
                "    salt.crypt.gen_keys(d, 'k', %d)\n"
                "    p, q = [open(os.path.join(d, 'k' + x)).read() for x in ('.pem', '.pub')]\n"
                "    shutil.rmtree(d)\n"
                "else:\n"
                "    p, q = salt.crypt.gen_keys(%d)\n"
                "print(json.dumps([p, q]))\n" % (keysize, keysize))
        out = subprocess.run([os.path.join(self.bin, "python"), "-c", code], check=True,
                             capture_output=True, text=True, env=self._env(), timeout=120)
        priv, pub = json.loads(out.stdout)
        if role:
            SaltLab._KEY_CACHE[key] = (priv, pub)
        return priv, pub

    @staticmethod
    def _write(path: str, text: str, mode: int = 0o644) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)

    def _root(self, name: str) -> str:
        return os.path.join(self.workdir, name)

    # ------------------------------------------------------------ masters
    def add_master(self, name: str, ip: str, publish_port: int = 4505, ret_port: int = 4506,
                   extra: Optional[Dict[str, Any]] = None) -> Master:
        """Write the config tree of master ``name`` bound to ``ip``.

        All masters share one key pair (minions cache the master's public key
        and refuse a different one after failover).
        """
        if name in self.masters:
            raise ValueError(f"master {name} exists")
        root = self._root(f"master-{name}")
        confdir = os.path.join(root, "conf")
        d = {k: os.path.join(root, k) for k in ("pki", "cache", "sock", "run", "log", "srv")}
        for p in d.values():
            os.makedirs(p, exist_ok=True)
        for sub in ("minions", "minions_pre", "minions_rejected", "minions_denied", "minions_autosign"):
            os.makedirs(os.path.join(d["pki"], sub), exist_ok=True)
        os.makedirs(os.path.join(d["srv"], "salt"), exist_ok=True)
        os.makedirs(os.path.join(d["srv"], "pillar"), exist_ok=True)
        cfg: Dict[str, Any] = {
            "id": name,  # the key file is <id>.pem in 3008 (with master.pem as fallback)
            "interface": ip,
            "publish_port": publish_port,
            "ret_port": ret_port,
            "transport": self.transport,
            "user": "root",
            "root_dir": root,
            "pki_dir": d["pki"],
            "cachedir": d["cache"],
            "sock_dir": d["sock"],
            "pidfile": os.path.join(d["run"], "salt-master.pid"),
            "log_file": os.path.join(d["log"], "master.log"),
            "key_logfile": os.path.join(d["log"], "key.log"),
            "log_level_logfile": self.log_level,
            "log_level": "warning",
            "file_roots": {"base": [os.path.join(d["srv"], "salt")]},
            "pillar_roots": {"base": [os.path.join(d["srv"], "pillar")]},
            "fileserver_backend": ["roots"],
            "auto_accept": False,
            "open_mode": False,
            "worker_threads": 3,
            "gather_job_timeout": 2,
            "keep_jobs_seconds": 3600,
            "con_cache": False,
            "enable_gpu_grains": False,
            "enable_fqdns_grains": False,
            "ipv6": False,
        }
        if extra:
            cfg.update(extra)
        self._write(os.path.join(confdir, "master"), to_yaml(cfg))
        # one shared key pair for every master
        if self._master_key is None:
            self._master_key = self.gen_keypair("master")
        priv, pub = self._master_key
        for base in (name, "master"):
            self._write(os.path.join(d["pki"], f"{base}.pem"), priv, 0o400)
            self._write(os.path.join(d["pki"], f"{base}.pub"), pub, 0o644)
        m = Master(name, ip, confdir, publish_port, ret_port)
        m.log_file = cfg["log_file"]
        m.stdout_log = os.path.join(d["log"], "stdout.log")
        m.pki = d["pki"]
        self.masters[name] = m
        # pre-seed already-added minions' keys
        for mn in self.minions.values():
            if getattr(mn, "preseed", False):
                self._seed_minion_key(m, mn)
        return m

    def start_master(self, name: str, wait: Optional[float] = 60.0) -> None:
        """Start master ``name``; with ``wait`` (s) block until both ports listen and
        its local-client IPC sockets exist. wait=None: return at once (see wait_master)."""
        m = self.masters[name]
        if m.proc and m.proc.alive():
            raise RuntimeError(f"master {name} already running")
        self._wait_ports_free([(m.ip, m.publish_port), (m.ip, m.ret_port)], 10)
        sock = os.path.join(self.workdir, f"master-{name}", "sock")
        for f in os.listdir(sock):  # stale sockets of a killed master would fool wait_master
            try:
                os.unlink(os.path.join(sock, f))
            except OSError:
                pass
        try:  # where this start's lines begin (_wait_master_workers)
            m.log_start = os.path.getsize(m.log_file)
        except OSError:
            m.log_start = 0
        m.proc = Proc(f"master-{name}", [os.path.join(self.bin, "salt-master"), "-c", m.confdir,
                                         "-l", "warning"], m.stdout_log, self._env())
        m.started = time.monotonic()
        if wait is not None:
            self.wait_master(name, wait)

    def wait_master(self, name: str, timeout: float = 60.0) -> None:
        m = self.masters[name]
        assert m.proc is not None, f"master {name} not started"
        t0 = time.monotonic()
        try:
            wait_ports([(m.ip, m.publish_port), (m.ip, m.ret_port)], timeout, m.proc.popen)
            # the ret port is up before the local client IPC: wait for the sockets in sock_dir
            self._wait_master_ipc(m, max(1.0, timeout - (time.monotonic() - t0)))
            # ... and before its request workers: a minion signing in before them waits
            # auth_timeout (5 s) and, with native failover, gives up on the master (seen with
            # 3007.17 on a loaded box: workers 9 s after the start). Best effort: on with a
            # note if the log never says so. ZeroMQ only: the tcp transport's workers log
            # no such line (waiting for it cost 2 x 30 s per tcp round).
            if self.transport == "zeromq":
                self._wait_master_workers(m, max(1.0, min(30.0, timeout - (time.monotonic() - t0))))
        except Exception:
            self.print_logs()
            raise
        self._log(f"master {name} up on {m.ip}:{m.publish_port}/{m.ret_port} "
                  f"pid {m.proc.pid} after {time.monotonic() - m.started:.1f}s")

    def start_masters(self, names: Optional[Sequence[str]] = None, wait: float = 60.0) -> None:
        """Start several masters in parallel (default: all) and wait for each."""
        names = list(names or self.masters)
        for n in names:
            self.start_master(n, wait=None)
        for n in names:
            self.wait_master(n, wait)

    def _wait_master_ipc(self, m: Master, timeout: float) -> None:
        sock = os.path.join(self.workdir, f"master-{m.name}", "sock")
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            names = os.listdir(sock) if os.path.isdir(sock) else []
            if "master_event_pub.ipc" in names and "publish_pull.ipc" in names:
                return
            time.sleep(0.1)
        raise TimeoutError(f"master {m.name}: no event socket in {sock}")

    def _wait_master_workers(self, m: Master, timeout: float) -> None:
        """Until the master's log says a request worker is bound ("Worker binding to socket",
        INFO); at most ``timeout`` s (a log level above INFO never says it)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                with open(m.log_file, errors="replace") as f:
                    f.seek(m.log_start)
                    if "Worker binding to socket" in f.read():
                        return
            except OSError:
                pass
            time.sleep(0.1)
        self._log(f"master {m.name}: no 'Worker binding to socket' in {m.log_file} after {timeout:.0f}s; going on")

    def kill_master(self, name: str, sig: int = signal.SIGKILL) -> float:
        """Signal master ``name``'s whole process group; returns time.monotonic() of the kill.

        SIGKILL models a crashed master process: the kernel closes its sockets,
        so connected minions get RST/FIN (not a silent black hole).
        """
        m = self.masters[name]
        if not m.proc:
            raise RuntimeError(f"master {name} not started")
        t = time.monotonic()
        m.proc.send(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            try:
                m.proc.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            m.proc._wait_group_gone(5)
        self._log(f"master {name} sent {signal.Signals(sig).name}")
        return t

    def stop_master(self, name: str) -> None:
        m = self.masters[name]
        if m.proc:
            m.proc.stop()
            m.proc = None

    def _wait_ports_free(self, addrs: Sequence[Tuple[str, int]], timeout: float) -> None:
        end = time.monotonic() + timeout
        for ip, port in addrs:
            while port_open(ip, port, 0.2):
                if time.monotonic() > end:
                    raise RuntimeError(f"{ip}:{port} is already in use (another master or proxy?)")
                time.sleep(0.2)

    # ------------------------------------------------------------ minions
    def add_minion(self, mid: str, master_cfg: Dict[str, Any], extra: Optional[Dict[str, Any]] = None,
                   preseed: bool = True, fast: bool = True) -> Minion:
        """Write minion ``mid``'s config.

        master_cfg: the master-related keys, e.g. {"master": "127.0.0.1"} or
        {"master": [...], "master_type": "failover", "master_alive_interval": 1},
        plus optional publish_port / master_port.
        preseed: generate the minion key now and install its public key as
        accepted on every master (current and later added), so no accept step
        is needed. With preseed=False use accept_key().
        fast: apply FAST_MINION_DEFAULTS (short reconnect/auth waits) under
        master_cfg/extra.
        """
        if mid in self.minions:
            raise ValueError(f"minion {mid} exists")
        root = self._root(f"minion-{mid}")
        confdir = os.path.join(root, "conf")
        d = {k: os.path.join(root, k) for k in ("pki", "cache", "sock", "run", "log")}
        # The minion's event bus is a Unix socket in sock_dir; a longer path than
        # sun_path allows breaks it silently (jobs run, returns never leave).
        longest = os.path.join(d["sock"], "minion_event_0123456789_pull.ipc")
        if len(longest.encode()) > 107:
            raise ValueError(f"lab workdir {self.workdir} is too deep: {longest} is longer than "
                             "a Unix socket path may be (107 bytes); use a shorter workdir")
        for p in d.values():
            os.makedirs(p, exist_ok=True)
        os.makedirs(os.path.join(confdir, "minion.d"), exist_ok=True)
        cfg: Dict[str, Any] = {
            "id": mid,
            "user": "root",
            "transport": self.transport,
            "root_dir": root,
            "pki_dir": d["pki"],
            "cachedir": d["cache"],
            "sock_dir": d["sock"],
            "pidfile": os.path.join(d["run"], "salt-minion.pid"),
            "log_file": os.path.join(d["log"], "minion.log"),
            "log_level_logfile": self.log_level,
            "log_level": "warning",
            "file_client": "remote",
        }
        if fast:
            cfg.update(FAST_MINION_DEFAULTS)
        cfg.update(master_cfg)
        if extra:
            cfg.update(extra)
        self._write(os.path.join(confdir, "minion"), to_yaml(cfg))
        mn = Minion(mid, confdir, cfg)
        mn.log_file = cfg["log_file"]
        mn.stdout_log = os.path.join(d["log"], "stdout.log")
        mn.pki = d["pki"]
        mn.preseed = preseed
        if preseed:
            priv, pub = self.gen_keypair(f"minion:{mid}")
            self._write(os.path.join(d["pki"], "minion.pem"), priv, 0o400)
            self._write(os.path.join(d["pki"], "minion.pub"), pub, 0o644)
            mn.pub = pub
            for m in self.masters.values():
                self._seed_minion_key(m, mn)
        self.minions[mid] = mn
        return mn

    def _seed_minion_key(self, m: Master, mn: Minion) -> None:
        self._write(os.path.join(m.pki, "minions", mn.id), mn.pub)

    def start_minion(self, mid: str) -> None:
        mn = self.minions[mid]
        if mn.proc and mn.proc.alive():
            raise RuntimeError(f"minion {mid} already running")
        sched = os.path.join(mn.confdir, "minion.d", "_schedule.conf")
        if os.path.exists(sched):
            os.unlink(sched)
        mn.proc = Proc(f"minion-{mid}", [os.path.join(self.bin, "salt-minion"), "-c", mn.confdir,
                                         "-l", "warning"], mn.stdout_log, self._env())
        time.sleep(0.2)
        if not mn.proc.alive():
            self.print_logs()
            raise RuntimeError(f"minion {mid} exited at once ({mn.proc.popen.returncode})")
        self._log(f"minion {mid} started pid {mn.proc.pid}")

    def stop_minion(self, mid: str) -> None:
        mn = self.minions[mid]
        if mn.proc:
            mn.proc.stop(grace=1.0)
            mn.proc = None

    # ------------------------------------------------------------ other processes
    def start_proc(self, name: str, argv: List[str], ready_ports: Sequence[Tuple[str, int]] = (),
                   wait: float = 15.0) -> Proc:
        """Start any helper (haproxy, salt-sidecar) in its own process group, logged to workdir."""
        if name in self.extra_procs and self.extra_procs[name].alive():
            raise RuntimeError(f"{name} already running")
        p = Proc(name, argv, os.path.join(self.workdir, f"{name}.log"), self._env())
        self.extra_procs[name] = p
        if ready_ports:
            try:
                wait_ports(ready_ports, wait, p.popen)
            except Exception:
                self.print_logs()
                raise
        self._log(f"{name} started pid {p.pid}")
        return p

    def stop_proc(self, name: str) -> None:
        p = self.extra_procs.pop(name, None)
        if p:
            p.stop()

    def start_haproxy(self, servers: Sequence[Tuple[str, str]], listen_ip: str = "127.0.0.1",
                      ports: Sequence[int] = (4505, 4506), name: str = "haproxy",
                      check: str = "check inter 1s fall 2 rise 2", extra_defaults: str = "") -> Proc:
        """HAProxy 2.x in mode tcp: first server active, the others ``backup``.

        servers: [(server_name, ip), ...]; each port is forwarded to the same port on the server.
        The config is written to <workdir>/<name>.cfg.
        """
        exe = shutil.which("haproxy") or "/usr/sbin/haproxy"
        lines = ["global", "    nbthread 1", "    maxconn 4096", "",
                 "defaults", "    mode tcp", "    timeout connect 2s", "    timeout client 1h",
                 "    timeout server 1h", "    option tcp-check"]
        if extra_defaults:
            lines += ["    " + x for x in extra_defaults.strip().splitlines()]
        lines.append("")
        for port in ports:
            lines += [f"listen salt_{port}", f"    bind {listen_ip}:{port}"]
            for i, (sname, ip) in enumerate(servers):
                lines.append(f"    server {sname} {ip}:{port} {check}" + (" backup" if i else ""))
            lines.append("")
        cfg = os.path.join(self.workdir, f"{name}.cfg")
        self._write(cfg, "\n".join(lines))
        subprocess.run([exe, "-c", "-f", cfg], check=True, capture_output=True, timeout=30)
        return self.start_proc(name, [exe, "-db", "-f", cfg], [(listen_ip, p) for p in ports])

    # ------------------------------------------------------------ commands
    def salt(self, master: str, *args: str, timeout: float = 60.0, cmd: str = "salt") -> subprocess.CompletedProcess:
        """Run ``<cmd> -c <master confdir> args...`` (cmd: salt, salt-run, salt-key)."""
        m = self.masters[master]
        argv = [os.path.join(self.bin, cmd), "-c", m.confdir, *args]
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                  env=self._env(), stdin=subprocess.DEVNULL, start_new_session=True)
        except subprocess.TimeoutExpired as e:
            return subprocess.CompletedProcess(argv, -9, e.stdout or "", (e.stderr or "") + "\n<timeout>")

    @staticmethod
    def _json(text: str) -> Any:
        text = (text or "").strip()
        if not text:
            return None
        try:
            return json.loads(text)
        except ValueError:
            pass
        # --out json with several minions/timeouts can print several documents
        for line in reversed(text.splitlines()):
            try:
                return json.loads(line)
            except ValueError:
                continue
        start = text.find("{")
        if start >= 0:
            try:
                return json.loads(text[start:])
            except ValueError:
                return None
        return None

    def ping(self, master: str, mid: str, timeout: float = 2) -> bool:
        r = self.salt(master, mid, "test.ping", "--timeout", str(int(max(1, timeout))), "--out", "json",
                      timeout=timeout + 15)
        data = self._json(r.stdout)
        return isinstance(data, dict) and data.get(mid) is True

    def wait_ping(self, master: str, mid: str, deadline: float = 120.0, interval: float = 0.5,
                  timeout: float = 1, since: Optional[float] = None, method: str = "client") -> Optional[float]:
        """Poll test.ping on ``mid`` through ``master`` every ``interval`` s (each with ``timeout``).

        Returns seconds from ``since`` (a time.monotonic() value, default: now)
        until the first ping return, or None after ``deadline`` s.

        method="client" (default): one long-lived LocalClient (see poll_ping)
        publishes a ping every ``interval`` s and takes the arrival time of
        the first return event: ~0.1 s resolution.
        method="cli": runs ``salt -c ... test.ping --timeout N --out json`` in
        a loop; each failed try costs ~3.5 s (interpreter start + timeout +
        gather_job_timeout), so the resolution is that coarse.
        """
        t0 = time.monotonic() if since is None else since
        if method == "client":
            res = self.poll_ping(master, mid, deadline, interval, timeout)
            return None if res.get("t_ok") is None else res["t_ok"] - t0
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            start = time.monotonic()
            if self.ping(master, mid, timeout):
                return time.monotonic() - t0
            time.sleep(max(0.0, interval - (time.monotonic() - start)))
        return None

    def poll_ping(self, master: str, mid: str, deadline: float = 120.0, interval: float = 0.5,
                  timeout: float = 1) -> Dict[str, Any]:
        """Start a PingWatch on ``master`` and wait for its result (see PingWatch)."""
        return self.watch_ping(master, mid, deadline, interval, timeout).result()

    def watch_ping(self, master: str, mid: str, deadline: float = 120.0, interval: float = 0.5,
                   timeout: float = 1) -> "PingWatch":
        """Start the venv-python pinger against ``master`` and return once it is ready.

        Start it *before* the event you time (e.g. kill_master) so interpreter
        start-up is not part of the measurement; then call ``.result()``.
        """
        return PingWatch(self, master, mid, deadline, interval, timeout)

    def run_job(self, master: str, mid: str, fun: str, args: Sequence[Any] = (), timeout: float = 10) -> Tuple[Optional[str], Any]:
        """Run ``fun`` on ``mid`` through ``master``; returns (jid, return value or None)."""
        r = self.salt(master, mid, fun, *[str(a) for a in args], "--timeout", str(int(timeout)),
                      "--out", "json", "--show-jid", timeout=timeout + 30)
        jid = None
        for line in (r.stdout + "\n" + r.stderr).splitlines():
            if line.startswith("jid:"):
                jid = line.split(":", 1)[1].strip()
        body = "\n".join(x for x in r.stdout.splitlines() if not x.startswith("jid:"))
        data = self._json(body)
        ret = data.get(mid) if isinstance(data, dict) else None
        return jid, ret

    def lookup_jid(self, master: str, jid: str, timeout: float = 30) -> Dict[str, Any]:
        """The master's job cache for ``jid``: {minion_id: return} (``salt-run jobs.lookup_jid``)."""
        r = self.salt(master, "jobs.lookup_jid", jid, "--out", "json", timeout=timeout, cmd="salt-run")
        data = self._json(r.stdout)
        return data if isinstance(data, dict) else {}

    def list_keys(self, master: str) -> Dict[str, List[str]]:
        r = self.salt(master, "-L", "--out", "json", cmd="salt-key")
        data = self._json(r.stdout)
        return data if isinstance(data, dict) else {}

    def accept_key(self, master: str, mid: str, timeout: float = 60.0) -> None:
        """Wait until ``mid``'s key is pending on ``master`` (the minion must be
        pointed at it and running), then accept it. No-op if already accepted."""
        end = time.monotonic() + timeout
        while True:
            keys = self.list_keys(master)
            if mid in keys.get("minions", []):
                return
            if mid in keys.get("minions_pre", []):
                r = self.salt(master, "-a", mid, "-y", cmd="salt-key")
                if r.returncode != 0:
                    raise RuntimeError(f"salt-key -a {mid} failed: {r.stdout}{r.stderr}")
                self._log(f"accepted {mid} on {master}")
                return
            if time.monotonic() > end:
                raise TimeoutError(f"key of {mid} never pending on {master}: {keys}")
            time.sleep(0.5)

    # ------------------------------------------------------------ teardown / logs
    def log_files(self) -> List[str]:
        out = []
        for root, _dirs, files in os.walk(self.workdir):
            for f in files:
                if f.endswith(".log"):
                    out.append(os.path.join(root, f))
        return sorted(out)

    def print_logs(self, n: int = 40, file=None) -> None:
        file = file or sys.stderr
        for p in self.log_files():
            print(f"----- tail {n} {p}", file=file)
            print(tail(p, n), file=file)
        file.flush()

    def stop_all(self, grace: float = 3.0) -> None:
        """Stop everything this lab started: SIGTERM to every process group at
        once, SIGKILL to whatever is left after ``grace`` s. Idempotent."""
        for w in self._watches:
            w.kill()
        self._watches.clear()
        procs: List[Proc] = [x.proc for x in self.minions.values() if x.proc]
        procs += list(self.extra_procs.values())
        procs += [x.proc for x in self.masters.values() if x.proc]
        for p in procs:
            p.send(signal.SIGTERM)
        end = time.monotonic() + grace
        for p in procs:
            try:
                p.popen.wait(timeout=max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for p in procs:
            p.send(signal.SIGKILL)
        for p in procs:
            try:
                p.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            p._wait_group_gone(3.0)
        for x in list(self.minions.values()) + list(self.masters.values()):
            x.proc = None
        self.extra_procs.clear()
        if self._own_workdir and not self.keep and not self._stopped:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self._stopped = True

    def __enter__(self) -> "SaltLab":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and not self._stopped:
            self.keep = True
            print(f"SaltLab: {exc_type.__name__}: {exc}; files kept in {self.workdir}", file=sys.stderr)
            self.print_logs()
        self.stop_all()


A_IP, B_IP = "127.0.0.2", "127.0.0.3"


def wait_notice(log: str, since: float, closed_within: float = 6.0, limit: float = 40.0) -> Optional[float]:
    """Seconds from ``since`` (monotonic) until the sidecar's log at ``log`` says its publish
    connections are accepted again after closing the moved publish session (``salt_events``);
    None when it closed none within ``closed_within`` s (salt_events off) or did not reopen
    within ``limit`` s."""
    def text() -> str:
        try:
            with open(log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""
    while time.monotonic() - since < limit:
        t = text()
        if "publish connections accepted again" in t:
            return round(time.monotonic() - since, 3)
        if "publish session closed after a switch" not in t and time.monotonic() - since > closed_within:
            return None
        time.sleep(0.1)
    return None


def measure_failover(transport: str = "zeromq", minion_cfg: Optional[Dict[str, Any]] = None,
                 front: Any = None, front_ready: Sequence[Tuple[str, int]] = (("127.0.0.1", 4505), ("127.0.0.1", 4506)),
                 sig: int = signal.SIGKILL, cap: float = 120.0, check_job: bool = True,
                 workdir: Optional[str] = None, quiet: bool = True, log_level: str = "info",
                 keep: bool = False, minion_extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """One failover measurement in a fresh lab: masters A (127.0.0.2) and B (127.0.0.3),
    minion m1 with ``minion_cfg`` (default: native failover list A,B,
    master_alive_interval 1), optionally behind ``front``:

      None       the minion talks to the masters itself
      "haproxy"  HAProxy on 127.0.0.1:4505/4506, A active, B backup
      [argv...]  any proxy command (e.g. salt-sidecar); "{workdir}", "{A}", "{B}" in
                 its arguments are substituted; started after the masters, before
                 the minion, ready when ``front_ready`` ports listen

    Waits for test.ping through A, starts a pinger on B, sends ``sig`` to A's
    process group and returns {"seconds": kill -> first ping return through B
    (None after ``cap``), "first_ping_a", "job_cache_ok" (test.echo through B
    found by jobs.lookup_jid), "error", "workdir" (kept on failure)}.
    """
    own = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="salt-failover-")
    if minion_cfg is None:
        minion_cfg = {"master": [A_IP, B_IP], "master_type": "failover", "master_alive_interval": 1}
    lab = SaltLab(workdir, transport=transport, quiet=quiet, log_level=log_level)
    res: Dict[str, Any] = {"seconds": None}
    ok = False
    try:
        lab.add_master("A", A_IP)
        lab.add_master("B", B_IP)
        lab.add_minion("m1", dict(minion_cfg), extra=minion_extra)
        lab.start_masters()
        if front == "haproxy":
            lab.start_haproxy([("A", A_IP), ("B", B_IP)])
        elif front:
            argv = [str(a).format(workdir=workdir, A=A_IP, B=B_IP) for a in front]
            lab.start_proc("front", argv, list(front_ready))
        lab.start_minion("m1")
        first = lab.wait_ping("A", "m1", 60)
        if first is None:
            raise RuntimeError("minion never answered through master A")
        res["first_ping_a"] = round(first, 2)
        watch = lab.watch_ping("B", "m1", cap)
        t_kill = lab.kill_master("A", sig)
        res["kill_unix"] = time.time() - (time.monotonic() - t_kill)
        r = watch.result()
        if r.get("t_ok") is not None:
            res["seconds"] = round(r["t_ok"] - t_kill, 3)
        else:
            res["pinger"] = r
        if check_job and res["seconds"] is not None:
            if transport == "zeromq" and front not in (None, "haproxy"):
                # A sidecar with `salt_events` (the default) closes the moved publish
                # session at its first quiet moment and refuses the minion's publish
                # reconnects until it notices (Salt's semantics: a failing-over minion is
                # deaf meanwhile, natively too; scenario switch_events measures that). The
                # job is for the routing of returns through B: run it once the minion hears
                # B again.
                res["notice_s"] = wait_notice(os.path.join(workdir, "front.log"), t_kill)
                back = lab.poll_ping("B", "m1", 60)
                if back.get("t_ok") is not None:
                    res["heard_again_s"] = round(back["t_ok"] - t_kill, 3)
            jid, ret = lab.run_job("B", "m1", "test.echo", ["after-failover"])
            cached = lab.lookup_jid("B", jid) if jid else {}
            res["job_cache_ok"] = ret == "after-failover" and cached.get("m1") == "after-failover"
        ok = res["seconds"] is not None and res.get("job_cache_ok", True)
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
    finally:
        if not ok:
            res["workdir"] = workdir
            print(f"---- failover round failed ({res}); files kept in {workdir}", file=sys.stderr)
            lab.print_logs(30)
        lab.stop_all(grace=0.5)
        if ok and own and not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return res


# ---------------------------------------------------------------------- pinger (runs in the venv)
def _pinger(args: argparse.Namespace) -> int:
    """Publish test.ping every interval via one LocalClient; exit at the first return."""
    import logging

    import salt.client  # noqa: only importable with the venv's python

    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    t_start = time.monotonic()
    end = t_start + args.deadline
    res: Dict[str, Any] = {"t_ok": None, "published": 0, "errors": 0, "last_error": None}
    lc = salt.client.LocalClient(c_path=os.path.join(args.conf, "master"))
    lc.event.connect_pub(timeout=10)
    jids: Dict[str, float] = {}
    print(json.dumps({"ready": time.monotonic()}), flush=True)
    t_start = time.monotonic()
    end = t_start + args.deadline
    next_pub = t_start
    try:
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_pub:
                next_pub = now + args.interval
                try:
                    pub = lc.run_job(args.id, "test.ping", timeout=args.timeout, listen=True)
                    if pub and pub.get("jid"):
                        jids[str(pub["jid"])] = now
                        res["published"] += 1
                    else:
                        res["errors"] += 1
                        res["last_error"] = f"publish returned {pub!r}"
                except Exception as e:  # master down, timeouts...
                    res["errors"] += 1
                    res["last_error"] = repr(e)
            ev = lc.event.get_event(wait=0.05, tag="salt/job/", match_type="startswith", full=True)
            if not ev:
                continue
            parts = str(ev.get("tag", "")).split("/")
            data = ev.get("data") or {}
            if len(parts) >= 5 and parts[3] == "ret" and parts[4] == args.id and parts[2] in jids \
                    and data.get("return") is True:
                t = time.monotonic()
                res.update(t_ok=t, latency=t - jids[parts[2]], jid=parts[2])
                break
    finally:
        try:
            lc.destroy()
        except Exception:
            pass
    print(json.dumps(res), flush=True)
    return 0 if res["t_ok"] is not None else 1


# ---------------------------------------------------------------------- CLI
def _cli_smoke(args: argparse.Namespace) -> int:
    with SaltLab(args.workdir, transport=args.transport, keep=args.keep) as lab:
        lab.add_master("A", "127.0.0.2")
        lab.add_master("B", "127.0.0.3")
        lab.add_minion("m1", {"master": ["127.0.0.2", "127.0.0.3"], "master_type": "failover",
                              "master_alive_interval": 1})
        lab.start_master("A")
        lab.start_master("B")
        lab.start_minion("m1")
        t = lab.wait_ping("A", "m1", 60)
        print(json.dumps({"first_ping_A_s": t}))
        if t is None:
            lab.print_logs()
            return 1
        jid, ret = lab.run_job("A", "m1", "test.echo", ["hello"])
        cached = lab.lookup_jid("A", jid) if jid else {}
        print(json.dumps({"jid": jid, "ret": ret, "job_cache": cached}))
        ok = ret == "hello" and cached.get("m1") == "hello"
        if not ok:
            lab.print_logs()
        return 0 if ok else 1


def _cli_failover(args: argparse.Namespace) -> int:
    cfg = json.loads(args.minion) if args.minion else None
    front: Any = None
    if args.haproxy:
        front = "haproxy"
    elif args.proxy:
        import shlex
        front = shlex.split(args.proxy)
    ready = []
    for hp in args.ready or ["127.0.0.1:4505", "127.0.0.1:4506"]:
        h, p = hp.rsplit(":", 1)
        ready.append((h, int(p)))
    sig = getattr(signal, args.kill)
    results = []
    for i in range(args.rounds):
        r = measure_failover(args.transport, cfg, front=front, front_ready=ready, sig=sig,
                             cap=args.cap, check_job=not args.no_job, workdir=None,
                             quiet=not args.verbose, log_level=args.log_level, keep=args.keep)
        r["round"] = i + 1
        print(json.dumps(r), flush=True)
        results.append(r)
    secs = sorted(float("inf") if r["seconds"] is None else r["seconds"] for r in results)
    med = secs[len(secs) // 2] if len(secs) % 2 else (secs[len(secs) // 2 - 1] + secs[len(secs) // 2]) / 2
    print(json.dumps({"rounds_s": [r["seconds"] for r in results],
                      "median_s": None if med == float("inf") else round(med, 3)}), flush=True)
    bad = [r for r in results if r["seconds"] is None or r.get("error") or r.get("job_cache_ok") is False]
    if args.max_seconds is not None:
        bad += [r for r in results if r["seconds"] is not None and r["seconds"] > args.max_seconds]
    return 1 if bad else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "_pinger":
        pp = argparse.ArgumentParser(prog="harness.py _pinger")
        pp.add_argument("--conf", required=True)
        pp.add_argument("--id", required=True)
        pp.add_argument("--deadline", type=float, default=120)
        pp.add_argument("--interval", type=float, default=0.5)
        pp.add_argument("--timeout", type=float, default=1)
        return _pinger(pp.parse_args(argv[1:]))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="print whether salt (venv) and haproxy are installed; exit 1 without salt")
    sm = sub.add_parser("smoke", help="2 masters + 1 minion: ping, job, job cache")
    fo = sub.add_parser("failover", help="measure kill-A -> ping-through-B (one JSON line per round)")
    for p in (sm, fo):
        p.add_argument("--transport", default="zeromq", choices=["zeromq", "tcp"])
        p.add_argument("--keep", action="store_true", help="keep the lab's files")
        p.add_argument("--verbose", action="store_true")
    sm.add_argument("--workdir")
    fo.add_argument("--minion", help='minion master keys as JSON, e.g. \'{"master": "127.0.0.1"}\' '
                                     "(default: native failover list A,B with master_alive_interval 1)")
    fo.add_argument("--haproxy", action="store_true", help="HAProxy (A active, B backup) on 127.0.0.1")
    fo.add_argument("--proxy", help="proxy command line started after the masters ({workdir} {A} {B} substituted)")
    fo.add_argument("--ready", action="append", help="HOST:PORT the proxy must listen on (repeatable; "
                                                     "default 127.0.0.1:4505 and :4506)")
    fo.add_argument("--kill", default="SIGKILL", choices=["SIGKILL", "SIGTERM", "SIGSTOP"])
    fo.add_argument("--rounds", type=int, default=1)
    fo.add_argument("--cap", type=float, default=120.0)
    fo.add_argument("--max-seconds", type=float, help="exit 1 if a round took longer")
    fo.add_argument("--no-job", action="store_true", help="skip the test.echo + jobs.lookup_jid check")
    fo.add_argument("--log-level", default="info")
    args = ap.parse_args(argv)
    if args.command == "check":
        ok = salt_available()
        print(json.dumps({"venv": venv_dir(), "salt": ok, "haproxy": bool(shutil.which("haproxy"))}))
        return 0 if ok else 1
    if not salt_available():
        print(f"no salt in venv {venv_dir()} (run scripts/test-deps)", file=sys.stderr)
        return 2
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, lambda *_: sys.exit(128 + 15))
    if args.command == "failover":
        return _cli_failover(args)
    return _cli_smoke(args)


if __name__ == "__main__":
    sys.exit(main())
