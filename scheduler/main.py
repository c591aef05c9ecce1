"""computed-scheduler: the public API, placement and claims. Stateless; run as many as you like."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from computed import metrics, sdnotify
from computed.api import compute_pb2, compute_pb2_grpc
from computed.mtls import serving
from computed.mtls.access import SCHEDULER_ACCESS
from computed.mtls.credentials import TlsError, channel_credentials, warn_expiring
from computed.store.client import Store
from computed.store.maintenance import DEFAULT_RETENTION
from computed.tls_files import TlsFiles
from scheduler import filters, weighers
from scheduler.addresses import InstanceNetwork
from scheduler.build import AgentClients
from scheduler.catalog import Catalog
from scheduler.compactor import Compactor
from scheduler.host_cache import HostCache
from scheduler.metrics import ClusterCollector
from scheduler.placement import PlacementConfig
from scheduler.servicer import ComputeServicer

log = logging.getLogger("computed.scheduler")
SERVICE_NAME = compute_pb2.DESCRIPTOR.services_by_name["Compute"].full_name


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="computed-scheduler", description="computed scheduler: public API and placement."
    )
    p.add_argument("--listen", default="127.0.0.1:8774", help="gRPC address, host:port")
    p.add_argument("--etcd", default="127.0.0.1:2379", help="etcd endpoints, comma-separated")
    p.add_argument(
        "--metrics-address", metavar="HOST:PORT", help=f"Prometheus /metrics (default "
        f"{metrics.SCHEDULER_DEFAULT}; 0 disables)",
    )  # fmt: skip
    d = PlacementConfig()
    g = p.add_argument_group("placement (defaults follow Nova's)")
    g.add_argument(
        "--filters",
        default=",".join(f.name for f in filters.DEFAULT),
        help="host filters to run, comma-separated, in order (default: %(default)s)",
    )
    g.add_argument(
        "--weighers",
        default=",".join(w.name for w in weighers.DEFAULT),
        help="host weighers to apply, comma-separated (default: %(default)s)",
    )
    g.add_argument(
        "--max-instances-per-host", type=positive_integer, default=d.max_instances_per_host
    )
    for name, why in (
        ("ram", "> 0 spreads instances by free RAM, < 0 packs them"),
        ("cpu", "> 0 spreads by free vCPUs, < 0 packs"),
        ("num-instances", "< 0 prefers hosts running fewer instances"),
        ("build-failure", "how strongly hosts whose builds just failed are avoided"),
        ("soft-affinity", "weight of soft (anti-)affinity server group policies"),
    ):
        attr = f"{name.replace('-', '_')}_weight_multiplier"
        g.add_argument(
            f"--{name}-weight-multiplier", type=float, default=getattr(d, attr), help=why
        )
    g.add_argument(
        "--host-subset-size",
        type=positive_integer,
        default=d.host_subset_size,
        help="choose at random among the best N hosts: fewer claim races between schedulers",
    )
    serving.add_tls_flags(p)
    n = p.add_argument_group("instance network (fixed IPs; default: instances get none)")
    n.add_argument("--instance-network", help="CIDR, e.g. 10.213.0.0/24")
    n.add_argument("--instance-gateway", help="the instances' default gateway")
    n.add_argument("--instance-range", help="FIRST-LAST addresses to hand out")
    p.add_argument(
        "--history-retention",
        type=positive_number,
        default=DEFAULT_RETENTION,
        metavar="SECONDS",
        help="etcd history kept for watches to resume; older history is compacted "
        "(between this and twice this is kept; default: %(default)s)",
    )
    args = p.parse_args(argv)
    try:
        args.placement = placement_config(args)
        args.network = instance_network(args)
        args.tls = serving.tls_files(args.tls_cacert, args.tls_cert, args.tls_key, args.insecure)
        args.etcd_tls = serving.etcd_tls_files(args.etcd_cacert, args.etcd_cert, args.etcd_key)
    except ValueError as e:
        p.error(str(e))
    return args


def instance_network(args: argparse.Namespace) -> InstanceNetwork | None:
    given = [args.instance_network, args.instance_gateway, args.instance_range]
    if not any(given):
        return None
    if not all(given):
        raise ValueError("--instance-network, --instance-gateway and --instance-range go together")
    return InstanceNetwork.parse(args.instance_network, args.instance_gateway, args.instance_range)


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def positive_integer(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def positive_number(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(text)
    return value


def placement_config(args: argparse.Namespace) -> PlacementConfig:
    """The PlacementConfig the flags describe; ValueError for an unknown filter or weigher."""
    filter_names = _names(args.filters)
    filters.named(filter_names)
    weigher_names = _names(args.weighers)
    weighers.named(weigher_names)
    return PlacementConfig(
        filters=filter_names,
        weighers=weigher_names,
        max_instances_per_host=args.max_instances_per_host,
        ram_weight_multiplier=args.ram_weight_multiplier,
        cpu_weight_multiplier=args.cpu_weight_multiplier,
        num_instances_weight_multiplier=args.num_instances_weight_multiplier,
        build_failure_weight_multiplier=args.build_failure_weight_multiplier,
        soft_affinity_weight_multiplier=args.soft_affinity_weight_multiplier,
        host_subset_size=args.host_subset_size,
    )


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s computed-scheduler %(levelname)s %(message)s"
    )
    args = parse_args(sys.argv[1:])
    store = open_store([e.strip() for e in args.etcd.split(",") if e.strip()], args.etcd_tls)
    cache = HostCache(store)
    try:
        agents = AgentClients(channel_credentials(args.tls) if args.tls else None)
        server, creds = serving.make_server(args.tls, SCHEDULER_ACCESS, 32, "rpc")
    except TlsError as e:
        print(f"computed-scheduler: error: {e}", file=sys.stderr)
        sys.exit(2)
    compute_pb2_grpc.add_ComputeServicer_to_server(
        ComputeServicer(store, cache, agents, args.placement, args.network), server
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    if not serving.listen(server, args.listen, creds, "scheduler"):
        print(
            f"computed-scheduler: error: --listen {args.listen}: cannot listen there",
            file=sys.stderr,
        )
        sys.exit(2)
    stopping = threading.Event()
    for signo in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signo, lambda _s, _f: stopping.set())
    try:
        address = args.metrics_address or metrics.SCHEDULER_DEFAULT
        metrics.serve(address, [ClusterCollector(cache)], explicit=bool(args.metrics_address))
    except metrics.MetricsAddressError as e:
        print(f"computed-scheduler: error: {e}", file=sys.stderr)
        sys.exit(2)
    serving.on_sighup(lambda: reload_tls(args.tls, creds, agents))
    cache.start()
    compactor = Compactor(store, args.history_retention)
    compactor.start()
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
    compactor.close()
    cache.close()
    agents.close()
    store.close()


def open_store(endpoints: list[str], etcd_tls: TlsFiles | None) -> Store:
    """The etcd client, over TLS when --etcd-cacert/--etcd-cert/--etcd-key are given."""
    if etcd_tls is None:
        return Store(endpoints)
    return Store(endpoints, tls=etcd_tls)


def reload_tls(
    tls: TlsFiles | None, creds: serving.ReloadableServerCredentials | None, agents: AgentClients
) -> None:
    """SIGHUP: new handshakes (in and out) use the renewed files; nothing running stops."""
    if tls is None or creds is None:
        log.info("SIGHUP: --insecure, no certificates to reload")
        return
    new_client = channel_credentials(tls)
    creds.reload()
    agents.renew(new_client)
    warn_expiring("scheduler", creds.cert_pem)
    log.info("SIGHUP: reloaded %s (certificate valid until %s)", tls.cert, creds.not_after())


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
