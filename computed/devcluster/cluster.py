"""Bringing a dev cluster up, looking at it and tearing it down; also the tests' handle on it.

Order up: network (bridge, one namespace per host), etcd in the root
namespace listening on the bridge address, the schedulers, then one agent
per host inside its namespace. Each agent gets its own config file, the way
/etc/computed/agent.conf configures it in production, and is started with
its unit's ExecStart and counted as up on READY=1. `down` removes everything
the plan's names cover and everything carrying the cluster's mark, so it is
safe to run twice, or after a crash.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import ssl
import sys
import time
import urllib.request

import grpc

from agent.cgroups import InstanceCgroups
from agent.ksm import KSM_RUN, run_state, set_run_state
from computed import metrics
from computed.devcluster import netns, processes, units
from computed.devcluster import pki as cluster_pki
from computed.devcluster.etcd_members import etcd_member_argvs
from computed.devcluster.plan import ClusterPlan, HostPlan
from computed.mtls.credentials import channel_credentials
from computed.pki import certs
from computed.store.client import Store
from computed.store.etcd_auth import provision
from computed.tls_files import TlsFiles

log = logging.getLogger("computed.devcluster")
ETCD_BINARY = os.environ.get("COMPUTED_ETCD", "/usr/bin/etcd")
BIN_DIR = os.path.dirname(sys.executable)  # this checkout's .venv/bin
DEV_CGROUPS = "computed-dev"  # under each controller's root: computed-dev/<host netns>/<uuid>
KSM_FOUND = "ksm-run-found"  # in the state dir: the host's KSM setting before `up`


class Cluster:
    def __init__(self, plan: ClusterPlan, tls: bool = True) -> None:
        """tls False: every gRPC hop plaintext (--insecure) and etcd without TLS or auth, for
        bench/tls_bench.py only. Otherwise etcd runs with TLS, client-certificate auth and
        one user per agent host and per scheduler (computed/store/etcd_auth.py)."""
        self.plan = plan
        self.tls = tls
        self.etcd_auth = tls
        self.pids: dict[str, int] = self._load_pids()

    # --- whole cluster ----------------------------------------------------------
    def up(self) -> None:
        """Create whatever is missing; a cluster already up is left as it is."""
        plan = self.plan
        for d in (plan.state_dir, plan.log_dir):
            os.makedirs(d, exist_ok=True)
        remember_ksm(plan.state_dir)
        cluster_pki.ensure(plan)
        netns.ensure_tun()
        netns.create_bridge(plan)
        for host in plan.hosts:
            netns.create_host(plan, host)
        if not self.running("etcd"):
            self.start_etcd()
        for i, _ in enumerate(plan.scheduler_addresses):
            if not self.running(f"scheduler-{i + 1}"):
                self.start_scheduler(i)
        for host in plan.hosts:
            if not self.running(host.host_id):
                self.start_agent(host)

    def down(self) -> list[str]:
        """Kill every process of the cluster, remove its network and its state directory."""
        plan = self.plan
        pids = processes.marked(plan.state_dir)
        pids += [p for p in self.pids.values() if p not in pids and processes.alive(p)]
        processes.kill(pids)
        removed = [f"{len(pids)} process(es)"] if pids else []
        for host in plan.hosts:  # the VMMs are gone: their cgroups can go
            InstanceCgroups(cgroup_parent(host)).remove_all()
        InstanceCgroups(DEV_CGROUPS).remove_parent_if_empty()
        removed += netns.remove_all(plan)
        restored = restore_ksm(plan.state_dir)
        if restored:
            removed.append(restored)
        if os.path.isdir(plan.state_dir):
            shutil.rmtree(plan.state_dir, ignore_errors=True)
            removed.append(f"directory {plan.state_dir}")
        self.pids = {}
        return removed

    def status(self) -> list[tuple[str, str, str]]:
        """(component, state, detail) rows, from what is running now."""
        rows = []
        etcd_ok = self.etcd_healthy()
        rows.append(("etcd", "up" if etcd_ok else "down", self.plan.etcd_endpoint))
        for i, address in enumerate(self.plan.scheduler_addresses):
            name = f"scheduler-{i + 1}"
            rows.append((name, "up" if self.running(name) else "down", address))
        present = set(netns.namespaces())
        for host in self.plan.hosts:
            state = "up" if self.running(host.host_id) else "down"
            if host.netns not in present:
                state = "no namespace"
            rows.append((host.host_id, state, f"{host.netns} {host.agent_address} {host.zone}"))
        return rows

    # --- components ---------------------------------------------------------------
    def running(self, name: str) -> bool:
        pid = self.pids.get(name)
        return pid is not None and processes.alive(pid)

    def start_etcd(self) -> None:
        plan = self.plan
        if not os.access(ETCD_BINARY, os.X_OK):
            raise processes.StartError(f"{ETCD_BINARY} not found: run `make install`")
        if plan.etcd_members > 1:
            self._start_etcd_members()
            return
        scheme = "https" if self.etcd_auth else "http"
        bridge_url = f"{scheme}://{plan.etcd_endpoint}"
        port = plan.etcd_endpoint.rsplit(":", 1)[1]
        argv = [
            ETCD_BINARY, "--name", "devcluster", "--data-dir", plan.etcd_data_dir,
            "--listen-client-urls", f"{bridge_url},{scheme}://127.0.0.1:{port}",
            "--advertise-client-urls", bridge_url,
            "--listen-peer-urls", plan.etcd_peer_url,
            "--initial-advertise-peer-urls", plan.etcd_peer_url,
            "--initial-cluster", f"devcluster={plan.etcd_peer_url}",
            "--initial-cluster-state", "new", "--logger", "zap", "--log-outputs", "stderr",
            # A backend quota (NOSPACE beyond it); the schedulers compact the history.
            "--quota-backend-bytes", str(plan.etcd_quota_mb * 1024 * 1024),
            "--snapshot-count", str(plan.etcd_snapshot_count),  # bounds etcd's memory
        ]  # fmt: skip
        if self.etcd_auth:
            server = cluster_pki.etcd_files(plan, "etcd-server")
            argv += ["--cert-file", server.cert, "--key-file", server.key,
                     "--trusted-ca-file", server.ca, "--client-cert-auth"]  # fmt: skip
        self._remember("etcd", processes.start(
            "etcd", argv, plan.state_dir, plan.log("etcd"), notify=False
        ))  # fmt: skip
        deadline = time.monotonic() + 30
        while not self.etcd_healthy():
            if not self.running("etcd") or time.monotonic() > deadline:
                raise processes.StartError(
                    f"etcd did not become healthy:\n{processes.tail(plan.log('etcd'))}"
                )
            time.sleep(0.1)
        self._provision_etcd_users()

    def _provision_etcd_users(self) -> None:
        """etcd's users and roles from the PKI's names (one per agent host, one per
        scheduler), then auth on: idempotent, so a second `up` changes nothing."""
        if not self.etcd_auth:
            return
        plan = self.plan
        root = cluster_pki.etcd_files(plan, "etcd-root")
        schedulers = [certs.identity_for("scheduler", str(i + 1))
                      for i in range(len(plan.scheduler_addresses))]  # fmt: skip
        provision(list(plan.etcd_endpoints), root, [h.host_id for h in plan.hosts], schedulers)

    def _start_etcd_members(self) -> None:
        """`--etcd-members N`: N members on this machine, each with its own data directory
        and ports; clients reach member i on the bridge and on loopback."""
        plan = self.plan
        tls = cluster_pki.etcd_files(plan, "etcd-server") if self.etcd_auth else None
        for name, argv in etcd_member_argvs(plan, ETCD_BINARY, tls):
            if not self.running(name):
                self._remember(name, processes.start(
                    name, argv, plan.state_dir, plan.log(name), notify=False
                ))  # fmt: skip
        deadline = time.monotonic() + 60
        while not self.etcd_healthy():
            if time.monotonic() > deadline:
                raise processes.StartError(
                    f"etcd did not become healthy:\n{processes.tail(plan.log('etcd-m0'))}"
                )
            time.sleep(0.2)
        self._provision_etcd_users()

    def stop_etcd(self) -> None:
        processes.kill([self.pids.pop("etcd")], grace=5)
        self._save_pids()

    def etcd_healthy(self) -> bool:
        for endpoint in self.plan.etcd_endpoints:  # one healthy member answers for the cluster
            try:
                if json.loads(self.etcd_http(endpoint, "/health")).get("health") == "true":
                    return True
            except (OSError, ValueError):
                continue
        return False

    def admin_store(self, timeout: float = 3.0) -> Store:
        """A new Store on the cluster's etcd (use as a context manager), as etcd's root
        user where the cluster runs etcd with TLS and auth."""
        tls = cluster_pki.etcd_files(self.plan, "etcd-root") if self.etcd_auth else None
        return Store(list(self.plan.etcd_endpoints), timeout=timeout, tls=tls)

    def admin_channel(self, address: str | None = None) -> grpc.Channel:
        """A channel to a scheduler (the first by default) as the cluster's admin: mTLS
        with the admin certificate, or plaintext for a cluster made with tls=False."""
        address = address or self.plan.scheduler_addresses[0]
        if not self.tls:
            return grpc.insecure_channel(address)
        return grpc.secure_channel(address, channel_credentials(cluster_pki.admin_files(self.plan)))

    def etcd_http(self, endpoint: str, path: str, timeout: float = 1.0) -> bytes:
        """GET one of etcd's HTTP paths (/health, /metrics) on a member, over TLS as
        etcd's root when the cluster runs etcd with auth."""
        context = None
        if self.etcd_auth:
            root = cluster_pki.etcd_files(self.plan, "etcd-root")
            context = ssl.create_default_context(cafile=root.ca)
            context.load_cert_chain(root.cert, root.key)
        scheme = "https" if self.etcd_auth else "http"
        with urllib.request.urlopen(
            f"{scheme}://{endpoint}{path}", timeout=timeout, context=context
        ) as reply:
            return reply.read()

    def start_scheduler(self, i: int) -> None:
        unit = units.load_unit("computed-scheduler.service")
        plan = self.plan
        tls = cluster_pki.scheduler_files(plan, i)
        argv = units.command(unit, BIN_DIR, {
            "--listen": plan.scheduler_addresses[i], "--etcd": plan.etcd_endpoint,
            "--instance-network": plan.subnet, "--instance-gateway": plan.bridge_address,
            "--instance-range": plan.instance_range,
            "--metrics-address": scheduler_metrics_address(plan, i),
            **({"--tls-cacert": tls.ca, "--tls-cert": tls.cert, "--tls-key": tls.key}
               if self.tls else {}),
            **({"--etcd-cacert": tls.ca, "--etcd-cert": tls.cert, "--etcd-key": tls.key}
               if self.etcd_auth else {}),
        })  # fmt: skip
        if not self.tls:  # the unit's own --tls-* flags go: they contradict --insecure
            argv = units.without_flags(argv, ("--tls-cacert", "--tls-cert", "--tls-key"))
            argv.append("--insecure")
        name = f"scheduler-{i + 1}"
        pid = processes.start(name, argv, self.plan.state_dir, self.plan.log(name), unit.notify)
        self._remember(name, pid)

    def start_agent(self, host: HostPlan) -> None:
        os.makedirs(host.state_dir, exist_ok=True)
        config = os.path.join(host.state_dir, "agent.conf")
        with open(config, "w") as f:
            f.write(agent_config(self.plan, host, self.tls))
        unit = units.load_unit("computed-agent.service")
        argv = units.command(unit, BIN_DIR, {"--config": config})
        pid = processes.start(
            host.host_id, argv, self.plan.state_dir, self.plan.log(f"agent-{host.host_id}"),
            unit.notify, netns=host.netns, timeout=90,
        )  # fmt: skip
        self._remember(host.host_id, pid)

    def kill_agent(self, host: HostPlan, grace: float = 0.0) -> None:
        """The agent only: its VMMs run on (as under systemd's KillMode=process)."""
        processes.kill([self.pids.pop(host.host_id)], grace=grace)
        self._save_pids()

    # --- the pid file -------------------------------------------------------------
    def _remember(self, name: str, pid: int) -> None:
        self.pids[name] = pid
        self._save_pids()

    def _save_pids(self) -> None:
        os.makedirs(self.plan.state_dir, exist_ok=True)
        tmp = self.plan.state_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"pids": self.pids}, f)
        os.replace(tmp, self.plan.state_file)

    def _load_pids(self) -> dict[str, int]:
        try:
            with open(self.plan.state_file) as f:
                return {str(k): int(v) for k, v in json.load(f)["pids"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}


def scheduler_metrics_address(plan: ClusterPlan, i: int) -> str:
    """Scheduler i's /metrics: on the cluster's bridge address, unique to this cluster."""
    return f"{plan.bridge_address}:{int(metrics.SCHEDULER_DEFAULT.rsplit(':', 1)[1]) + i}"


def metrics_urls(plan: ClusterPlan) -> list[str]:
    """Every /metrics URL of the cluster: its schedulers', then each agent's (the default,
    on the agent's own address in its namespace). Pure."""
    schedulers = [scheduler_metrics_address(plan, i) for i in range(len(plan.scheduler_addresses))]
    agents = [metrics.agent_default(h.agent_address) for h in plan.hosts]
    return [f"http://{a}/metrics" for a in schedulers + agents]


def tls_settings(files: TlsFiles, prefix: str = "tls") -> dict[str, str]:
    return {f"{prefix}_cacert": files.ca, f"{prefix}_cert": files.cert, f"{prefix}_key": files.key}


def cgroup_parent(host: HostPlan) -> str:
    """Where a dev host's instance cgroups go: one parent per host, removed by `down`."""
    return f"{DEV_CGROUPS}/{host.netns}"


def agent_config(plan: ClusterPlan, host: HostPlan, tls: bool = True) -> str:
    """The host's /etc/computed/agent.conf. Pure."""
    settings = {
        "host_id": host.host_id,
        "listen": host.agent_address,
        "etcd": plan.etcd_endpoint,
        "state_dir": host.state_dir,
        "availability_zone": host.zone,
        "vcpus": str(host.vcpus),
        "memory_mb": str(host.memory_mb),
        "lease_ttl": str(plan.lease_ttl),
        "bridge": netns.HOST_BRIDGE,
        "cgroup_parent": cgroup_parent(host),
        **(tls_settings(cluster_pki.agent_files(plan, host)) if tls else {"insecure": "yes"}),
        **(tls_settings(cluster_pki.agent_files(plan, host), "etcd") if tls else {}),
    }
    return "[agent]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items())


def remember_ksm(state_dir: str, run_path: str = KSM_RUN) -> None:
    """Note the host's KSM setting before the cluster's agents start it (they do, as on a
    compute host: agent/ksm.py), once per cluster, for `down` to put back: on a dev
    machine it is a host-wide setting nobody asked to change. Nothing where there is no
    KSM."""
    found = os.path.join(state_dir, KSM_FOUND)
    if os.path.exists(found):
        return
    try:
        value = run_state(run_path)
    except OSError:
        return
    with open(found, "w") as f:
        f.write(value)


def restore_ksm(state_dir: str, run_path: str = KSM_RUN) -> str | None:
    """Put the host's KSM setting back as `up` found it; what changed, if anything."""
    try:
        with open(os.path.join(state_dir, KSM_FOUND)) as f:
            found = f.read().strip()
        now = run_state(run_path)
        if now == found:
            return None
        set_run_state(found, run_path)
    except OSError:
        return None
    return f"KSM run {now} -> {found} (as found at up)"
