"""Salt's multimaster failover scenario with a salt-sidecar in front of each minion.

Issue 23. `scripts/salt-suite` puts this file, as `conftest.py`, into a sibling
package of Salt's `tests/pytests/scenarios/failover/multimaster` inside the
extracted salt release (never into this repository), next to a copy of the
release's unchanged `test_failover_master.py`. Salt's own fixtures are used as
they are (re-exported from its conftest below), except the two that build the
minions: here each minion talks to its own sidecar,

- the minion: `master: <its sidecar's loopback address>` (one master, Salt's
  default `master_type: str`), the masters' ports, and otherwise the keys Salt's
  fixture sets (`master_alive_interval`, `master_tries`, signing, ...);
  `master_alive_interval` is what makes Salt's events fire through the sidecar
  (its alive check; docs/salt-semantics.md);
- its sidecar: the two masters in the minion's order (minion 1: master 1 then 2;
  minion 2: master 2 then 1, as in Salt's fixture), the minion's
  `master_alive_interval`, `random_reauth_delay` and `master_failback`, the
  transport's default probe; listening on 127.23.0.<n> with the masters' ports.

The sidecar is started (and stopped, by PID) by the minion's package-scoped
fixture, so it runs for the whole package while masters and minions come and
go. `test_pki` builds its own minion inside the test function, pointed at the
masters directly: it does not go through a sidecar.

Environment (set by scripts/salt-suite):
  SALT_SIDECAR_BIN       the salt-sidecar binary (required)
  SALT_SUITE_LOG_DIR     where the sidecars' configs and logs go (default: TMPDIR)
"""

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from tests.conftest import FIPS_TESTRUN
from tests.pytests.scenarios.failover.multimaster import conftest as salt_mm

log = logging.getLogger(__name__)

# Salt's fixtures, unchanged: re-exported so that pytest finds them for this package.
_salt_mm_failover_master_1 = salt_mm._salt_mm_failover_master_1
salt_mm_failover_master_1 = salt_mm.salt_mm_failover_master_1
mm_failover_master_1_salt_cli = salt_mm.mm_failover_master_1_salt_cli
_salt_mm_failover_master_2 = salt_mm._salt_mm_failover_master_2
salt_mm_failover_master_2 = salt_mm.salt_mm_failover_master_2
mm_failover_master_2_salt_cli = salt_mm.mm_failover_master_2_salt_cli
salt_mm_failover_minion_1 = salt_mm.salt_mm_failover_minion_1
salt_mm_failover_minion_2 = salt_mm.salt_mm_failover_minion_2
run_salt_cmds = salt_mm.run_salt_cmds
ensure_connections = salt_mm.ensure_connections

# Each minion's sidecar listens on its own loopback address (issue 23's net).
SIDECAR_LISTEN = {"mm-failover-minion-1": "127.23.0.1", "mm-failover-minion-2": "127.23.0.2"}
START_LIMIT_S = 30
STOP_LIMIT_S = 15


