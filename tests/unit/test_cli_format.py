"""computectl's pure parts: output formats, -c, message → display dict, errors, --wait's tracker."""

from __future__ import annotations

import json

import pytest

from computed.api import compute_pb2, types_pb2
from computed.cli import convert
from computed.cli.errors import CliError, rpc_message
from computed.cli.format import FormatError, Result, human_bytes, human_seconds, render, table
from computed.cli.wait import Tracker

ROWS = [
    {"id": "a1", "name": "web-1", "status": "ACTIVE", "memory": 1536},
    {"id": "b2", "name": "web-2", "status": "ERROR", "memory": 0},
]
LISTED = Result(ROWS, ("id", "name", "status"), human={"memory": human_bytes})


# --- format ---------------------------------------------------------------------------
def test_table_is_bordered_and_aligned():
    assert render(LISTED).splitlines() == [
        "+----+-------+--------+",
        "| id | name  | status |",
        "+----+-------+--------+",
        "| a1 | web-1 | ACTIVE |",
        "| b2 | web-2 | ERROR  |",
        "+----+-------+--------+",
    ]


def test_show_is_a_field_value_table_with_humanized_values():
    shown = Result([ROWS[0]], ("id", "memory"), single=True, human={"memory": human_bytes})
    assert render(shown).splitlines() == [
        "+--------+---------+",
        "| Field  | Value   |",
        "+--------+---------+",
        "| id     | a1      |",
        "| memory | 1.5 KiB |",
        "+--------+---------+",
    ]


def test_multiline_cells_keep_the_border():
    out = table(["k", "v"], [["a", "one\ntwo"]]).splitlines()
    assert out[3:5] == ["| a | one |", "|   | two |"]


def test_json_list_is_an_array_and_show_an_object_with_raw_values():
    assert json.loads(render(LISTED, "json")) == [
        {"id": "a1", "name": "web-1", "status": "ACTIVE"},
        {"id": "b2", "name": "web-2", "status": "ERROR"},
    ]
    shown = Result([ROWS[0]], ("id", "memory"), single=True, human={"memory": human_bytes})
    assert json.loads(render(shown, "json")) == {"id": "a1", "memory": 1536}


def test_value_prints_rows_space_separated():
    assert render(LISTED, "value") == "a1 web-1 ACTIVE\nb2 web-2 ERROR"
    assert render(LISTED, "value", ["status"]) == "ACTIVE\nERROR"


def test_columns_select_and_order_in_every_format():
    assert render(LISTED, "value", ["status", "ID"]) == "ACTIVE a1\nERROR b2"
    assert json.loads(render(LISTED, "json", ["memory"])) == [{"memory": 1536}, {"memory": 0}]
    assert render(LISTED, "table", ["name"]).splitlines()[1] == "| name  |"


def test_unknown_column_is_a_clear_error():
    with pytest.raises(FormatError, match=r"unknown column 'bogus' \(choose from: id, name"):
        render(LISTED, "value", ["bogus"])


def test_long_show_values_wrap_but_json_and_value_do_not():
    fault = "build failed: " + "x " * 80
    shown = Result([{"fault": fault}], ("fault",), single=True)
    lines = render(shown).splitlines()
    assert len(lines) > 5 and all(len(line) <= 96 + 14 for line in lines)
    assert render(shown, "value") == fault
    assert json.loads(render(shown, "json")) == {"fault": fault}


def test_empty_list():
    empty = Result([], ("id", "name"))
    assert render(empty, "json") == "[]"
    assert render(empty, "value") == ""
    assert render(empty).splitlines()[1] == "| id | name |"


def test_value_output_of_containers_and_booleans():
    row = {"members": ["a", "b"], "soft": False, "helpers": {"kvm-pit/1": 0.5}, "pid": None}
    assert render(Result([row], tuple(row)), "value") == "a,b False kvm-pit/1=0.5 "


def test_humanizers():
    assert human_bytes(512) == "512 B"
    assert human_bytes(20 * 1024 * 1024) == "20.0 MiB"
    assert human_seconds(0.0123) == "0.012s"
    assert human_seconds(3723) == "1h02m03s"


