#!/usr/bin/env python3
"""Many Salt minion stand-ins in one process, for scripts/fleet (the fleet lab, issue 22).

Runs with the test venv's python (pyzmq, salt 3008). Two kinds:

* ``idle``: per minion a ZeroMQ SUB (publish port) and a DEALER (ret port), connected and left
  alone. That is what an idle minion's sessions look like to its master (or its sidecar); it
  signs in nowhere. Used for the master-CPU measurement, where only connections count.
* ``salt``: per minion a real Salt sign-in. Salt's own code does everything but the sockets:
  one ``salt.crypt.AsyncAuth`` per minion id (its own pki dir with a pre-accepted key) builds
  the ``_auth`` request and checks the master's answer (``minion_sign_in_payload``,
  ``handle_signin_response``: master signature, nonce, RSA-decrypted AES and session keys),
  ``salt.crypt.Crypticle`` decrypts publications and encrypts returns, ``salt.payload``
  frames them. The sockets are this file's, all on one ``zmq.asyncio`` context and one
  asyncio loop, shaped like a 3008 minion's: a SUB on the publish port, a long-lived REQ on
  the ret port for returns, and a *new* REQ (a new TCP connection) for every sign-in, as
  ``AsyncAuth._authenticate`` opens a fresh channel. Salt's own ``AsyncReqChannel`` would
  start a ZeroMQ context, so an I/O thread, per channel: thousands of threads for 500
  minions; this way the same bytes cost one process.

  Behaviour follows the minion: sign in at start (at most ``start_concurrency`` at once);
  a publication it cannot decrypt (a new master's AES key: Salt's ``_decode_payload``)
  makes it sign in again at once and decrypt again; a publication for it (``glob`` or
  ``list`` target) is answered with a ``_return`` (``return: True``) on the ret REQ; an
  answer to it that does not decrypt with the session key (the master holds a newer one)
  makes it sign in again and send once more (Salt's ``_crypted_transfer``). A sign-in
  unanswered in ``auth_timeout`` s is sent again on a new socket up to ``auth_tries``
  times, then retried after ``acceptance_wait_time`` s (Salt's defaults: 5 s, 7, 10 s); a
  return unanswered in ``return_timeout`` s is dropped (logged).

Usage::

    python fleet_minions.py genkeys DIR N      # DIR/fleet-NNNN.{pem,pub}; existing ones kept
    python fleet_minions.py run SPEC.json      # runs until SIGTERM/SIGINT
    python fleet_minions.py publish CONFDIR IDS.json ANSWERED.txt INTERVAL DEADLINE
    python fleet_minions.py watch CONFDIR IDS.json ANSWERED.txt DEADLINE
        (a master's test.ping publisher and its return watcher; see their docstrings)

SPEC: {"kind": "idle"|"salt", "events": PATH, "minions": [{"id", "pki", "pub": "ip:port",
"ret": "ip:port"}], optional "auth_timeout", "auth_tries", "acceptance_wait_time",
"return_timeout", "start_concurrency"}. stdout gets one JSON line {"ready": n, "failed": m}
once every minion is connected (idle) or has signed in or given up its first sign-in (salt),
then {"done": ...} at exit. Events go to SPEC.events as JSON lines with the wall clock
(``t``, Unix seconds, to compare with the masters' logs): ``auth_send`` / ``auth_ok`` /
``auth_timeout`` / ``auth_fail`` (with ``reason`` ``initial`` or ``decrypt``), ``job``
(jid, decrypted), ``ret_ok`` / ``ret_timeout`` (jid).
"""

import asyncio
import copy
import fnmatch
import json
import os
import resource
import signal
import sys
import time
import uuid


def emit(**kw):
    print(json.dumps(kw), flush=True)


def genkeys(d, n):
    import salt.crypt

    os.makedirs(d, exist_ok=True)
    made = 0
    for i in range(n):
        base = os.path.join(d, "fleet-%04d" % i)
        if os.path.exists(base + ".pub"):
            continue
        priv, pub = salt.crypt.gen_keys(2048)
        with open(base + ".pem", "w") as f:
            f.write(priv)
        with open(base + ".pub.tmp", "w") as f:
            f.write(pub)
        os.rename(base + ".pub.tmp", base + ".pub")  # .pub last: its presence means complete
        made += 1
    emit(keys=n, made=made, dir=d)
    return 0


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_idle(spec):
    import zmq

    ctx = zmq.Context(io_threads=2)
    ctx.MAX_SOCKETS = 4 * len(spec["minions"]) + 64
    socks = []
    for m in spec["minions"]:
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect("tcp://" + m["pub"])
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect("tcp://" + m["ret"])
        socks += [sub, dealer]
    emit(ready=len(spec["minions"]), failed=0)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    while not stop:
        time.sleep(0.2)
    for s in socks:
        s.close(0)
    ctx.term()
    emit(done=True)
    return 0


