"""computed-agent: one per host; runs, supervises and reports its VMMs.

Start-up order matters for "restarts do not touch VMs": first re-adopt every
VMM still running from the instance directories, then serve gRPC, then tell
systemd we are ready. On SIGTERM the agent stops serving and exits; its VMMs
keep running (they are in their own sessions; the unit uses KillMode=process).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Iterator

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from agent import ksm
from agent import metrics as agent_metrics
from agent.cgroups import CgroupError, favor_dynamic_changes
from agent.config import AgentConfig, ConfigError, parse_config
from agent.drivers.base import Driver
from agent.drivers.fake import FAKE_KVM_FACTS, FakeDriver, use_fake_stats
from agent.drivers.kvm import KvmDriver
from agent.host_facts import KvmFacts, detect_kvm_facts
from agent.image_cache import ImageCache
from agent.jail import Jailer, JailError
from agent.reporter import Reporter
from agent.servicer import AgentServicer
from agent.supervisor import InstanceSupervisor
from agent.vmm_process import vmm_environment
from agent.vmm_users import parse_id_range
from agent.warm_parent import WarmParent
from computed import metrics, sdnotify
from computed.api import agent_pb2, agent_pb2_grpc
from computed.capacity import Capacity, machine_capacity
from computed.mtls import cert_expiry, serving
from computed.mtls.access import AGENT_ACCESS
from computed.mtls.credentials import TlsError, warn_expiring
from computed.store import image_blobs
from computed.store.client import Store
from computed.subreaper import become_subreaper, reap_strays

log = logging.getLogger("computed.agent")
SERVICE_NAME = agent_pb2.DESCRIPTOR.services_by_name["Agent"].full_name
_GRACE = 5.0


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        driver: Driver | None = None,
        kvm: KvmFacts | None = None,
        server: grpc.Server | None = None,
    ) -> None:
        """`driver`, `kvm` and `server` are given by a process that runs many agents
        (agent/hollow.py serves them all from one event loop and thread pool, and starts
        and stops their servers itself); otherwise the config's driver is built here, the
        host's KVM is probed and the agent has a gRPC server of its own."""
        self.config = config
        size = machine_capacity(config.vcpus, config.memory_mb)
        self.capacity = Capacity(
            size.vcpus, size.memory_mb, config.cpu_allocation_ratio, config.ram_allocation_ratio
        )
        self.warm: WarmParent | None = None
        if driver is None:
            driver = FakeDriver() if config.driver == "fake" else self._kvm_driver(config)
        if driver.name == "fake":
            use_fake_stats()
        self.kvm = kvm or (FAKE_KVM_FACTS if driver.name == "fake" else detect_kvm_facts())
        self.stopping = threading.Event()
        self.reporter = Reporter(config, self.capacity, self.kvm)
        self.reporter.store = agent_metrics.ReportingStore(self.reporter.store)  # timed writes
        self._image_store: Store | None = None
        self._image_store_lock = threading.Lock()
        images = ImageCache(config.state_dir, self._read_image)
        self.supervisor = InstanceSupervisor(
            config.state_dir,
            self.capacity,
            self.reporter.instance_changed,
            config.stop_timeout,
            images=images,
            driver=driver,
        )
        self.reporter.attach(self.supervisor)
        self.health = health.HealthServicer()
        self._owns_server = server is None
        self.tls = None
        if server is None:  # a hollow host's server is its runner's (plaintext, shared)
            try:
                server, self.tls = serving.make_server(config.tls, AGENT_ACCESS, 16, "rpc")
            except TlsError as e:
                raise ConfigError(str(e)) from None
            if self.tls is not None:
                cert_expiry.publish(self.tls.not_after())
        self.server = server
        agent_pb2_grpc.add_AgentServicer_to_server(
            AgentServicer(
                self.supervisor, config.host_id, config.availability_zone, self.kvm, config.listen
            ),
            self.server,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        if not serving.listen(self.server, config.listen, self.tls, "agent"):
            raise ConfigError(f"--listen {config.listen}: cannot listen there")
        collector = agent_metrics.AgentCollector(
            config.host_id, self.supervisor, self.reporter.store
        )
        address = config.metrics_address or metrics.agent_default(config.listen)
        metrics.serve(address, [collector], explicit=bool(config.metrics_address))

    def _read_image(self, digest: str) -> Iterator[bytes]:
        """An uploaded image's bytes from etcd, through a client of its own (made at the
        first fetch: hollow hosts never fetch), so fetches never queue behind reports."""
        with self._image_store_lock:
            if self._image_store is None:
                self._image_store = Store(self.config.etcd, tls=self.config.etcd_tls)
        return image_blobs.read_chunks(self._image_store, digest)

    def _kvm_driver(self, config: AgentConfig) -> KvmDriver:
        jailer = None
        if config.confine:
            jailer = Jailer(
                config.state_dir, parse_id_range(config.vmm_uid_range), config.cgroup_parent
            )
            if config.cgroup_favordynmods:
                favor_cgroup_joins()
        if config.ksm:
            merge_identical_pages()
        self.warm = warm_parent(config)
        return KvmDriver(config.bridge, jailer, self.warm)

    def reload_tls(self) -> None:
        """SIGHUP: new connections get the renewed certificate; VMMs and RPCs carry on."""
        if self.tls is None:
            log.info("SIGHUP: --insecure, no certificates to reload")
            return
        self.tls.reload()
        cert_expiry.publish(self.tls.not_after())
        warn_expiring("agent", self.tls.cert_pem)
        log.info("SIGHUP: reloaded %s (valid until %s)", self.tls.files.cert, self.tls.not_after())

    def run(self) -> None:
        """Serve until SIGTERM (self.stopping), as the one agent of this process."""
        adopted = self.start()
        watchdog = sdnotify.Watchdog(healthy=lambda: not self.stopping.is_set())
        watchdog.start()
        sdnotify.ready(f"serving on {self.config.listen}, {len(adopted)} instance(s)")
        self.stopping.wait()
        sdnotify.stopping()
        log.info("stopping: VMMs keep running")
        self.stop()
        watchdog.stop()

    def start(self, power_sync: bool = True) -> list:
        """Adopt, serve gRPC, report to etcd; returns the adopted instances.
        `power_sync`: run the periodic power-state sync thread (a hollow host's
        instances cannot drift, so the hollow runner leaves it off)."""
        adopted = self.supervisor.adopt_all()
        log.info("adopted %d instance(s) from %s", len(adopted), self.config.state_dir)
        if self.warm is not None:  # warm before the first Spawn, without holding up serving
            threading.Thread(target=self.warm.prestart, name="warm-parent", daemon=True).start()
        if self._owns_server:
            self.server.start()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.reporter.start()
        if power_sync:
            threading.Thread(target=self._sync_loop, name="power-sync", daemon=True).start()
        log.info(
            "serving %s on %s as host %s", SERVICE_NAME, self.config.listen, self.config.host_id
        )
        return adopted

    def stop(self, grace: float = _GRACE) -> None:
        """Stop serving and reporting (the lease is revoked); instances keep running."""
        self.stopping.set()
        self.health.enter_graceful_shutdown()
        if self._owns_server:
            self.server.stop(grace).wait()
        self.reporter.close()
        self.supervisor.close()
        if self._image_store is not None:
            self._image_store.close()
        if self.warm is not None:
            self.warm.stop()  # never its VMMs: they are not its children

    def _sync_loop(self) -> None:
        while not self.stopping.wait(self.config.sync_interval):
            try:
                self.supervisor.sync_power_states()
                if self.warm is not None:  # we are a subreaper: orphans come to us
                    # standbys the warm parent let go are its client's to reap
                    waited_for = self.warm.reap_ended() | {self.warm.pid}
                    known = {v.pid for v in self.supervisor.list() if v.pid} | waited_for
                    for pid in reap_strays(known):
                        log.info("reaped stray child %d", pid)
            except Exception:
                log.exception("power-state sync failed")


def favor_cgroup_joins() -> None:
    """Make joining a cgroup cheap for every VMM launch (agent/cgroups.favordynmods_target);
    where it cannot be, launches still work, only slower, and the log says so."""
    try:
        target = favor_dynamic_changes()
    except CgroupError as e:
        log.warning("%s; each confined launch waits out an RCU grace period to join its cgroup", e)
        return
    if target is not None:
        log.info("remounted %s with favordynmods: VMMs join their cgroups without waiting "
                 "out an RCU grace period (cgroup_favordynmods = false leaves mounts alone)",
                 target)  # fmt: skip


def merge_identical_pages() -> None:
    """Start the host's KSM for the VMMs' interpreter pages (agent/ksm.py); where it
    cannot be, VMMs run the same, each with its own copies, and the log says so."""
    try:
        started = ksm.start_merging()
    except OSError as e:
        log.warning("same-page merging not started (%s): each VMM keeps its own copy of "
                    "the interpreter pages it shares with the others", e)  # fmt: skip
        return
    if started:
        log.info("started the host's same-page merging (%s): idle VMMs share the interpreter "
                 "pages they hold alike; guest RAM is never merged (ksm = false leaves it "
                 "alone)", ksm.KSM_RUN)  # fmt: skip


def warm_parent(config: AgentConfig) -> WarmParent | None:
    """The warm VMM parent, if configured and this agent can be its VMMs' subreaper
    (which is how their exit status reaches us); None execs every VMM instead."""
    if not config.warm_parent:
        return None
    try:
        become_subreaper()
    except OSError as e:
        log.warning("no warm VMM parent (each VMM is exec'd): %s", e)
        return None
    return WarmParent(config.state_dir, vmm_environment(), standbys=config.warm_standbys)


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s computed-agent %(levelname)s %(message)s"
    )
    try:
        agent = Agent(parse_config(sys.argv[1:]))
    except (ConfigError, JailError, OSError, metrics.MetricsAddressError) as e:
        print(f"computed-agent: error: {e}", file=sys.stderr)
        sys.exit(2)
    for signo in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signo, lambda _s, _f: agent.stopping.set())
    serving.on_sighup(agent.reload_tls)
    agent.run()


if __name__ == "__main__":
    main()
