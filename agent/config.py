"""computed-agent's settings: flags, an optional INI config file, defaults. Pure.

Precedence: command-line flag > config file ([agent] section, keys spelled
like the flags without dashes, e.g. `stats_interval = 2`) > default.
"""

from __future__ import annotations

import argparse
import configparser
import dataclasses
import socket
from collections.abc import Callable

from agent.cgroups import DEFAULT_PARENT, CgroupError, parent_parts
from agent.vmm_users import DEFAULT_UID_RANGE, UidRangeError, parse_id_range
from agent.warm_parent import DEFAULT_STANDBYS
from computed.capacity import DEFAULT_CPU_RATIO, DEFAULT_RAM_RATIO
from computed.mtls.serving import add_tls_flags, etcd_tls_files, tls_files
from computed.tls_files import TlsFiles

# <state-dir>/instances/<36-char uuid>/jail/control.sock must fit a unix socket path.
_SOCKET_PATH_MAX = 107
_SOCKET_SUFFIX_LEN = len("/instances/") + 36 + len("/jail/control.sock")
MAX_STANDBYS = 64  # each holds a VM and about 1 MiB: a pool, not a second host


FileReader = Callable[[str], str]


def _read_text(path: str) -> str:
    with open(path) as f:
        return f.read()


class ConfigError(ValueError):
    """A setting is wrong; the message names it."""


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    host_id: str
    listen: str = "127.0.0.1:8775"
    etcd: tuple[str, ...] = ("127.0.0.1:2379",)
    # TLS to etcd: the cluster CA and this host's client pair (CN agent-<host-id>, whose
    # etcd user may write this host's keys only). None: plaintext.
    etcd_tls: TlsFiles | None = None
    state_dir: str = "/var/lib/computed"
    stats_interval: float = 1.0
    stats_pss: bool = False  # PSS reads /proc/<pid>/smaps_rollup: costly, so on request
    vcpus: int | None = None  # None: this machine's
    memory_mb: int | None = None
    cpu_allocation_ratio: float = DEFAULT_CPU_RATIO
    ram_allocation_ratio: float = DEFAULT_RAM_RATIO
    availability_zone: str = "nova"
    lease_ttl: int = 10
    stop_timeout: float = 10.0
    # Nova's sync_power_state_interval is 600 s; each sync asks every VMM over its socket.
    sync_interval: float = 60.0
    bridge: str | None = None  # instance taps go on this bridge; None: no instance network
    # Confinement (agent/jail.py): each VMM pivots into its jail, runs as its own uid from
    # this range, without capabilities, in its own cgroup under cgroup_parent.
    confine: bool = True
    vmm_uid_range: str = DEFAULT_UID_RANGE
    cgroup_parent: str = DEFAULT_PARENT
    # Remount cgroup2 with favordynmods at start (agent/cgroups.favordynmods_target): a
    # VMM's cgroup join then skips an RCU grace period. False leaves the mounts alone.
    cgroup_favordynmods: bool = True
    # Start the host's same-page merging (agent/ksm.py) where it is off, for the VMMs'
    # interpreter pages (never guest RAM). False leaves /sys/kernel/mm/ksm alone.
    ksm: bool = True
    # VMMs are forked by a warm parent that has done their imports (agent/warm_parent.py);
    # off, each VMM is a fresh exec, as it also is whenever the warm parent cannot serve.
    warm_parent: bool = True
    # Standby VMMs the warm parent keeps made (VM, RAM, irqchip, PIT), so that a burst of
    # up to this many spawns forks nothing; beyond it VMMs are forked on demand.
    warm_standbys: int = DEFAULT_STANDBYS
    # Prometheus /metrics (agent/metrics.py): "" = the --listen host, port 9775; "0" = off.
    metrics_address: str = ""
    # The hypervisor seam (agent/drivers/): "kvm" runs computed-vmm processes; "fake" runs
    # pretend instances without KVM (hollow hosts, control-plane scale runs).
    driver: str = "kvm"
    # mTLS for the Agent service (only scheduler certificates get in); None: --insecure.
    tls: TlsFiles | None = None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="computed-agent",
        description="computed host agent: runs and supervises this host's VMMs.",
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("--config", help="INI file with an [agent] section")
    p.add_argument("--host-id", help="this host's id (default: the hostname)")
    p.add_argument("--listen", help="gRPC address, host:port (default 127.0.0.1:8775)")
    p.add_argument("--etcd", help="etcd endpoints, comma-separated host:port")
    p.add_argument("--metrics-address", help="Prometheus /metrics, host:port (default: the "
                   "--listen host, port 9775; 0 disables)")  # fmt: skip
    p.add_argument("--state-dir", help="instance directories (default /var/lib/computed)")
    p.add_argument("--stats-interval", type=float, help="seconds between stats samples")
    p.add_argument("--stats-pss", action="store_true", help="also report memory.pss (costly)")
    p.add_argument("--vcpus", type=int, help="vCPUs to advertise (default: this machine's)")
    p.add_argument("--memory-mb", type=int, help="memory to advertise, MiB")
    p.add_argument("--cpu-allocation-ratio", type=float)
    p.add_argument("--ram-allocation-ratio", type=float)
    p.add_argument("--availability-zone")
    p.add_argument("--lease-ttl", type=int, help="liveness lease TTL, seconds (default 10)")
    p.add_argument("--stop-timeout", type=float, help="graceful stop timeout, seconds")
    p.add_argument("--sync-interval", type=float, help="power-state sync period, seconds")
    p.add_argument("--bridge", help="bridge for instance taps (default: no instance network)")
    p.add_argument(
        "--no-confine",
        dest="confine",
        action="store_false",
        help="run VMMs as root, unjailed, without cgroups (development only)",
    )
    p.add_argument(
        "--no-warm-parent",
        dest="warm_parent",
        action="store_false",
        help="exec every VMM afresh instead of forking it from the warm VMM parent",
    )
    p.add_argument(
        "--warm-standbys",
        type=int,
        metavar="N",
        help=f"standby VMMs the warm parent keeps ready, each about 1 MiB (default "
        f"{DEFAULT_STANDBYS}; 0: fork every VMM on demand)",
    )
    p.add_argument(
        "--driver",
        choices=("kvm", "fake"),
        help="kvm (default) runs VMMs; fake pretends to, without KVM (hollow hosts)",
    )
    p.add_argument(
        "--vmm-uid-range",
        help=f"uids (gid = uid) for confined VMMs, one per instance (default {DEFAULT_UID_RANGE})",
    )
    p.add_argument(
        "--cgroup-parent",
        help=f"instance cgroups go under this, relative to the cgroup root; './x' puts them "
        f"under the agent's own cgroup (default {DEFAULT_PARENT})",
    )
    p.add_argument(
        "--no-cgroup-favordynmods",
        dest="cgroup_favordynmods",
        action="store_false",
        help="leave the cgroup2 mount's options alone (default: add favordynmods, which "
        "makes joining a cgroup, once per VMM launch, skip an RCU grace period)",
    )
    p.add_argument(
        "--ksm",
        action=argparse.BooleanOptionalAction,
        help="start the host's same-page merging if it is off, so idle VMMs share the "
        "interpreter pages they hold alike (the default; guest RAM is never merged); "
        "--no-ksm leaves it as it is",
    )
    add_tls_flags(p, default=argparse.SUPPRESS)
    return p


