"""The pure parts of observing the fleet: the action log's rules, top's view model and
snapshot, metric addresses and exit causes, the CLI's new commands."""

from __future__ import annotations

import json

import pytest

from agent.metrics import ReportingStore, exit_cause
from computed import metrics
from computed.cli import main as cli
from computed.cli import top_model as model
from computed.devcluster.cluster import metrics_urls, scheduler_metrics_address
from computed.devcluster.plan import make_plan
from computed.store.ops import Delete, Put
from computed.store.records import (
    ActionLogRecord,
    AllocationRecord,
    Claim,
    HostRecord,
    InstanceRecord,
    InstanceSpec,
    KvmFacts,
    LivenessRecord,
)
from scheduler import actions, top
from scheduler.cluster_view import ClusterView

UUID = "5c0f0000-0000-4000-8000-000000000001"


def record(status: str = "ACTIVE", power: str = "RUNNING", updated: float = 10.0, **kw):
    spec = InstanceSpec(UUID, "instance-00000001", "heartbeat", 1, 64)
    return InstanceRecord(spec, status, power, updated_at=updated, display_name="web", **kw)


# --- the action log --------------------------------------------------------------


def test_entries_are_kept_in_time_order_with_the_names():
    log = actions.appended(None, record(), actions.entry("stop", 5.0, "admin", None), UUID)
    log = actions.appended(log, record(), actions.entry("create", 1.0, "admin", None), UUID)
    assert [e.action for e in log.entries] == ["create", "stop"]
    assert (log.name, log.instance_name, log.deleted) == ("web", "instance-00000001", False)


def test_the_log_is_bounded_and_keeps_its_first_entry():
    log = None
    for i in range(10):
        log = actions.appended(log, record(), actions.entry("reboot", float(i), "a", None), UUID,
                               bound=4)  # fmt: skip
    assert [e.at for e in log.entries] == [0.0, 7.0, 8.0, 9.0]


def test_an_error_keeps_its_message_and_a_success_its_note():
    failed = actions.entry("resume", 1.0, "bob", "cannot resume an ACTIVE instance")
    assert (failed.result, failed.message) == ("error", "cannot resume an ACTIVE instance")
    ok = actions.entry("reboot", 1.0, "bob", None, note="hard")
    assert (ok.result, ok.message) == ("success", "hard")
    with pytest.raises(ValueError):
        actions.entry("explode", 1.0, "bob", None)


def test_a_successful_delete_marks_the_log_deleted():
    log = actions.appended(None, record(), actions.entry("delete", 1.0, "a", "agent down"), UUID)
    assert not log.deleted
    log = actions.appended(log, record(), actions.entry("delete", 2.0, "a", None), UUID)
    assert log.deleted


def test_a_crash_seen_by_two_schedulers_is_logged_once():
    crashed = record("ERROR", "CRASHED", updated=42.5, fault="VMM process killed by SIGKILL")
    ref = actions.crash_ref(crashed)
    first = actions.appended(None, crashed, actions.entry("crash", 43.0, "system", "x", ref=ref),
                             UUID)  # fmt: skip
    again = actions.entry("crash", 43.2, "system", "x", ref=ref)
    assert actions.appended(first, crashed, again, UUID) is None


def test_crashes_are_found_once_per_crash():
    seen: dict[str, str] = {}
    crashed = record("ERROR", "CRASHED", updated=1.0)
    assert actions.new_crashes({UUID: crashed}, seen) == [crashed]
    assert actions.new_crashes({UUID: crashed}, seen) == []  # the same crash again
    assert actions.new_crashes({UUID: record()}, seen) == []  # started again
    assert UUID not in seen
    again = record("ERROR", "CRASHED", updated=9.0)
    assert actions.new_crashes({UUID: again}, seen) == [again]  # a new crash
    assert actions.new_crashes({}, seen) == [] and seen == {}  # deleted: forgotten


def test_a_build_failure_or_a_stop_is_no_crash():
    assert not actions.is_crash(record("ERROR", "NOSTATE"))
    assert not actions.is_crash(record("SHUTOFF", "SHUTDOWN"))
    assert actions.is_crash(record("ERROR", "CRASHED"))


def test_action_log_record_round_trips():
    log = actions.appended(None, record(), actions.entry("create", 1.0, "a", None), UUID)
    assert ActionLogRecord.from_json(log.to_json()) == log


# --- top's snapshot (scheduler side) ------------------------------------------------