class Sidecar:
    """One salt-sidecar process, started and stopped by PID."""

    def __init__(self, minion_id, listen, masters, minion_config):
        binary = os.environ.get("SALT_SIDECAR_BIN")
        if not binary or not os.access(binary, os.X_OK):
            pytest.fail(f"SALT_SIDECAR_BIN={binary!r} is not an executable salt-sidecar")
        log_dir = os.environ.get("SALT_SUITE_LOG_DIR") or os.environ.get("TMPDIR", "/tmp")
        os.makedirs(log_dir, exist_ok=True)
        self.listen = listen
        self.ret_port = masters[0].config["ret_port"]
        self.publish_port = masters[0].config["publish_port"]
        self.config_path = os.path.join(log_dir, f"sidecar-{minion_id}.yaml")
        self.log_path = os.path.join(log_dir, f"sidecar-{minion_id}.log")
        transport = minion_config["transport"]
        lines = ["master:"]
        lines += [f"  - {m.config['interface']}:{m.config['ret_port']}" for m in masters]
        lines += [
            "master_type: failover",
            f"master_alive_interval: {minion_config.get('master_alive_interval', 5)}",
            f"master_failback: {str(bool(minion_config.get('master_failback', False))).lower()}",
            f"random_reauth_delay: {minion_config.get('random_reauth_delay', 10)}",
            f"publish_port: {self.publish_port}",
            f"master_port: {self.ret_port}",
            f"id: {minion_id}",
            f"transport: {transport}",
            "sidecar:",
            f"  listen: {listen}",
            f"  admin: {listen}:{free_port(listen)}",
            # Unix socket paths must fit in 107 bytes: under the run's short TMPDIR.
            f"  admin_socket: {os.path.join(tempfile.gettempdir(), f'sidecar-{listen}.sock')}",
        ]
        with open(self.config_path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        env = dict(os.environ, RUST_LOG=os.environ.get("SALT_SUITE_SIDECAR_LOG", "info"))
        self.log_file = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [binary, "run", "--config", self.config_path],
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log.warning(
            "salt-sidecar pid %s for %s on %s (config %s, log %s)",
            self.proc.pid,
            minion_id,
            listen,
            self.config_path,
            self.log_path,
        )
        self._wait_listening()

    def _wait_listening(self):
        deadline = time.monotonic() + START_LIMIT_S
        while True:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"salt-sidecar exited {self.proc.returncode} at start; log {self.log_path}"
                )
            try:
                for port in (self.ret_port, self.publish_port):
                    socket.create_connection((self.listen, port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"salt-sidecar not listening after {START_LIMIT_S} s; log {self.log_path}")
                time.sleep(0.1)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_LIMIT_S)
            except subprocess.TimeoutExpired:
                log.warning("salt-sidecar pid %s ignored SIGTERM; killing it", self.proc.pid)
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()


def free_port(host):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def minion_behind_sidecar(minion_id, masters):
    """Salt's minion fixture, but with `master:` its own sidecar (see the module doc)."""
    first = masters[0]
    listen = SIDECAR_LISTEN[minion_id]
    config_overrides = {
        "master": listen,
        "master_port": first.config["ret_port"],
        "publish_port": first.config["publish_port"],
        "master_alive_interval": 5,
        "master_tries": -1,
        "verify_master_pubkey_sign": True,
        "retry_dns": 1,
        "fips_mode": FIPS_TESTRUN,
        "encryption_algorithm": "OAEP-SHA224" if FIPS_TESTRUN else "OAEP-SHA1",
        "signing_algorithm": "PKCS1v15-SHA224" if FIPS_TESTRUN else "PKCS1v15-SHA1",
    }
    factory = first.salt_minion_daemon(
        minion_id,
        defaults={"transport": first.config["transport"]},
        overrides=config_overrides,
        extra_cli_arguments_after_first_start_failure=["--log-level=info"],
    )
    # Either master's public signing key will do (they share the pair).
    shutil.copyfile(
        os.path.join(masters[0].config["pki_dir"], "master_sign.pub"),
        os.path.join(factory.config["pki_dir"], "master_sign.pub"),
    )
    sidecar = Sidecar(minion_id, listen, masters, factory.config)
    try:
        yield factory
    finally:
        sidecar.stop()


@pytest.fixture(scope="package")
def _salt_mm_failover_minion_1(_salt_mm_failover_master_1, _salt_mm_failover_master_2):
    yield from minion_behind_sidecar(
        "mm-failover-minion-1", [_salt_mm_failover_master_1, _salt_mm_failover_master_2]
    )


@pytest.fixture(scope="package")
def _salt_mm_failover_minion_2(_salt_mm_failover_master_1, _salt_mm_failover_master_2):
    yield from minion_behind_sidecar(
        "mm-failover-minion-2", [_salt_mm_failover_master_2, _salt_mm_failover_master_1]
    )
