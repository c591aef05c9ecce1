"""computed-scheduler: the public API, placement and claims. Stateless; run as many as you like."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from agent import sdnotify
from computed.api import compute_pb2, compute_pb2_grpc
from computed.store.client import Store
from scheduler.build import AgentClients
from scheduler.catalog import Catalog
from scheduler.host_cache import HostCache
from scheduler.servicer import ComputeServicer

log = logging.getLogger("computed.scheduler")
SERVICE_NAME = compute_pb2.DESCRIPTOR.services_by_name["Compute"].full_name


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="computed-scheduler", description="computed scheduler: public API and placement."
    )
    p.add_argument("--listen", default="127.0.0.1:8774", help="gRPC address, host:port")
    p.add_argument("--etcd", default="127.0.0.1:2379", help="etcd endpoints, comma-separated")
    return p.parse_args(argv)


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s computed-scheduler %(levelname)s %(message)s"
    )
    args = parse_args(sys.argv[1:])
    store = Store([e.strip() for e in args.etcd.split(",") if e.strip()])
    cache = HostCache(store)
    agents = AgentClients()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="rpc"))
    compute_pb2_grpc.add_ComputeServicer_to_server(ComputeServicer(store, cache, agents), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    if server.add_insecure_port(args.listen) == 0:
        print(
            f"computed-scheduler: error: --listen {args.listen}: cannot listen there",
            file=sys.stderr,
        )
        sys.exit(2)
    stopping = threading.Event()
    for signo in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signo, lambda _s, _f: stopping.set())
    cache.start()
    server.start()
    threading.Thread(target=_seed, args=(store, stopping), daemon=True).start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    sdnotify.ready(f"serving on {args.listen}")
    log.info("serving %s on %s", SERVICE_NAME, args.listen)
    stopping.wait()
    sdnotify.stopping()
    health_servicer.enter_graceful_shutdown()
    server.stop(5).wait()
    cache.close()
    agents.close()
    store.close()


def _seed(store: Store, stopping: threading.Event) -> None:
    """Default flavors, once etcd answers (it may start after us)."""
    while not stopping.is_set():
        try:
            Catalog(store).seed_flavors()
            return
        except Exception as e:
            log.warning("cannot seed flavors yet: %s", e)
            stopping.wait(1)


if __name__ == "__main__":
    main()
