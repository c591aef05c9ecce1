"""Run a real computed-agent process for tests, and clean up after it and its VMMs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent.cgroups import InstanceCgroups
from agent.vmm_process import InstancePaths, read_pid
from computed.api import agent_pb2_grpc
from computed.procfs import stat_fields
from tests import pki_harness

AGENT = os.path.join(os.path.dirname(sys.executable), "computed-agent")


def alive(pid: int) -> bool:
    """Whether `pid` runs: not gone, and not a zombie waiting for its parent's wait()."""
    try:
        os.kill(pid, 0)
        return stat_fields(f"/proc/{pid}/stat")[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path: str) -> str:
    """The end of a process's log, for assertion messages."""
    try:
        with open(path) as f:
            return f.read()[-3000:]
    except OSError:
        return ""


def wait_serving(
    channel: grpc.Channel, proc: subprocess.Popen, what: str, log: Callable[[], str], timeout: float
) -> None:
    """Until the gRPC health service says SERVING; AssertionError with the log if the
    process exits or the timeout passes first."""
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited {proc.returncode}: {log()}")
        try:
            reply = health.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not serving: {log()}")
        time.sleep(0.05)


AGENT_HOST = "test-host"  # the host id test agents register as


class AgentProcess:
    def __init__(
        self, state_dir: str, etcd_endpoint: str, host_id: str = AGENT_HOST, *extra: str
    ) -> None:
        """mTLS with the session PKI's agent-<host_id> certificate (the test's channel is a
        scheduler's), unless `extra` holds --insecure."""
        self.state_dir = state_dir
        self.host_id = host_id
        self.tls = "--insecure" not in extra
        own = pki_harness.identity("agent", host_id)
        tls_flags = pki_harness.daemon_flags(own) if self.tls else []
        self.address = f"127.0.0.1:{free_port()}"
        # Instance cgroups under the tests' own cgroup, one parent per agent, all removed
        # at clean-up (a real host's default is /computed).
        port = int(self.address.rsplit(":", 1)[1])
        self.cgroup_parent = f"./cdtest-{host_id}-{port}"
        # VMM uids of its own, so that tests can tell this agent's VMMs by uid.
        first_uid = 300_000 + (port % 8192) * 64
        self.uid_range = f"{first_uid}-{first_uid + 63}"
        self.args = [
            AGENT,
            "--host-id",
            host_id,
            "--listen",
            self.address,
            "--etcd",
            etcd_endpoint,
            "--state-dir",
            state_dir,
            "--stats-interval",
            "0.5",
            "--lease-ttl",
            "3",
            "--cgroup-parent",
            self.cgroup_parent,
            "--vmm-uid-range",
            self.uid_range,
            "--no-ksm",  # host-wide: a test that wants it passes --ksm (last flag wins)
            "--warm-standbys=2",  # enough to serve from standbys; each costs a start
            *tls_flags,
            *extra,
        ]
        self.log_path = os.path.join(state_dir, "agent.log")
        self.proc: subprocess.Popen | None = None
        self.channel: grpc.Channel | None = None
        self.stub: agent_pb2_grpc.AgentStub | None = None

    def start(self, timeout: float = 15.0, env: dict[str, str] | None = None) -> AgentProcess:
        os.makedirs(self.state_dir, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.args,
                stdout=log,
                stderr=log,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        self.channel = self.open_channel("scheduler", "test")
        wait_serving(self.channel, self.proc, "agent", self.log, timeout)
        self.stub = agent_pb2_grpc.AgentStub(self.channel)
        return self

    def open_channel(self, role: str, name: str | None = None) -> grpc.Channel:
        """A new channel to this agent as the session PKI's (role, name)."""
        if not self.tls:
            return grpc.insecure_channel(self.address)
        return pki_harness.channel(self.address, role, name)

    def log(self) -> str:
        return log_tail(self.log_path)

    def kill(self, sig: int = signal.SIGKILL) -> int:
        """Stop the agent only (its VMMs survive, as on a real host)."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=15) if self.proc is not None else 0

    def instance_uuids(self) -> list[str]:
        root = os.path.join(self.state_dir, "instances")
        return os.listdir(root) if os.path.isdir(root) else []

    def vmm_pids(self) -> list[int]:
        paths = (InstancePaths.of(self.state_dir, uuid) for uuid in self.instance_uuids())
        return [pid for pid in map(read_pid, paths) if pid is not None]

    def cleanup(self) -> None:
        """Kill the agent and every VMM it may have left; remove their cgroups."""
        self.kill()
        for pid in self.vmm_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        InstanceCgroups(self.cgroup_parent).remove_all()


def close_supervisors(made: list) -> None:
    """Test teardown for in-process InstanceSupervisors: kill every VMM they know, then
    close them."""
    for sup in made:
        for view in sup.list():
            if view.pid:
                try:
                    os.kill(view.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        sup.close()