_FIELD_TYPES = {
    f.name: f.type for f in dataclasses.fields(AgentConfig) if "TlsFiles" not in str(f.type)
}
# The flags (and config-file keys) that become `tls` and `etcd_tls`.
_TLS_KEYS = {"tls_cacert": "str", "tls_cert": "str", "tls_key": "str", "insecure": "bool",
             "etcd_cacert": "str", "etcd_cert": "str", "etcd_key": "str"}  # fmt: skip


def parse_config(argv: list[str], read_file: FileReader | None = None) -> AgentConfig:
    """Flags (argparse exits 2 on malformed flags) + config file → validated AgentConfig."""
    flags = vars(_parser().parse_args(argv))
    values: dict[str, object] = {}
    config_file = flags.pop("config", None)
    if config_file:
        values.update(_read_ini(config_file, read_file))
    values.update(flags)
    values.setdefault("host_id", socket.gethostname())
    tls = {k: values.pop(k, None) for k in _TLS_KEYS}
    try:
        values["tls"] = tls_files(
            tls["tls_cacert"], tls["tls_cert"], tls["tls_key"], bool(tls["insecure"])
        )
        values["etcd_tls"] = etcd_tls_files(tls["etcd_cacert"], tls["etcd_cert"], tls["etcd_key"])
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if "etcd" in values and isinstance(values["etcd"], str):
        values["etcd"] = tuple(e.strip() for e in str(values["etcd"]).split(",") if e.strip())
    return validate(AgentConfig(**values))  # type: ignore[arg-type]


