#!/usr/bin/env python3
"""Real-Salt-on-one-box test harness for salt-sidecar.

Pure standard library: it runs the Salt binaries of a venv (default
``${SALT_SIDECAR_VENV:-/var/cache/salt-sidecar/venv}``, created by
``scripts/test-deps``) as subprocesses, so it can be imported by any Python 3.9+.

Everything lives under one work directory: configs, pki, caches, sockets, logs.
Nothing touches /etc/salt or /var/cache/salt; every salt command gets ``-c``.

Library use::

    from harness import SaltLab
    with SaltLab(transport="zeromq") as lab:          # temp workdir, stop_all() on exit
        lab.add_master("A", "127.0.0.2")
        lab.add_master("B", "127.0.0.3")
        lab.add_minion("m1", {"master": ["127.0.0.2", "127.0.0.3"],
                              "master_type": "failover", "master_alive_interval": 1})
        lab.start_master("A"); lab.start_master("B")
        lab.start_minion("m1")                           # key is pre-seeded on every master
        assert lab.wait_ping("A", "m1", 60) is not None
        lab.kill_master("A")                             # SIGKILL to A's whole process group
        print(lab.wait_ping("B", "m1", 120))              # seconds until B answers
        jid, ret = lab.run_job("B", "m1", "test.echo", ["hi"])
        assert lab.lookup_jid("B", jid)["m1"] == "hi"

On an exception inside ``with`` the tail of every log is printed to stderr.

CLI (for poking at a lab by hand)::

    tests/salt/harness.py smoke [--transport tcp] [--workdir DIR] [--keep]
    tests/salt/harness.py failover [--transport tcp] [--rounds 1]
"""

from __future__ import annotations

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