def test_snapshot_carries_helper_counters_and_host_usage():
    view = ClusterView()
    view.hosts["h1"] = HostRecord(
        "h1", "10.0.0.1:8775", "nova", 2, 4096, 16.0, 1.5, KvmFacts(12, "", "userspace", True)
    )
    view.live["h1"] = LivenessRecord("h1", 1.0)
    view.allocations["h1"] = AllocationRecord("h1", {UUID: Claim(1, 64)})
    view.instances[UUID] = record(host="h1", pid=4242)
    sample = {
        "uuid": UUID, "timestamp": 100.0, "cpu.percent": 12.5, "cpu.time": 3_000_000_000,
        "vcpu.count": 2, "vcpu.0.time": 1_000_000_000, "vcpu.1.time": None,
        "helper.kvm-pit.time": 2_000_000, "helper.vhost.time": 900_000,
        "helper.vhost.kind": "userspace", "memory.rss": 9_437_184,
    }  # fmt: skip
    host = {"timestamp": 100.0, "cpu.percent": 40.0, "memory.total": 100, "memory.used": 25}
    shot = top.snapshot(view, {UUID: sample}, {"h1": host}, now=101.0)
    (row,) = shot.instances
    assert (row.name, row.host, row.status, row.cpu_percent) == ("web", "h1", "ACTIVE", 12.5)
    assert (row.vcpu_time_ns, row.kvm_pit_time_ns, row.vhost_time_ns) == (
        1_000_000_000, 2_000_000, 900_000,
    )  # fmt: skip
    assert row.has_cpu_percent and row.vhost_kind == "userspace" and row.sampled_at == 100.0
    (h,) = shot.hosts
    assert (h.up, h.allocated_vcpus, h.allocated_memory_mb, h.instances) == (True, 1, 64, 1)
    assert (h.cpu_percent, h.memory_used, h.memory_total) == (40.0, 25, 100)


def test_snapshot_shows_no_stats_for_an_instance_without_a_vmm():
    view = ClusterView()
    view.instances[UUID] = record("SHUTOFF", "SHUTDOWN")
    shot = top.snapshot(view, {UUID: {"cpu.time": 5, "timestamp": 1.0}}, {}, now=2.0)
    assert shot.instances[0].sampled_at == 0 and shot.instances[0].cpu_time_ns == 0


def test_top_interval_is_bounded_below():
    assert top.interval_of(0) == top.DEFAULT_INTERVAL
    assert top.interval_of(0.01) == top.MIN_INTERVAL
    assert top.interval_of(3) == 3


# --- top's view model (CLI side) ----------------------------------------------------


def sample(name: str, at: float, pit: int, host: str = "h1", status: str = "ACTIVE", **kw):
    fields = dict(
        uuid=name, name=name, instance_name=name, host=host, status=status,
        power_state="RUNNING", vcpus=1, memory_mb=64, cpu_percent=kw.pop("cpu", 1.0),
        cpu_time_ns=0, vcpu_time_ns=kw.pop("vcpu", 0), kvm_pit_time_ns=pit, vhost_time_ns=0,
        vhost_kind="", memory_rss=kw.pop("rss", 0), sampled_at=at,
    )  # fmt: skip
    return model.Sample(**fields)


def test_percent_from_cumulative_counters():
    assert model.percent(0, 500_000_000, 10.0, 11.0) == pytest.approx(50.0)
    assert model.percent(0, 2_000_000_000, 10.0, 11.0) == pytest.approx(200.0)  # two CPUs
    assert model.percent(5, 1, 10.0, 11.0) is None  # a new VMM: counter restarted
    assert model.percent(0, 1, 10.0, 10.0) is None


def test_rates_need_two_samples_and_survive_a_repeated_one():
    rates = model.Rates()
    (first,) = rates.rows([sample("a", 10.0, 0, vcpu=0)])
    assert first.kvm_pit_percent is None and first.vcpu_percent is None
    (second,) = rates.rows([sample("a", 12.0, 20_000_000, vcpu=1_000_000_000)])
    assert second.kvm_pit_percent == pytest.approx(1.0)
    assert second.vcpu_percent == pytest.approx(50.0)
    (same,) = rates.rows([sample("a", 12.0, 20_000_000, vcpu=1_000_000_000)])
    assert same.kvm_pit_percent == pytest.approx(1.0)  # no new sample: the rate stays


def test_sorting_puts_unknown_values_last_and_filters_apply():
    rows = model.Rates().rows([
        sample("b", 1.0, 0, cpu=5.0), sample("a", 1.0, 0, cpu=None, host="h2"),
        sample("c", 1.0, 0, cpu=50.0, status="PAUSED"),
    ])  # fmt: skip
    state = model.ViewState()
    assert [r.name for r in state.select(rows)] == ["c", "b", "a"]
    state = model.on_key(state, "N", [], [])
    assert [r.name for r in state.select(rows)] == ["a", "b", "c"]
    state = model.on_key(state, "h", ["h2", "h1"], [])
    assert state.host == "h1" and [r.name for r in state.select(rows)] == ["b", "c"]
    state = model.on_key(state, "s", [], {"PAUSED", "ACTIVE"})
    assert state.status == "ACTIVE" and [r.name for r in state.select(rows)] == ["b"]
    state = model.on_key(state, "c", [], [])
    assert (state.host, state.status) == (None, None)


def test_keys_cycle_sort_columns_and_quit():
    state = model.ViewState(sort="name", descending=False)
    state = model.on_key(state, ">", [], [])
    assert state.sort == "host"
    state = model.on_key(state, "<", [], [])
    assert state.sort == "name"
    state = model.on_key(state, "<", [], [])
    assert state.sort == model.COLUMNS[-1][0]
    assert model.on_key(state, "r", [], []).descending != state.descending
    assert model.on_key(state, "x", [], []) == state
    assert model.on_key(state, "q", [], []).quit