def _read_ini(path: str, read_file: FileReader | None) -> dict[str, object]:
    parser = configparser.ConfigParser()
    try:
        text = (read_file or _read_text)(path)
        parser.read_string(text, source=path)
    except (OSError, configparser.Error) as e:
        raise ConfigError(f"config file {path}: {e}") from None
    if not parser.has_section("agent"):
        return {}
    out: dict[str, object] = {}
    for key, raw in parser.items("agent"):
        name = key.replace("-", "_")
        if name not in _FIELD_TYPES and name not in _TLS_KEYS:
            raise ConfigError(f"config file {path}: unknown setting {key!r}")
        out[name] = _convert(name, raw, path)
    return out


def _convert(name: str, raw: str, path: str) -> object:
    kind = str(_FIELD_TYPES.get(name) or _TLS_KEYS[name])
    try:
        if "bool" in kind:
            return raw.strip().lower() in ("1", "yes", "true", "on")
        if "int" in kind:
            return int(raw)
        if "float" in kind:
            return float(raw)
    except ValueError:
        raise ConfigError(f"config file {path}: {name} = {raw!r} is not a number") from None
    return raw


def validate(c: AgentConfig) -> AgentConfig:
    if not c.host_id or len(c.host_id) > 63 or "/" in c.host_id:
        raise ConfigError(f"--host-id {c.host_id!r}: 1..63 characters, no '/'")
    if c.listen.rpartition(":")[2].isdigit() is False:
        raise ConfigError(f"--listen {c.listen!r}: expected host:port")
    if not c.etcd or any(":" not in e for e in c.etcd):
        raise ConfigError(f"--etcd {','.join(c.etcd)!r}: expected host:port[,host:port…]")
    if len(c.state_dir.rstrip("/")) + _SOCKET_SUFFIX_LEN > _SOCKET_PATH_MAX:
        raise ConfigError(
            f"--state-dir {c.state_dir!r} is too long: instance control sockets must fit in "
            f"{_SOCKET_PATH_MAX} bytes (use at most {_SOCKET_PATH_MAX - _SOCKET_SUFFIX_LEN} chars)"
        )
    if c.driver not in ("kvm", "fake"):
        raise ConfigError(f"--driver {c.driver!r}: kvm or fake")
    if not 0.1 <= c.stats_interval <= 3600:
        raise ConfigError("--stats-interval: 0.1..3600 seconds")
    if not 0 <= c.warm_standbys <= MAX_STANDBYS:
        raise ConfigError(f"--warm-standbys: 0..{MAX_STANDBYS}")
    if not 2 <= c.lease_ttl <= 3600:
        raise ConfigError("--lease-ttl: 2..3600 seconds")
    for name in ("vcpus", "memory_mb"):
        value = getattr(c, name)
        if value is not None and value <= 0:
            raise ConfigError(f"--{name.replace('_', '-')}: must be positive")
    if c.cpu_allocation_ratio <= 0 or c.ram_allocation_ratio <= 0:
        raise ConfigError("allocation ratios must be positive")
    try:
        parse_id_range(c.vmm_uid_range)
    except UidRangeError as e:
        raise ConfigError(f"--vmm-uid-range: {e}") from None
    try:
        parent_parts(c.cgroup_parent)
    except CgroupError as e:
        raise ConfigError(f"--cgroup-parent: {e}") from None
    return c
