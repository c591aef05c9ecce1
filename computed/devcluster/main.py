"""deploy/devcluster up|status|down: a computed cluster of N hosts on this machine."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from computed.devcluster import pki as cluster_pki
from computed.devcluster import plan as planning
from computed.devcluster.cluster import Cluster, metrics_urls
from computed.devcluster.netns import NetError
from computed.devcluster.processes import StartError
from computed.devcluster.units import UnitError

_OPTIONS = "options.json"  # the plan options `up` used, for `status` and `down`


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="devcluster", description=__doc__)
    p.add_argument("command", choices=("up", "status", "down"))
    p.add_argument("--state-dir", default=planning.DEFAULT_STATE_DIR)
    p.add_argument("--hosts", type=int, default=3)
    p.add_argument("--subnet", default=planning.DEFAULT_SUBNET)
    p.add_argument("--tag", default=planning.DEFAULT_TAG, help="prefix of interface names")
    p.add_argument("--schedulers", type=int, default=1)
    p.add_argument("--scheduler-port", type=int, default=8774)
    p.add_argument("--etcd-port", type=int, default=2379)
    p.add_argument("--agent-port", type=int, default=8775)
    p.add_argument("--zones", type=int, default=1, help="spread hosts over az1..azN")
    p.add_argument("--host-vcpus", type=int, default=2, help="vCPUs each host advertises")
    p.add_argument("--host-memory-mb", type=int, default=4096)
    p.add_argument("--lease-ttl", type=int, default=10)
    p.add_argument(
        "--etcd-members", type=int, default=1, help="etcd cluster size on this machine: 1, 3 or 5"
    )
    p.add_argument("--etcd-quota-mb", type=int, default=planning.DEFAULT_ETCD_QUOTA_MB)
    return p.parse_args(argv)


def plan_options(args: argparse.Namespace) -> dict[str, object]:
    """make_plan's keyword arguments: from the flags for `up`, else as `up` saved them."""
    saved = os.path.join(args.state_dir, _OPTIONS)
    if args.command != "up" and os.path.exists(saved):
        with open(saved) as f:
            return json.load(f)
    names = ("hosts", "subnet", "state_dir", "tag", "schedulers", "scheduler_port", "etcd_port",
             "agent_port", "zones", "host_vcpus", "host_memory_mb", "lease_ttl",
             "etcd_members", "etcd_quota_mb")  # fmt: skip
    return {n: getattr(args, n) for n in names}


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="devcluster: %(message)s")
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if os.geteuid() != 0:
        sys.exit("devcluster: error: needs root (network namespaces, bridge, /dev/kvm)")
    options = plan_options(args)
    try:
        plan = planning.make_plan(**options)  # type: ignore[arg-type]
    except planning.PlanError as e:
        sys.exit(f"devcluster: error: {e}")
    cluster = Cluster(plan)
    try:
        if args.command == "up":
            cluster.up()
            with open(os.path.join(plan.state_dir, _OPTIONS), "w") as f:
                json.dump(options, f)
            print(f"cluster up: etcd {plan.etcd_endpoint}, scheduler "
                  f"{', '.join(plan.scheduler_addresses)}, {len(plan.hosts)} hosts; "
                  f"logs in {plan.log_dir}")  # fmt: skip
            print("metrics: " + " ".join(metrics_urls(plan)))
            print(cluster_pki.link_operator_config(plan))
        elif args.command == "status":
            rows = cluster.status()
            width = max(len(r[0]) for r in rows)
            for name, state, detail in rows:
                print(f"{name:<{width}}  {state:<12}  {detail}")
            if any(state != "up" for _, state, _ in rows):
                sys.exit(1)
        else:
            cluster_pki.unlink_operator_config(plan)
            removed = cluster.down()
            print("removed: " + (", ".join(removed) if removed else "nothing (no cluster)"))
    except (StartError, NetError, UnitError, OSError) as e:
        sys.exit(f"devcluster: error: {e}")
