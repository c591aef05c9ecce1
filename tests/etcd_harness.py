"""A real etcd server for tests: free loopback ports, a temp data dir, always cleaned up.

Runs /usr/bin/etcd (Debian `etcd-server`, 3.4) directly. The package's own
systemd unit and /etc/default/etcd are never involved: tests pass every
setting on the command line and drop ETCD_* variables from the environment
(etcd reads those as flags, so a developer's shell could otherwise change
the server under test). The server keeps etcd's defaults where the code
under test depends on them, notably --max-txn-ops=128.

stop()/start() restart the same server (same ports, same data) for outage
tests; pause()/resume() freeze it with SIGSTOP so clients meet a server that
accepts connections but never answers.

EtcdServer(secure=True) serves clients over TLS with --client-cert-auth,
from a throwaway CA (ThrowawayPki, made with trustme), and `provision(host_ids)`
then turns etcd auth on with computed's users and roles
(computed/store/etcd_auth.py). Plaintext stays the default.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from typing import Self

from computed.devcluster.etcd_members import etcd_member_command, member_names
from computed.procfs import stat_fields
from computed.tls_files import TlsFiles
from tests.waiting import wait_until

ETCD_BINARY = os.environ.get("COMPUTED_ETCD", "/usr/bin/etcd")
_STOP_GRACE = 10.0


class EtcdStartError(RuntimeError):
    """etcd did not become healthy; the message carries the end of its log."""


def _free_port() -> int:
    # Racy by nature (the port is free now, maybe not at bind time); start()
    # retries with new ports when etcd reports the address in use.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThrowawayPki:
    """A throwaway cluster CA that issues etcd's server pair and client pairs by CN.

    Files go under `directory`; keys are written 0600 as a real PKI would.
    """

    def __init__(self, directory: str) -> None:
        import trustme  # a test dependency: only secure servers need it

        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self._ca = trustme.CA(organization_name="computed test CA")
        self.ca_path = os.path.join(directory, "ca.pem")
        self._ca.cert_pem.write_to_path(self.ca_path)
        self._issued: dict[str, TlsFiles] = {}

    def server(self) -> TlsFiles:
        """etcd's serving pair, valid for 127.0.0.1 and localhost."""
        return self._issue("etcd-server", "127.0.0.1", "localhost", common_name="etcd-server")

    def client(self, cn: str, ou: str | None = None) -> TlsFiles:
        """A client pair whose CN etcd takes as the user name (OU: computed's role)."""
        return self._issue(cn, common_name=cn, organization_unit_name=ou)

    def _issue(self, name: str, *sans: str, **subject: str | None) -> TlsFiles:
        if name in self._issued:
            return self._issued[name]
        leaf = self._ca.issue_cert(*(sans or (name,)), **subject)
        cert, key = (os.path.join(self.dir, f"{name}{s}") for s in (".pem", "-key.pem"))
        leaf.cert_chain_pems[0].write_to_path(cert)
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(leaf.private_key_pem.bytes())
        self._issued[name] = TlsFiles(self.ca_path, cert, key)
        return self._issued[name]