class Events:
    def __init__(self, path):
        self.f = open(path, "a", buffering=1 << 16)

    def __call__(self, mid, ev, **kw):
        kw.update(t=round(time.time(), 4), id=mid, ev=ev)
        self.f.write(json.dumps(kw) + "\n")

    def close(self):
        self.f.close()


class StandIn:
    """One minion: Salt's AsyncAuth for the crypto, our own sockets."""

    def __init__(self, lab, m, opts):
        import salt.crypt

        self.lab, self.id = lab, m["id"]
        self.pub_uri, self.ret_uri = "tcp://" + m["pub"], "tcp://" + m["ret"]
        self.opts = opts
        self.auth = salt.crypt.AsyncAuth(opts, io_loop=lab.tornado_loop)
        self.auth_lock = asyncio.Lock()
        self.signed_in = False
        self.jobs_seen = set()
        self.ret_lock = asyncio.Lock()

    # ---- sign-in: a new REQ socket each time, like AsyncAuth._authenticate's fresh channel
    async def sign_in(self, reason):
        import salt.crypt
        import salt.payload
        import zmq

        async with self.auth_lock:
            gen = self.auth_gen
            tries = 0
            while not self.lab.stopping:
                payload = self.auth.minion_sign_in_payload()
                msg = salt.payload.dumps({"enc": "clear", "load": payload, "version": 3})
                sock = self.lab.ctx.socket(zmq.REQ)
                sock.setsockopt(zmq.LINGER, 0)
                sock.connect(self.ret_uri)
                tries += 1
                self.lab.ev(self.id, "auth_send", reason=reason, attempt=tries)
                try:
                    await sock.send(msg)
                    reply = await asyncio.wait_for(sock.recv(), self.lab.auth_timeout)
                except asyncio.TimeoutError:
                    self.lab.ev(self.id, "auth_timeout", reason=reason, attempt=tries)
                    if tries % self.lab.auth_tries == 0:
                        await asyncio.sleep(self.lab.acceptance_wait_time)
                    continue
                finally:
                    sock.close(0)
                try:
                    creds = self.auth.handle_signin_response(payload, salt.payload.loads(reply))
                except Exception as e:  # a bad answer: Salt raises SaltClientError
                    self.lab.ev(self.id, "auth_fail", reason=reason, error=repr(e)[:200])
                    creds = None
                if isinstance(creds, dict) and "aes" in creds:
                    self.auth._creds = creds
                    self.auth._crypticle = salt.crypt.Crypticle(self.opts, creds["aes"])
                    self.auth._session_crypticle = salt.crypt.Crypticle(self.opts, creds["session"])
                    self.auth_gen = gen + 1
                    self.signed_in = True
                    self.lab.ev(self.id, "auth_ok", reason=reason, attempt=tries)
                    return True
                self.lab.ev(self.id, "auth_fail", reason=reason, answer=str(creds)[:100])
                await asyncio.sleep(self.lab.acceptance_wait_time)
            return False

    auth_gen = 0

    async def run(self):
        import zmq

        self.sub = self.lab.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(self.pub_uri)
        # the long-lived request channel, connected at start as a minion's is (so a sidecar
        # moves it on a switch like the SUB), used for returns
        self.req = self.lab.ctx.socket(zmq.REQ)
        self.req.setsockopt(zmq.LINGER, 0)
        self.req.connect(self.ret_uri)
        try:
            async with self.lab.start_gate:
                await self.sign_in("initial")
        except Exception as e:  # reported, never silent: the driver counts failed starts
            self.lab.ev(self.id, "auth_fail", reason="initial", error=repr(e)[:200])
        finally:
            self.lab.started(self)
        while not self.lab.stopping:
            try:
                await self.on_publication(await self.sub.recv_multipart())
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.lab.ev(self.id, "error", error=repr(e)[:200])

    async def on_publication(self, frames):
        import salt.crypt
        import salt.payload

        try:
            pkg = salt.payload.loads(frames[-1])
        except Exception:
            return
        if not isinstance(pkg, dict) or pkg.get("enc") != "aes":
            return
        gen = self.auth_gen
        try:
            load = self.auth.crypticle.loads(pkg["load"])
        except salt.crypt.AuthenticationError:
            # Salt's _decode_payload: sign in again at once, decrypt again
            if self.auth_gen == gen:
                await self.sign_in("decrypt")
            try:
                load = self.auth.crypticle.loads(pkg["load"])
            except salt.crypt.AuthenticationError:
                self.lab.ev(self.id, "decrypt_fail")
                return
        if not isinstance(load, dict) or not self.targeted(load):
            return
        jid = str(load.get("jid"))
        if jid in self.jobs_seen:
            return
        self.jobs_seen.add(jid)
        self.lab.ev(self.id, "job", jid=jid, fun=load.get("fun"))
        asyncio.ensure_future(self.send_return(load))

    def targeted(self, load):
        tgt, kind = load.get("tgt"), load.get("tgt_type", "glob")
        if kind == "list":
            return isinstance(tgt, (list, tuple)) and self.id in tgt
        if kind == "glob" and isinstance(tgt, str):
            return fnmatch.fnmatch(self.id, tgt)
        return False

    async def send_return(self, load):
        """A ``_return`` on the long-lived ret REQ, as AsyncReqChannel._crypted_transfer does
        it: the load encrypted with the session key, the reply decrypted with it; a reply that
        does not decrypt (the master holds a newer session key for this id, e.g. from a
        sign-in whose answer came after this minion had given up on it) makes the minion sign
        in again and send once more."""
        import salt.crypt
        import salt.payload
        import zmq

        jid = str(load.get("jid"))
        async with self.ret_lock:
            for attempt in (1, 2):
                if self.req is None:
                    self.req = self.lab.ctx.socket(zmq.REQ)
                    self.req.setsockopt(zmq.LINGER, 0)
                    self.req.connect(self.ret_uri)
                ret = {"cmd": "_return", "id": self.id, "success": True, "return": True, "retcode": 0,
                       "jid": load.get("jid"), "fun": load.get("fun"), "fun_args": load.get("arg", []),
                       "nonce": uuid.uuid4().hex, "ts": int(time.time()),
                       "tok": self.auth.gen_token(b"salt")}
                crypticle = self.auth.session_crypticle
                body = {"enc": "aes", "load": crypticle.dumps(ret), "version": 3, "id": self.id,
                        "enc_algo": self.opts["encryption_algorithm"],
                        "sig_algo": self.opts["signing_algorithm"]}
                try:
                    await self.req.send(salt.payload.dumps(body))
                    raw = await asyncio.wait_for(self.req.recv(), self.lab.return_timeout)
                except asyncio.TimeoutError:
                    self.lab.ev(self.id, "ret_timeout", jid=jid)
                    self.req.close(0)  # a REQ that got no reply cannot send again
                    self.req = None
                    return
                try:
                    crypticle.loads(salt.payload.loads(raw), nonce=ret["nonce"])
                except Exception as e:  # Salt: AuthenticationError -> authenticate(), send again
                    self.lab.ev(self.id, "ret_refused", jid=jid, attempt=attempt, error=repr(e)[:120])
                    if attempt == 1:
                        await self.sign_in("return")
                    continue
                self.lab.ev(self.id, "ret_ok", jid=jid, attempt=attempt)
                return


