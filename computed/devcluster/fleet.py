"""A fleet of hollow hosts and real schedulers on one machine, for scale runs and tests.

Processes only: groups of hollow hosts (agent/hollow.py, many hosts per process,
each with its own lease, host record, gRPC endpoint and instances) and
computed-scheduler replicas, all on loopback. The etcd cluster they share is
the caller's (tests/etcd_harness.py's EtcdCluster). Each process is a child of
the caller, in its own session, so the caller can kill -9 a scheduler or
SIGSTOP a group of hosts and nothing else.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

import grpc

from computed.api import agent_pb2, agent_pb2_grpc, compute_pb2, compute_pb2_grpc

PYTHON = sys.executable
SCHEDULER = os.path.join(os.path.dirname(sys.executable), "computed-scheduler")


class FleetError(RuntimeError):
    """A fleet process did not start; the message ends with its log's tail."""


def _tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)"


def _popen(argv: Sequence[str], log_path: str, stdout: int | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "NOTIFY_"))}
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=stdout if stdout is not None else log,
            stderr=log,
            env=env,
            start_new_session=True,
        )


def _terminate(proc: subprocess.Popen | None, timeout: float) -> None:
    """SIGTERM (after SIGCONT: a stopped process cannot act on it), SIGKILL after `timeout`."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGCONT)
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class HollowGroup:
    """One process of hollow hosts: ids <prefix><first>..<prefix><first+hosts-1>."""

    def __init__(
        self,
        name: str,
        hosts: int,
        first_index: int,
        port: int,
        etcd: str,
        root: str,
        vcpus: int = 32,
        memory_mb: int = 131072,
        stats_interval: float = 10.0,
        lease_ttl: int = 10,
        prefix: str = "hollow-",
    ) -> None:
        self.name = name
        self.hosts = hosts
        self.first_index = first_index
        self.port = port
        self.prefix = prefix
        self.state_dir = os.path.join(root, name)
        self.log_path = os.path.join(root, f"{name}.log")
        self.argv = [
            PYTHON, "-m", "agent.hollow",
            "--hosts", str(hosts), "--first-index", str(first_index),
            "--port", str(port), "--etcd", etcd, "--state-dir", self.state_dir,
            "--host-prefix", prefix, "--vcpus", str(vcpus), "--memory-mb", str(memory_mb),
            "--stats-interval", str(stats_interval), "--lease-ttl", str(lease_ttl),
            "--start-over", str(min(10.0, hosts / 100)),
        ]  # fmt: skip
        self.proc: subprocess.Popen | None = None

    @property
    def host_ids(self) -> list[str]:
        return [
            f"{self.prefix}{i:05d}" for i in range(self.first_index, self.first_index + self.hosts)
        ]

    def address(self, host_id: str) -> str:
        index = int(host_id.removeprefix(self.prefix))
        return f"127.0.0.1:{self.port + index - self.first_index}"

    def start(self) -> None:
        os.makedirs(self.state_dir, exist_ok=True)
        self.proc = _popen(self.argv, self.log_path, stdout=subprocess.PIPE)

    def wait_ready(self, timeout: float = 300.0) -> int:
        """Block until every host has its lease ("ready N"); returns N."""
        assert self.proc is not None and self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().strip()  # the runner waits ≤ 60 s itself
        if not line.startswith("ready "):
            raise FleetError(f"hollow group {self.name}: {line!r}\n{_tail(self.log_path)}")
        return int(line.split()[1])

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def pause(self) -> None:
        """SIGSTOP: every host of the group stops answering and stops refreshing its lease."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self, timeout: float = 30.0) -> None:
        proc, self.proc = self.proc, None
        _terminate(proc, timeout)
        shutil.rmtree(self.state_dir, ignore_errors=True)


class SchedulerProcess:
    """One computed-scheduler replica on 127.0.0.1:<port>."""

    def __init__(self, name: str, port: int, etcd: str, root: str, extra: Sequence[str] = ()):
        self.name = name
        self.address = f"127.0.0.1:{port}"
        self.log_path = os.path.join(root, f"{name}.log")
        # Plaintext, as the hollow hosts are: the fleet measures the control plane's
        # placement path, not TLS handshakes (bench/tls_bench.py measures those).
        self.argv = [SCHEDULER, "--listen", self.address, "--etcd", etcd, "--insecure",
                     "--metrics-address", "0", *extra]  # fmt: skip
        self.proc: subprocess.Popen | None = None
        self.serving = False  # started and answering: clients may use it

    def start(self, timeout: float = 60.0) -> None:
        """Start and wait until it answers ListFlavors (its cache and seed are up)."""
        self.proc = _popen(self.argv, self.log_path)
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            stub = compute_pb2_grpc.ComputeStub(channel)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise FleetError(f"{self.name} exited:\n{_tail(self.log_path)}")
                try:
                    if stub.ListFlavors(compute_pb2.ListFlavorsRequest(), timeout=2).flavors:
                        self.serving = True
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
        raise FleetError(f"{self.name} not serving after {timeout:.0f} s:\n{_tail(self.log_path)}")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def kill(self) -> None:
        """kill -9: no graceful shutdown, whatever it was doing is cut off."""
        self.serving = False
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def stop(self, timeout: float = 15.0) -> None:
        self.serving = False
        proc, self.proc = self.proc, None
        _terminate(proc, timeout)


def running_on(groups: Sequence[HollowGroup], threads: int = 16) -> dict[str, list[str]]:
    """uuid → the hosts whose agent lists it: every hollow host asked over its own gRPC
    endpoint, as the scheduler would reach it."""

    def ask(group: HollowGroup, host_id: str) -> tuple[str, list[str]]:
        with grpc.insecure_channel(group.address(host_id)) as channel:
            reply = agent_pb2_grpc.AgentStub(channel).List(agent_pb2.ListRequest(), timeout=60)
        return host_id, [i.spec.uuid for i in reply.instances]

    running: dict[str, list[str]] = {}
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        jobs = [pool.submit(ask, g, h) for g in groups for h in g.host_ids]
        for job in jobs:
            host_id, uuids = job.result()
            for uuid in uuids:
                running.setdefault(uuid, []).append(host_id)
    return running