# --- convert ----------------------------------------------------------------------------
def server_message(**instance) -> compute_pb2.Server:
    return compute_pb2.Server(
        name="web",
        flavor="m1.tiny",
        availability_zone="nova",
        group="ha",
        host_status="UP",
        instance=types_pb2.Instance(
            spec=types_pb2.InstanceSpec(
                uuid="u-1", name="instance-0000002a", image="heartbeat", vcpus=1, memory_mb=64
            ),
            status=instance.pop("status", types_pb2.STATUS_ACTIVE),
            power_state=types_pb2.POWER_STATE_RUNNING,
            host="h1",
            pid=4242,
            created_at=1_700_000_000,
            **instance,
        ),
        stats=compute_pb2.ServerStats(
            cpu_percent=12.345,
            cpu_time_ns=2_500_000_000,
            memory_rss=20 * 1024 * 1024,
            helpers=[
                compute_pb2.HelperThread(name="kvm-pit/4242", pid=4243, cpu_time_ns=1_000_000),
                compute_pb2.HelperThread(name="vhost-4242", pid=4244, cpu_time_ns=3_000_000_000),
            ],
        ),
    )


def test_server_with_stats_to_display_fields():
    row = convert.server(server_message())
    assert (row["id"], row["name"], row["instance_name"]) == ("u-1", "web", "instance-0000002a")
    assert (row["status"], row["power_state"], row["host"], row["host_status"]) == (
        "ACTIVE", "RUNNING", "h1", "UP",
    )  # fmt: skip
    assert (row["flavor"], row["image"], row["az"], row["group"]) == (
        "m1.tiny", "heartbeat", "nova", "ha",
    )  # fmt: skip
    assert row["pid"] == 4242 and row["cpu_percent"] == 12.35
    assert row["memory"] == 20 * 1024 * 1024 and row["cpu_time"] == 2.5
    assert row["helpers"] == {"kvm-pit/4242": 0.001, "vhost-4242": 3.0}
    assert row["created"] == "2023-11-14T22:13:20+00:00" and row["updated"] == ""
    assert set(row) == set(convert.SERVER_FIELDS)
    assert "fault" not in convert.server_show_columns(row)


def test_server_show_table_humanizes_memory_cpu_and_helpers():
    row = convert.server(server_message())
    shown = Result([row], convert.server_show_columns(row), True, convert.SERVER_HUMAN)
    text = render(shown)
    assert "| memory " in text and "20.0 MiB" in text and "2.500s" in text and "12.3%" in text
    assert "kvm-pit/4242: 0.001s" in text and "vhost-4242: 3.000s" in text


def test_server_in_error_shows_its_fault():
    row = convert.server(server_message(status=types_pb2.STATUS_ERROR, fault="vmm exited 1"))
    assert row["status"] == "ERROR" and row["fault"] == "vmm exited 1"
    assert "fault" in convert.server_show_columns(row)


def test_host_flavor_image_group():
    host = compute_pb2.Host(
        info=types_pb2.HostInfo(host_id="h1", vcpus=4, memory_mb=512, allocated_vcpus=1),
        up=True,
        enabled=False,
        disabled_reason="maintenance",
        instances=["u-1"],
        stats={"load": 0.5},
    )
    row = convert.host(host)
    assert (row["host"], row["state"], row["status"], row["disabled_reason"]) == (
        "h1", "up", "disabled", "maintenance",
    )  # fmt: skip
    assert row["servers"] == ["u-1"] and row["stats"] == {"load": 0.5}
    assert set(row) == set(convert.HOST_FIELDS)
    assert convert.flavor(compute_pb2.Flavor(name="f", vcpus=2, memory_mb=96)) == {
        "name": "f", "vcpus": 2, "ram_mb": 96,
    }  # fmt: skip
    assert convert.image(compute_pb2.Image(name="hello", bundled=True))["bundled"] is True
    group = compute_pb2.ServerGroup(
        id="g", name="ha", policy=compute_pb2.GROUP_POLICY_ANTI_AFFINITY, members=["u-1"]
    )
    assert convert.group(group) == {
        "id": "g", "name": "ha", "policy": "anti-affinity", "soft": False, "members": ["u-1"],
    }  # fmt: skip