class Lab:
    def __init__(self, spec):
        self.spec = spec
        self.auth_timeout = float(spec.get("auth_timeout", 5))
        self.auth_tries = int(spec.get("auth_tries", 7))
        self.acceptance_wait_time = float(spec.get("acceptance_wait_time", 10))
        self.return_timeout = float(spec.get("return_timeout", 30))
        self.stopping = False
        self.ev = Events(spec["events"])
        self.n_started = 0
        self.n_ok = 0

    def started(self, s):
        self.n_started += 1
        self.n_ok += 1 if s.signed_in else 0
        if self.n_started == len(self.minions):
            emit(ready=self.n_ok, failed=self.n_started - self.n_ok)

    async def main(self):
        import salt.config
        import tornado.ioloop
        import zmq
        import zmq.asyncio

        self.tornado_loop = tornado.ioloop.IOLoop.current()
        self.ctx = zmq.asyncio.Context(io_threads=2)
        self.ctx.MAX_SOCKETS = 8 * len(self.spec["minions"]) + 256
        self.start_gate = asyncio.Semaphore(int(self.spec.get("start_concurrency", 16)))
        base = salt.config.minion_config(None)
        base.update(__role="minion", auth_timeout=self.auth_timeout, auth_tries=self.auth_tries,
                    acceptance_wait_time=self.acceptance_wait_time)
        self.minions = []
        for m in self.spec["minions"]:
            opts = copy.deepcopy(base)
            host, port = m["ret"].rsplit(":", 1)
            opts.update(id=m["id"], pki_dir=m["pki"], cachedir=os.path.join(m["pki"], "cache"),
                        master=host, master_ip=host, master_port=int(port),
                        publish_port=int(m["pub"].rsplit(":", 1)[1]),
                        master_uri="tcp://" + m["ret"])
            self.minions.append(StandIn(self, m, opts))
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(True))
        tasks = [asyncio.ensure_future(s.run()) for s in self.minions]
        await stop
        self.stopping = True
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        errors = [repr(t.exception())[:200] for t in tasks
                  if not t.cancelled() and t.exception() is not None]
        self.ev.close()
        self.ctx.destroy(0)
        emit(done=True, task_errors=errors[:5], n_task_errors=len(errors))


