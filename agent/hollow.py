"""Hollow hosts: many hollow hosts in one process, for control-plane scale runs.

A hollow host is the real agent (agent/main.py's Agent: gRPC servicer, supervisor,
instance directories, etcd reporter with its own lease, host record and stats)
over the fake driver (agent/drivers/fake.py). kubemark runs hollow kubelets the
same way. What the hosts of one process share is what a real host would not
need twice: the process, one RPC thread pool, the gRPC runtime.

    python -m agent.hollow --hosts 500 --etcd 127.0.0.1:2379 --port 30000 \\
        --state-dir /dev/shm/hollow-a --host-prefix ha

Host i is `<prefix><i>` serving on 127.0.0.1:<port + i>. Pausing the process
(SIGSTOP) takes all of its hosts down at once once their leases run out, which
is how a scale run cuts off a group of hosts. "ready N" is printed on stdout
once every host has its lease.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
import time
from concurrent import futures

import grpc

from agent.config import AgentConfig, ConfigError, validate
from agent.drivers.fake import FAKE_KVM_FACTS, FakeDriver
from agent.main import Agent

log = logging.getLogger("computed.hollow")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="computed-hollow", description=__doc__.split("\n\n")[0])
    p.add_argument("--hosts", type=int, required=True, help="hollow hosts in this process")
    p.add_argument("--etcd", default="127.0.0.1:2379", help="etcd endpoints, comma-separated")
    p.add_argument("--port", type=int, required=True, help="host i listens on port + i")
    p.add_argument("--state-dir", required=True, help="each host's directory goes under it")
    p.add_argument("--host-prefix", default="hollow-", help="host ids are <prefix><index>")
    p.add_argument("--first-index", type=int, default=0, help="index of this process's first host")
    p.add_argument("--vcpus", type=int, default=32)
    p.add_argument("--memory-mb", type=int, default=131072)
    p.add_argument("--stats-interval", type=float, default=10.0)
    p.add_argument("--lease-ttl", type=int, default=10)
    p.add_argument("--availability-zone", default="nova")
    p.add_argument("--rpc-threads", type=int, default=32, help="shared by every host")
    p.add_argument(
        "--start-over",
        type=float,
        default=5.0,
        help="spread the hosts' start (hence their stats and lease refreshes) over this many s",
    )
    return p.parse_args(argv)


def host_config(args: argparse.Namespace, index: int) -> AgentConfig:
    host_id = f"{args.host_prefix}{index:05d}"
    return validate(
        AgentConfig(
            host_id=host_id,
            listen=f"127.0.0.1:{args.port + index - args.first_index}",
            etcd=tuple(e.strip() for e in args.etcd.split(",") if e.strip()),
            state_dir=os.path.join(args.state_dir, host_id),
            stats_interval=args.stats_interval,
            vcpus=args.vcpus,
            memory_mb=args.memory_mb,
            availability_zone=args.availability_zone,
            lease_ttl=args.lease_ttl,
            confine=False,
            warm_parent=False,
            driver="fake",
            metrics_address="0",  # a thousand agents in one process: no port each
        )
    )


class HollowFleet:
    """The agents of this process: built, started and stopped together.

    Their gRPC servers are asyncio servers on one event loop, running the agents'
    ordinary (blocking) servicers in one shared thread pool: a thread-per-server
    grpc.server polls its completion queue from a thread of its own, which at a
    thousand hosts is a thousand threads waking five times a second for nothing.
    """

    def __init__(self, configs: list[AgentConfig], rpc_threads: int) -> None:
        self.executor = futures.ThreadPoolExecutor(rpc_threads, thread_name_prefix="hollow-rpc")
        self.loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(
            target=self.loop.run_forever, name="hollow-grpc-loop", daemon=True
        )
        self._loop_thread.start()
        self.agents = [
            Agent(c, driver=FakeDriver(), kvm=FAKE_KVM_FACTS, server=self._server())
            for c in configs
        ]

    def _on_loop(self, coroutine):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def _server(self) -> grpc.aio.Server:
        async def make() -> grpc.aio.Server:
            return grpc.aio.server(migration_thread_pool=self.executor)

        return self._on_loop(make())

    def start(self, spread: float = 0.0) -> None:
        gap = spread / max(1, len(self.agents))
        for agent in self.agents:
            self._on_loop(agent.server.start())
            agent.start(power_sync=False)
            if gap:
                time.sleep(gap)

    def wait_registered(self, timeout: float) -> int:
        """How many hosts hold a lease (their host record and liveness are written)."""
        deadline = time.monotonic() + timeout
        for agent in self.agents:
            lease = agent.reporter.lease
            if lease is not None:
                lease.wait(max(0.0, deadline - time.monotonic()))
        return sum(
            1 for a in self.agents if a.reporter.lease and a.reporter.lease.lease_id is not None
        )

    def stop(self) -> None:
        for agent in self.agents:
            self._on_loop(agent.server.stop(1.0))
        threads = [threading.Thread(target=a.stop, args=(1.0,)) for a in self.agents]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.executor.shutdown(wait=False, cancel_futures=True)


def main() -> None:
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s computed-hollow %(levelname)s %(message)s"
    )
    args = parse_args(sys.argv[1:])
    try:
        configs = [host_config(args, args.first_index + i) for i in range(args.hosts)]
        fleet = HollowFleet(configs, args.rpc_threads)
    except (ConfigError, OSError, RuntimeError) as e:  # RuntimeError: grpc cannot bind
        print(f"computed-hollow: error: {e}", file=sys.stderr)
        sys.exit(2)
    stopping = threading.Event()
    for signo in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signo, lambda _s, _f: stopping.set())
    fleet.start(args.start_over)
    registered = fleet.wait_registered(timeout=60.0)
    print(f"ready {registered}", flush=True)
    stopping.wait()
    fleet.stop()


if __name__ == "__main__":
    main()