# Minion options that keep reconnects, re-auth and key waits short and
# deterministic on a test box. Any of them can be overridden per minion.
FAST_MINION_DEFAULTS: Dict[str, Any] = {
    "recon_default": 100,  # ms, zmq reconnect interval
    "recon_max": 500,  # ms
    "recon_randomize": False,
    "acceptance_wait_time": 1,  # s between auth retries while the key is pending
    "acceptance_wait_time_max": 1,
    "random_reauth_delay": 0,
    "auth_timeout": 5,
    "auth_tries": 2,
    "retry_dns": 0,
    "enable_fqdns_grains": False,
    "enable_gpu_grains": False,
    "grains_refresh_every": 0,
    "mine_enabled": False,
    "startup_states": "",
    "ipv6": False,
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


class Master:
    def __init__(self, name: str, ip: str, confdir: str, publish_port: int, ret_port: int):
        self.name, self.ip, self.confdir = name, ip, confdir
        self.publish_port, self.ret_port = publish_port, ret_port
        self.proc: Optional[Proc] = None

    @property
    def log(self) -> str:
        return os.path.join(self.confdir, "..", "log", "master.log")


class Minion:
    def __init__(self, mid: str, confdir: str, cfg: Dict[str, Any]):
        self.id, self.confdir, self.cfg = mid, confdir, cfg
        self.proc: Optional[Proc] = None


class SaltLab:
    """A set of Salt masters, minions (and optionally HAProxy) on one box.

    workdir: None -> a fresh temp dir (removed by stop_all unless keep=True).
    transport: "zeromq" or "tcp" (written as ``transport:`` on masters and minions).
    log_level: the log files' level (debug helps when a scenario misbehaves).
    """

    def __init__(self, workdir: Optional[str] = None, transport: str = "zeromq",
                 venv: Optional[str] = None, keep: bool = False, log_level: str = "info",
                 quiet: bool = False):
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
        self.masters: Dict[str, Master] = {}
        self.minions: Dict[str, Minion] = {}
        self.extra_procs: Dict[str, Proc] = {}
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

    def gen_keypair(self, keysize: int = 2048) -> Tuple[str, str]:
        """(private PEM, public PEM) made with salt.crypt.gen_keys in the venv."""
        code = ("import json,salt.crypt;p,q=salt.crypt.gen_keys(%d);"
                "print(json.dumps([p,q]))" % keysize)
        out = subprocess.run([os.path.join(self.bin, "python"), "-c", code], check=True,
                             capture_output=True, text=True, env=self._env(), timeout=120)
        priv, pub = json.loads(out.stdout)
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
            self._master_key = self.gen_keypair()
        priv, pub = self._master_key
        for base in (name, "master"):
            self._write(os.path.join(d["pki"], f"{base}.pem"), priv, 0o400)
            self._write(os.path.join(d["pki"], f"{base}.pub"), pub, 0o644)
        m = Master(name, ip, confdir, publish_port, ret_port)
        m.log_file = cfg["log_file"]  # type: ignore[attr-defined]
        m.stdout_log = os.path.join(d["log"], "stdout.log")  # type: ignore[attr-defined]
        m.pki = d["pki"]  # type: ignore[attr-defined]
        self.masters[name] = m
        # pre-seed already-added minions' keys
        for mn in self.minions.values():
            if getattr(mn, "preseed", False):
                self._seed_minion_key(m, mn)
        return m

    def start_master(self, name: str, wait: float = 60.0) -> None:
        m = self.masters[name]
        if m.proc and m.proc.alive():
            raise RuntimeError(f"master {name} already running")
        self._wait_ports_free([(m.ip, m.publish_port), (m.ip, m.ret_port)], 10)
        m.proc = Proc(f"master-{name}", [os.path.join(self.bin, "salt-master"), "-c", m.confdir,
                                         "-l", "warning"], m.stdout_log, self._env())  # type: ignore[attr-defined]
        t0 = time.monotonic()
        try:
            wait_ports([(m.ip, m.publish_port), (m.ip, m.ret_port)], wait, m.proc.popen)
            # the ret port is up before the local client IPC: wait for the sockets in sock_dir
            self._wait_master_ipc(m, max(1.0, wait - (time.monotonic() - t0)))
        except Exception:
            self.print_logs()
            raise
        self._log(f"master {name} up on {m.ip}:{m.publish_port}/{m.ret_port} "
                  f"pid {m.proc.pid} in {time.monotonic() - t0:.1f}s")

    def _wait_master_ipc(self, m: Master, timeout: float) -> None:
        sock = os.path.join(self.workdir, f"master-{m.name}", "sock")
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            names = os.listdir(sock) if os.path.isdir(sock) else []
            if any(n.startswith("master_event_pub") for n in names):
                return
            time.sleep(0.1)
        raise TimeoutError(f"master {m.name}: no event socket in {sock}")

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
        mn.log_file = cfg["log_file"]  # type: ignore[attr-defined]
        mn.stdout_log = os.path.join(d["log"], "stdout.log")  # type: ignore[attr-defined]
        mn.pki = d["pki"]  # type: ignore[attr-defined]
        mn.preseed = preseed  # type: ignore[attr-defined]
        if preseed:
            priv, pub = self.gen_keypair()
            self._write(os.path.join(d["pki"], "minion.pem"), priv, 0o400)
            self._write(os.path.join(d["pki"], "minion.pub"), pub, 0o644)
            mn.pub = pub  # type: ignore[attr-defined]
            for m in self.masters.values():
                self._seed_minion_key(m, mn)
        self.minions[mid] = mn
        return mn

    def _seed_minion_key(self, m: Master, mn: Minion) -> None:
        self._write(os.path.join(m.pki, "minions", mn.id), mn.pub)  # type: ignore[attr-defined]

    def start_minion(self, mid: str) -> None:
        mn = self.minions[mid]
        if mn.proc and mn.proc.alive():
            raise RuntimeError(f"minion {mid} already running")
        sched = os.path.join(mn.confdir, "minion.d", "_schedule.conf")
        if os.path.exists(sched):
            os.unlink(sched)
        mn.proc = Proc(f"minion-{mid}", [os.path.join(self.bin, "salt-minion"), "-c", mn.confdir,
                                         "-l", "warning"], mn.stdout_log, self._env())  # type: ignore[attr-defined]
        time.sleep(0.2)
        if not mn.proc.alive():
            self.print_logs()
            raise RuntimeError(f"minion {mid} exited at once ({mn.proc.popen.returncode})")
        self._log(f"minion {mid} started pid {mn.proc.pid}")

    def stop_minion(self, mid: str) -> None:
        mn = self.minions[mid]
        if mn.proc:
            mn.proc.stop()
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
                  timeout: float = 1, since: Optional[float] = None) -> Optional[float]:
        """Poll test.ping through ``master`` every ``interval`` s until it succeeds.

        Returns seconds from ``since`` (a time.monotonic(), default: now) to the
        end of the first successful ping, or None after ``deadline`` s.
        """
        t0 = time.monotonic() if since is None else since
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            start = time.monotonic()
            if self.ping(master, mid, timeout):
                return time.monotonic() - t0
            time.sleep(max(0.0, interval - (time.monotonic() - start)))
        return None

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

    def stop_all(self) -> None:
        """Stop everything this lab started (minions, proxies, masters), by process group."""
        for mn in self.minions.values():
            if mn.proc:
                mn.proc.stop()
                mn.proc = None
        for name in list(self.extra_procs):
            self.stop_proc(name)
        for m in self.masters.values():
            if m.proc:
                m.proc.stop()
                m.proc = None
        if self._own_workdir and not self.keep and not self._stopped:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self._stopped = True

    def __enter__(self) -> "SaltLab":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and not self._stopped:
            print(f"SaltLab: {exc_type.__name__}: {exc}; workdir {self.workdir}", file=sys.stderr)
            self.print_logs()
        self.stop_all()


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


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["smoke", "check"])
    ap.add_argument("--transport", default="zeromq", choices=["zeromq", "tcp"])
    ap.add_argument("--workdir")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)
    if args.command == "check":
        ok = salt_available()
        print(json.dumps({"venv": venv_dir(), "salt": ok, "haproxy": bool(shutil.which("haproxy"))}))
        return 0 if ok else 1
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, lambda *_: sys.exit(128 + 15))
    return _cli_smoke(args)


if __name__ == "__main__":
    sys.exit(main())