def publish(confdir, ids_path, answered_path, interval, deadline):
    """A Salt LocalClient on one master (its config dir); after a "go" line on stdin, every
    ``interval`` s it publishes test.ping to the minions no master has had an answer from yet
    (tgt_type list; ``answered_path`` is written by ``watch``), until all answered or
    ``deadline`` s. It reads no events: LocalClient.run_job on a busy master blocks for many
    seconds and consumes events meanwhile, so the answers are the watcher's. One JSON line
    per publication on stdout: {"ev": "pub", "t", "n", "jid"} or {"ev": "pub_error", ...}."""
    import logging

    import salt.client

    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    with open(ids_path) as f:
        todo = set(json.load(f))
    lc = salt.client.LocalClient(c_path=os.path.join(confdir, "master"))
    emit(ready=True)
    sys.stdin.readline()
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        t0 = time.monotonic()
        try:
            with open(answered_path) as f:
                todo -= {x.strip() for x in f}
        except OSError:
            pass
        if not todo:
            break
        try:
            pub = lc.run_job(sorted(todo), "test.ping", tgt_type="list", timeout=interval, listen=False)
            if pub and pub.get("jid"):
                emit(ev="pub", t=round(time.time(), 4), n=len(todo), jid=str(pub["jid"]),
                     took=round(time.monotonic() - t0, 3))
            else:
                emit(ev="pub_error", t=round(time.time(), 4), error=repr(pub)[:200])
        except Exception as e:  # a master busy past its timeout
            emit(ev="pub_error", t=round(time.time(), 4), error=repr(e)[:200],
                 took=round(time.monotonic() - t0, 3))
        time.sleep(max(0.0, interval - (time.monotonic() - t0)))
    emit(done=True, not_answered=len(todo))
    sys.stderr.flush()
    os._exit(0)  # LocalClient.destroy() can wait for ever on a ZeroMQ context


def watch(confdir, ids_path, answered_path, deadline):
    """Listens to one master's event bus (nothing else, so it never falls behind) for
    test.ping returns from the given minions; appends each minion's id to ``answered_path``
    at its first return and prints {"ev": "ret", "id", "t"}; exits once every minion has
    answered (at any master: the file is shared) or after ``deadline`` s from "go"."""
    import logging

    import salt.config
    import salt.utils.event

    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    with open(ids_path) as f:
        todo = set(json.load(f))
    opts = salt.config.client_config(os.path.join(confdir, "master"))
    event = salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True)
    event.connect_pub(timeout=10)
    shared = open(answered_path, "a+", buffering=1)
    emit(ready=True)
    sys.stdin.readline()
    end = time.monotonic() + deadline
    last_read = 0.0
    while todo and time.monotonic() < end:
        if time.monotonic() - last_read > 0.5:  # the other masters' watchers
            shared.seek(0)
            todo -= {x.strip() for x in shared.readlines()}
            last_read = time.monotonic()
        ev = event.get_event(wait=0.2, tag="salt/job/", match_type="startswith", full=True)
        if not ev:
            continue
        parts = str(ev.get("tag", "")).split("/")
        data = ev.get("data") or {}
        if len(parts) >= 5 and parts[3] == "ret" and parts[4] in todo and data.get("fun") == "test.ping":
            todo.discard(parts[4])
            shared.seek(0, os.SEEK_END)
            shared.write(parts[4] + "\n")
            emit(ev="ret", id=parts[4], t=round(time.time(), 4))
    emit(done=True, not_answered=len(todo))
    sys.stderr.flush()
    os._exit(0)


def main(argv):
    if len(argv) >= 3 and argv[0] == "genkeys":
        return genkeys(argv[1], int(argv[2]))
    if len(argv) == 6 and argv[0] == "publish":
        return publish(argv[1], argv[2], argv[3], float(argv[4]), float(argv[5]))
    if len(argv) == 5 and argv[0] == "watch":
        return watch(argv[1], argv[2], argv[3], float(argv[4]))
    if len(argv) == 2 and argv[0] == "run":
        raise_nofile()
        with open(argv[1]) as f:
            spec = json.load(f)
        if spec["kind"] == "idle":
            return run_idle(spec)
        import logging

        logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
        asyncio.run(Lab(spec).main())
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
