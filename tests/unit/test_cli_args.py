"""computectl's command line: every verb parses, bad usage exits 2, the address resolves. Pure."""

from __future__ import annotations

import pytest

from computed.cli import main as cli
from computed.cli.main import parse, scheduler_address


def parse_line(line: str):
    return parse(line.split())


EVERY_VERB = [
    ("server create web --flavor m1.tiny --image heartbeat", "server_create"),
    (
        "server create web --flavor m1.tiny --image heartbeat --count 3 --min-count 2 --group g "
        "--az z --append console=ttyS0 --wait --timeout 10 -f json",
        "server_create",
    ),
    ("server list --host h1 --status active --name web -c id -c status", "server_list"),
    ("server show web", "server_show"),
    ("server delete a b c", "server_delete"),
    ("server stop web --wait", "server_stop"),
    ("server start web", "server_start"),
    ("server reboot web --hard", "server_reboot"),
    ("server pause web", "server_pause"),
    ("server resume web", "server_resume"),
    ("server console web --lines 20", "server_console"),
    ("host list", "host_list"),
    ("host show h1", "host_show"),
    ("host enable h1", "host_enable"),
    ("host disable h1 --reason maintenance", "host_disable"),
    ("host evacuate h1", "host_evacuate"),
    ("flavor list", "flavor_list"),
    ("flavor create c1 --vcpus 2 --ram 128", "flavor_create"),
    ("flavor delete c1", "flavor_delete"),
    ("image list", "image_list"),
    ("image show heartbeat", "image_show"),
    ("server-group create ha --policy anti-affinity --soft", "server_group_create"),
    ("server-group list -f value -c name", "server_group_list"),
    ("server-group delete ha other", "server_group_delete"),
]


@pytest.mark.parametrize(("line", "handler"), EVERY_VERB)
def test_every_verb_parses_to_its_handler(line, handler):
    args = parse_line(line)
    assert args.handler == handler
    from computed.cli import commands  # the handler exists (imports grpc: still no I/O)

    assert callable(getattr(commands, handler))


def test_create_options_land_where_the_request_needs_them():
    args = parse_line(
        "server create web --flavor m1.tiny --image heartbeat --count 3 --min-count 2 "
        "--append a=b --wait --timeout 7.5 -f value -c id -c status"
    )
    assert (args.name, args.flavor, args.image, args.count, args.min_count) == (
        "web", "m1.tiny", "heartbeat", 3, 2,
    )  # fmt: skip
    assert args.append == "a=b" and args.wait and args.timeout == 7.5
    assert args.format == "value" and args.columns == ["id", "status"]


def test_defaults():
    args = parse_line("server create web --flavor f --image i")
    assert args.count == 1 and args.min_count is None and not args.wait and args.timeout == 300
    assert args.format == "table" and args.columns == []
    assert parse_line("server list --status paused").status == "PAUSED"
    assert parse_line("server console web").lines == 0
    assert parse_line("server reboot web").hard is False


@pytest.mark.parametrize(
    "line",
    [
        "",
        "server",
        "server create web",
        "server create web --flavor f --image i --count 0",
        "server create web --flavor f --image i --count x",
        "server create web --flavor f --image i --count 2 --min-count 3",
        "server create web --flavor f --image i --timeout -1",
        "server list --status sleepy",
        "server list -c nonsense",
        "server show web -c id -c bogus",
        "server list -f yaml",
        "server show",
        "server delete",
        "server console web --lines -1",
        "server frobnicate",
        "host disable",
        "flavor create c1 --vcpus 2",
        "flavor create c1 --vcpus 0 --ram 64",
        "server-group create g --policy random",
        "volume list",
    ],
)
def test_bad_usage_exits_2_with_one_error_line(line, capsys):
    with pytest.raises(SystemExit) as e:
        parse(line.split())
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and sum(": error: " in x for x in err.splitlines()) == 1
    assert "Traceback" not in err


def test_run_reports_usage_as_exit_2_and_help_as_0(capsys):
    with pytest.raises(SystemExit) as e:
        cli.run(["server", "list", "-c", "nope"])
    assert e.value.code == 2
    assert "unknown column 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.run(["server", "create", "--help"])
    assert e.value.code == 0


def test_scheduler_address_flag_then_env_then_default():
    env = {"COMPUTED_SCHEDULER": "10.0.0.1:9000"}
    assert scheduler_address("h:1", env) == "h:1"
    assert scheduler_address(None, env) == "10.0.0.1:9000"
    assert scheduler_address(None, {}) == "127.0.0.1:8774"


def test_scheduler_flag_is_accepted_before_or_after_the_verb():
    assert parse(["--scheduler", "a:1", "server", "list"]).scheduler == "a:1"
    assert parse(["server", "list", "--scheduler", "b:2"]).scheduler == "b:2"
    assert parse(["--scheduler", "a:1", "host", "list", "--scheduler", "b:2"]).scheduler == "b:2"
    assert parse(["server", "list"]).scheduler is None