def test_status_names_follow_the_proto_enum():
    for name in convert.STATUSES:
        assert convert.status_name(types_pb2.InstanceStatus.Value(f"STATUS_{name}")) == name


# --- errors -----------------------------------------------------------------------------
class FakeCode:
    def __init__(self, name: str) -> None:
        self.name = name


class FakeRpcError(Exception):
    def __init__(self, code: str, details: str) -> None:
        self._code, self._details = FakeCode(code), details

    def code(self) -> FakeCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    ("code", "details", "message"),
    [
        ("UNAVAILABLE",
         "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
         "Failed to connect to remote host: Connection refused",
         "cannot reach the scheduler at 127.0.0.1:8774: connection refused"),
        ("UNAVAILABLE", "etcd unreachable",
         "scheduler at 127.0.0.1:8774 unavailable: etcd unreachable"),
        ("DEADLINE_EXCEEDED", "Deadline Exceeded",
         "the scheduler at 127.0.0.1:8774 did not answer within 30 s"),
        ("INVALID_ARGUMENT", "flavor: is required", "invalid request: flavor: is required"),
        ("NOT_FOUND", "server 'x' not found", "server 'x' not found"),
        ("NOT_FOUND", "no such flavor", "not found: no such flavor"),
        ("RESOURCE_EXHAUSTED", "RamFilter: 0 hosts\nCoreFilter: 1",
         "no valid host: RamFilter: 0 hosts; CoreFilter: 1"),
        ("FAILED_PRECONDITION", "host h1 is up", "refused: host h1 is up"),
        ("DATA_LOSS", "", "data loss"),
    ],
)  # fmt: skip
def test_rpc_errors_become_one_line(code, details, message):
    assert rpc_message(FakeRpcError(code, details), "127.0.0.1:8774", 30.0) == message


def test_cli_error_carries_its_exit_status():
    assert CliError("x").status == 1
    assert CliError("x", 2).status == 2


# --- --wait's tracker ---------------------------------------------------------------------
def event(uid: str, status: int, fault: str = "", name: str = "") -> compute_pb2.ServerEvent:
    server = server_message(status=status, fault=fault)
    server.instance.spec.uuid = uid
    server.name = name or uid
    return compute_pb2.ServerEvent(server=server)


def test_tracker_counts_progress_until_every_server_is_active():
    t = Tracker(["a", "b", "c"], "ACTIVE")
    t.feed(event("a", types_pb2.STATUS_BUILD))
    t.feed(event("b", types_pb2.STATUS_ACTIVE))
    t.feed(event("zzz", types_pb2.STATUS_ACTIVE))  # not ours
    assert t.progress() == "1/3 ACTIVE (1 BUILD, 1 UNKNOWN)" and not t.finished
    t.feed(event("a", types_pb2.STATUS_ACTIVE))
    t.feed(event("c", types_pb2.STATUS_ACTIVE))
    assert t.progress() == "3/3 ACTIVE" and t.finished
    assert [s.instance.spec.uuid for s in t.verdict()] == ["a", "b", "c"]


def test_tracker_fails_listing_each_error_reason():
    t = Tracker(["a", "b"], "ACTIVE")
    t.feed(event("a", types_pb2.STATUS_ERROR, "no kvm", name="web-1"))
    assert not t.finished
    t.feed(event("b", types_pb2.STATUS_ACTIVE))
    assert t.finished
    with pytest.raises(CliError, match=r"1 of 2 servers in ERROR: web-1 \(a\): no kvm"):
        t.verdict()


def test_tracker_fails_when_a_server_is_deleted():
    t = Tracker(["a"], "SHUTOFF")
    t.feed(compute_pb2.ServerEvent(deleted=True))
    assert t.finished
    with pytest.raises(CliError, match="deleted while waiting for SHUTOFF"):
        t.verdict()
