"""Run a real computed-scheduler process for tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import grpc

from computed.api import compute_pb2_grpc
from tests import pki_harness
from tests.agent_harness import free_port, log_tail, wait_serving

SCHEDULER = os.path.join(os.path.dirname(sys.executable), "computed-scheduler")


class SchedulerProcess:
    def __init__(self, etcd_endpoint: str, log_dir: str, tls: bool = True) -> None:
        """tls: serve mTLS with the session PKI's scheduler certificate (the test's own
        channel is admin); False: --insecure."""
        self.address = f"127.0.0.1:{free_port()}"
        self.tls = tls
        flags = pki_harness.daemon_flags(pki_harness.scheduler()) if tls else ["--insecure"]
        self.args = [SCHEDULER, "--listen", self.address, "--etcd", etcd_endpoint, *flags]
        self.log_path = os.path.join(log_dir, f"scheduler-{self.address.split(':')[1]}.log")
        self.proc: subprocess.Popen | None = None
        self.channel: grpc.Channel | None = None
        self.stub: compute_pb2_grpc.ComputeStub | None = None

    def start(self, timeout: float = 15.0) -> SchedulerProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=log, start_new_session=True)
        self.channel = self.open_channel("admin")
        wait_serving(self.channel, self.proc, "scheduler", self.log, timeout)
        self.stub = compute_pb2_grpc.ComputeStub(self.channel)
        return self

    def open_channel(self, role: str, name: str | None = None) -> grpc.Channel:
        """A new channel to this scheduler as the session PKI's (role, name)."""
        if not self.tls:
            return grpc.insecure_channel(self.address)
        return pki_harness.channel(self.address, role, name)

    def log(self) -> str:
        return log_tail(self.log_path)

    def stop(self) -> None:
        if self.channel is not None:
            self.channel.close()
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