class _StartedOnEnter:
    """`with X() as x`: started on entry (closed again if the start fails), closed on exit."""

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EtcdServer(_StartedOnEnter):
    """One single-member etcd cluster owned by a test."""

    def __init__(
        self, binary: str = ETCD_BINARY, startup_timeout: float = 30.0, secure: bool = False
    ) -> None:
        if not os.access(binary, os.X_OK):
            raise EtcdStartError(
                f"{binary} not found: install the Debian package etcd-server "
                "(apt-get install etcd-server) or set COMPUTED_ETCD"
            )
        self.binary = binary
        self.startup_timeout = startup_timeout
        self.dir = tempfile.mkdtemp(prefix="computed-etcd-")
        self.client_port = _free_port()
        self.peer_port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._started_once = False
        self.pki = ThrowawayPki(os.path.join(self.dir, "pki")) if secure else None
        atexit.register(self.close)  # backstop if a test run dies between start and close

    @property
    def endpoint(self) -> str:
        """host:port, as computed's --etcd flag takes it."""
        return f"127.0.0.1:{self.client_port}"

    @property
    def secure(self) -> bool:
        return self.pki is not None

    def client_tls(self, cn: str, ou: str | None = None) -> TlsFiles:
        """A client pair from this server's CA (secure servers only)."""
        if self.pki is None:
            raise RuntimeError("a plaintext etcd has no PKI: use EtcdServer(secure=True)")
        return self.pki.client(cn, ou)

    def provision(
        self, host_ids: list[str], schedulers: tuple[str, ...] = ("scheduler-1",)
    ) -> None:
        """Turn etcd auth on with computed's roles: one user per agent host, the schedulers."""
        from computed.store import etcd_auth

        etcd_auth.provision([self.endpoint], self.client_tls("root"), host_ids, schedulers)

    @property
    def log_path(self) -> str:
        return os.path.join(self.dir, "etcd.log")

    def start(self) -> None:
        """Start (or restart) the server and wait until it reports healthy."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("etcd is already running")
        attempts = 1 if self._started_once else 3  # a restart must keep its ports
        for attempt in range(attempts):
            try:
                self._launch_and_wait()
                self._started_once = True
                return
            except EtcdStartError as e:
                if "address already in use" not in str(e) or attempt == attempts - 1:
                    raise
                self.client_port, self.peer_port = _free_port(), _free_port()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period; data stays for a later start()."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
        proc.terminate()
        try:
            proc.wait(_STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def pause(self) -> None:
        """Freeze the server: connections open, no answers (clients hit their deadlines).
        Returns once every thread has stopped: kill() returns before a thread running
        on another CPU does, and it could still answer a request sent meanwhile."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        wait_until(
            lambda: all(state == "T" for state in self._thread_states()),
            timeout=30, interval=0.005, what="etcd stopped", ignoring=(OSError,),
        )  # fmt: skip

    def _thread_states(self) -> list[str]:
        assert self.proc is not None
        task = f"/proc/{self.proc.pid}/task"
        return [stat_fields(f"{task}/{tid}/stat")[0] for tid in os.listdir(task)]

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        """Stop the server and remove its data dir. Safe to call twice."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
            atexit.unregister(self.close)

    def healthy(self) -> bool:
        scheme = "https" if self.secure else "http"
        url = f"{scheme}://{self.endpoint}/health"
        context = None
        if self.pki is not None:
            root = self.pki.client("root")
            context = ssl.create_default_context(cafile=root.ca)
            context.load_cert_chain(root.cert, root.key)
        try:
            with urllib.request.urlopen(url, timeout=1.0, context=context) as resp:
                return json.load(resp).get("health") == "true"
        except (OSError, ValueError):  # URLError is an OSError
            return False

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)"

    def _command(self) -> list[str]:
        client = f"{'https' if self.secure else 'http'}://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        tls: list[str] = []
        if self.pki is not None:
            server = self.pki.server()
            tls = [
                "--cert-file", server.cert, "--key-file", server.key,
                "--trusted-ca-file", server.ca, "--client-cert-auth",
            ]  # fmt: skip
        return [
            self.binary,
            "--name", "test",
            "--data-dir", os.path.join(self.dir, "data"),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"test={peer}",
            "--initial-cluster-state", "new",
            "--logger", "zap",
            "--log-outputs", "stderr",
            *tls,
        ]  # fmt: skip

    def _launch_and_wait(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                cwd=self.dir,
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                raise EtcdStartError(f"etcd exited with status {code}:\n{self.log_tail()}")
            if self.healthy():
                return
            time.sleep(0.05)
        self.stop()
        raise EtcdStartError(
            f"etcd not healthy after {self.startup_timeout:.0f} s:\n{self.log_tail()}"
        )


class EtcdCluster(_StartedOnEnter):
    """A real multi-member etcd cluster on loopback: one data directory and one pair of
    ports per member, as three machines would have. Members can be killed (SIGKILL)
    and restarted with their data, which is the fault a scale run injects."""

    def __init__(
        self, members: int = 3, binary: str = ETCD_BINARY, startup_timeout: float = 60.0
    ) -> None:
        if members < 1:
            raise ValueError("an etcd cluster needs at least one member")
        if not os.access(binary, os.X_OK):
            raise EtcdStartError(f"{binary} not found: install etcd-server or set COMPUTED_ETCD")
        self.binary = binary
        self.startup_timeout = startup_timeout
        self.dir = tempfile.mkdtemp(prefix="computed-etcd-cluster-")
        self.names = member_names(members)
        self.client_ports = [_free_port() for _ in self.names]
        self.peer_ports = [_free_port() for _ in self.names]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * members
        atexit.register(self.close)

    @property
    def endpoints(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.client_ports]

    @property
    def endpoint(self) -> str:
        """Every member, comma-separated, as computed's --etcd flag takes them."""
        return ",".join(self.endpoints)

    def log_path(self, i: int) -> str:
        return os.path.join(self.dir, f"{self.names[i]}.log")

    def data_dir(self, i: int) -> str:
        return os.path.join(self.dir, self.names[i])

    def start(self) -> None:
        """Start every member (they must all be up for the first election)."""
        for i in range(len(self.names)):
            self.start_member(i, wait=False)
        self._wait(lambda: all(self.member_healthy(i) for i in range(len(self.names))))

    def start_member(self, i: int, wait: bool = True) -> None:
        """Start (or restart, with its data) member i."""
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            raise RuntimeError(f"etcd member {self.names[i]} is already running")
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        with open(self.log_path(i), "ab") as log:
            self.procs[i] = subprocess.Popen(
                [
                    self.binary,
                    *etcd_member_command(
                        self.names, self.client_ports, self.peer_ports, i, self.dir
                    ),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                cwd=self.dir,
            )
        if wait:
            self._wait(lambda: self.member_healthy(i))

    def kill_member(self, i: int) -> None:
        """SIGKILL member i (no goodbye to its peers), keeping its data."""
        proc, self.procs[i] = self.procs[i], None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def pid(self, i: int) -> int | None:
        proc = self.procs[i]
        return proc.pid if proc is not None and proc.poll() is None else None

    def member_healthy(self, i: int) -> bool:
        url = f"http://{self.endpoints[i]}/health"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                return json.load(resp).get("health") == "true"
        except (OSError, ValueError):
            return False

    def healthy(self) -> bool:
        return any(self.member_healthy(i) for i in range(len(self.names)))

    def close(self) -> None:
        """Kill every member and remove the data. Safe to call twice."""
        try:
            for i in range(len(self.names)):
                self.kill_member(i)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
            atexit.unregister(self.close)

    def log_tail(self, i: int, lines: int = 20) -> str:
        try:
            with open(self.log_path(i), errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)"

    def _wait(self, ready) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            for i, proc in enumerate(self.procs):
                if proc is not None and proc.poll() is not None:
                    code = proc.returncode
                    self.procs[i] = None
                    raise EtcdStartError(
                        f"etcd member {self.names[i]} exited with status {code}:\n"
                        + self.log_tail(i)
                    )
            if ready():
                return
            time.sleep(0.1)
        raise EtcdStartError(
            f"etcd cluster not healthy after {self.startup_timeout:.0f} s:\n" + self.log_tail(0)
        )