def test_host_filter_cycles_through_hosts_then_off():
    state = model.ViewState()
    seen = []
    for _ in range(3):
        state = model.on_key(state, "h", ["h2", "h1"], [])
        seen.append(state.host)
    assert seen == ["h1", "h2", None]


def test_json_snapshot_has_helper_cpu():
    rates = model.Rates()
    rates.rows([sample("a", 10.0, 0)])
    rows = rates.rows([sample("a", 11.0, 10_000_000)])
    shot = model.snapshot_json(11.0, [], rows)
    pit = shot["instances"][0]["helpers"]["kvm-pit"]
    assert pit == {"cpu_time": 0.01, "cpu_percent": 1.0}
    json.dumps(shot)


# --- metrics --------------------------------------------------------------------------


def test_metrics_address_parsing():
    assert metrics.parse_address("0") is None and metrics.parse_address("") is None
    assert metrics.parse_address("127.0.0.1:9774") == ("127.0.0.1", 9774)
    assert metrics.parse_address(":9774") == ("0.0.0.0", 9774)
    assert metrics.parse_address("[::1]:9774") == ("::1", 9774)
    for bad in ("9774x", "host", "host:0", "host:70000"):
        with pytest.raises(metrics.MetricsAddressError, match="--metrics-address"):
            metrics.parse_address(bad)
    assert metrics.agent_default("10.0.0.7:8775") == "10.0.0.7:9775"


def test_vmm_exit_causes():
    assert exit_cause(-9) == "SIGKILL"
    assert exit_cause(0) == "powered_off"
    assert exit_cause(4) == "guest_crashed"
    assert exit_cause(None) == "unknown"
    assert exit_cause(77) == "status_77"


class _Written:
    """Stands in for the Store: ReportingStore only forwards to it."""

    def put_many(self, ops, lease=None):
        return [1]

    def compare_and_swap(self, *args, **kwargs):
        return True


def test_the_agent_exports_the_stats_it_last_wrote():
    store = ReportingStore(_Written())
    inst = {"uuid": UUID, "cpu.time": 5, "helper.kvm-pit.time": 7}
    host = {"capacity.vcpus": 2, "timestamp": 1.0}
    store.put_many([Put("/k/i", json.dumps(inst)), Put("/k/h", json.dumps(host)),
                    Put("/k/live", '{"host_id": "h1"}')])  # fmt: skip
    assert store.last_stats() == ({UUID: inst}, host)
    store.put_many([Delete("/k/i")])
    assert store.last_stats() == ({}, host)


def test_metrics_are_served_without_looking_the_address_name_up(monkeypatch):
    """http.server's bind reverse-resolves its address (socket.getfqdn); where no resolver
    answers, as in a host's network namespace, that held every agent's start for 10 s."""
    import socket
    import urllib.request

    def no_lookup(*_args):
        raise AssertionError("socket.getfqdn called while binding /metrics")

    monkeypatch.setattr(socket, "getfqdn", no_lookup)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = metrics.serve(f"127.0.0.1:{port}")
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert b"python_gc_objects_collected_total" in reply.read()


def test_the_dev_cluster_names_every_metrics_url():
    plan = make_plan(hosts=2, schedulers=2)
    urls = metrics_urls(plan)
    assert urls[:2] == [
        f"http://{scheduler_metrics_address(plan, 0)}/metrics",
        f"http://{scheduler_metrics_address(plan, 1)}/metrics",
    ]
    assert urls[2] == f"http://{plan.hosts[0].address}:9775/metrics"
    assert len(set(urls)) == 4


# --- the CLI -------------------------------------------------------------------------


def test_top_sort_choices_are_the_view_models_columns():
    assert tuple(c for c, _ in model.COLUMNS) == cli.TOP_SORTS


def test_top_and_event_list_parse():
    args = cli.parse(["top", "-n", "1", "-f", "json", "--host", "h1", "--status", "active"])
    assert (args.handler, args.iterations, args.format, args.status) == ("top", 1, "json", "ACTIVE")
    args = cli.parse(["server", "event", "list", "web", "-f", "json"])
    assert (args.handler, args.server, args.fields) == ("server_event_list", "web", "event")
    with pytest.raises(SystemExit):
        cli.parse(["top", "-f", "value"])


def test_when_hosts_do_not_fit_the_down_and_busiest_are_shown():
    def host(name: str, up: bool, cpu: float | None) -> model.HostRow:
        return model.HostRow(name, up, True, 2, 1024, 0, 0, cpu, 0, 0, 0, 0.0)

    hosts = [host("a", True, 5.0), host("b", False, None), host("c", True, 90.0),
             host("d", True, 50.0)]  # fmt: skip
    assert [h.host_id for h in model.busiest_hosts(hosts, 3)] == ["b", "c", "d"]
    assert len(model.busiest_hosts(hosts, 10)) == 4
