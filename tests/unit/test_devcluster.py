import os

import pytest

from computed.devcluster.cluster import agent_config
from computed.devcluster.plan import PlanError, make_plan
from computed.devcluster.units import UnitError, command, load_unit, parse_unit


def test_default_plan_names_and_addresses():
    plan = make_plan()
    assert [h.netns for h in plan.hosts] == [f"computed-host-{i}" for i in (1, 2, 3)]
    assert [h.address for h in plan.hosts] == ["10.213.0.11", "10.213.0.12", "10.213.0.13"]
    assert plan.bridge == "cdbr0" and plan.bridge_address == "10.213.0.1"
    assert plan.etcd_endpoint == "10.213.0.1:2379"
    assert plan.scheduler_addresses == ("127.0.0.1:8774",)
    assert plan.hosts[0].agent_address == "10.213.0.11:8775"
    assert all(h.netns.startswith(plan.netns_prefix) for h in plan.hosts)
    assert all(len(h.veth) + 1 <= 15 for h in plan.hosts)  # the peer is veth + "p"


def test_tagged_plans_do_not_share_names_with_the_default():
    a, b = make_plan(), make_plan(tag="t1", subnet="10.214.1.0/24", state_dir="/var/tmp/t1")
    assert not set(h.netns for h in a.hosts) & set(h.netns for h in b.hosts)
    assert not b.netns_prefix.startswith(a.netns_prefix)
    assert {h.host_id for h in b.hosts} == {"t1-host-1", "t1-host-2", "t1-host-3"}


def test_zones_round_robin():
    plan = make_plan(hosts=4, zones=2)
    assert [h.zone for h in plan.hosts] == ["az1", "az2", "az1", "az2"]


@pytest.mark.parametrize(
    "kwargs, option",
    [
        ({"hosts": 0}, "--hosts"),
        ({"hosts": 99}, "--hosts"),
        ({"subnet": "8.8.8.0/24"}, "--subnet"),
        ({"subnet": "10.0.0.0/28"}, "--subnet"),
        ({"subnet": "10.0.0.1/24"}, "--subnet"),
        ({"tag": "Bad-Tag"}, "--tag"),
        ({"state_dir": "relative"}, "--state-dir"),
        ({"state_dir": "/" + "x" * 60}, "--state-dir"),
        ({"zones": 5}, "--zones"),
        ({"scheduler_port": 80}, "--scheduler-port"),
        ({"lease_ttl": 1}, "--lease-ttl"),
        ({"etcd_quota_mb": 0}, "--etcd-quota-mb"),
        ({"etcd_quota_mb": 9000}, "--etcd-quota-mb"),
    ],
)
def test_bad_options_name_the_option(kwargs, option):
    with pytest.raises(PlanError, match=option):
        make_plan(**kwargs)


def test_unit_exec_start_and_type():
    unit = parse_unit(
        "x.service",
        "[Unit]\nDescription=ExecStart=/nope\n[Service]\n# ExecStart=/commented\n"
        "Type=notify\nExecStart=-/usr/local/bin/prog --listen 1.2.3.4:5 --etcd=e:1 -v\n",
    )
    assert unit.argv == ("/usr/local/bin/prog", "--listen", "1.2.3.4:5", "--etcd=e:1", "-v")
    assert unit.notify
    argv = command(unit, "/venv/bin", {"--listen": "127.0.0.1:9", "--etcd": "h:2", "--new": "1"})
    assert argv == ["/venv/bin/prog", "--listen", "127.0.0.1:9", "--etcd=h:2", "-v", "--new", "1"]
    with pytest.raises(UnitError, match="no ExecStart"):
        parse_unit("y.service", "[Service]\nType=simple\n")


def test_our_units_start_our_programs_with_readiness():
    agent = load_unit("computed-agent.service")
    scheduler = load_unit("computed-scheduler.service")
    assert agent.notify and scheduler.notify
    assert agent.argv[0].endswith("/computed-agent") and "--config" in agent.argv
    assert scheduler.argv[0].endswith("/computed-scheduler") and "--etcd" in scheduler.argv


def test_agent_config_is_what_the_agent_reads():
    from agent.config import parse_config

    plan = make_plan(hosts=2, zones=2)
    host = plan.hosts[1]
    path = "/x/agent.conf"
    config = parse_config(["--config", path], read_file=lambda _: agent_config(plan, host))
    assert (config.host_id, config.listen, config.etcd) == (
        "host-2",
        "10.213.0.12:8775",
        ("10.213.0.1:2379",),
    )
    assert (config.availability_zone, config.vcpus, config.lease_ttl) == ("az2", 2, 10)


def test_operator_links_point_computectl_at_the_admin_and_down_removes_only_ours(tmp_path):
    from computed.devcluster import pki as cluster_pki

    plan = make_plan(state_dir="/var/tmp/cdx")
    config = tmp_path / "computed"
    assert "computectl's certificate" in cluster_pki.link_operator_config(plan, str(config))
    assert os.readlink(config / "cert.pem") == "/var/tmp/cdx/pki/admin/cert.pem"
    cluster_pki.unlink_operator_config(make_plan(state_dir="/var/tmp/other"), str(config))
    assert os.path.islink(config / "key.pem")  # another cluster's down leaves them
    cluster_pki.unlink_operator_config(plan, str(config))
    assert not config.exists()
    config.mkdir()
    (config / "ca.pem").write_text("mine")
    assert "is not a link" in cluster_pki.link_operator_config(plan, str(config))
    assert (config / "ca.pem").read_text() == "mine"


def test_without_flags_drops_flags_and_their_values():
    from computed.devcluster.units import without_flags

    argv = ["prog", "--a", "1", "--tls-cert", "c", "--tls-key=k", "--b", "2"]
    assert without_flags(argv, ("--tls-cert", "--tls-key")) == ["prog", "--a", "1", "--b", "2"]


def test_down_puts_the_hosts_ksm_back_as_up_found_it(tmp_path):
    from computed.devcluster.cluster import remember_ksm, restore_ksm

    run = tmp_path / "run"  # a stand-in for /sys/kernel/mm/ksm/run
    state = tmp_path / "state"
    state.mkdir()
    run.write_text("0\n")
    remember_ksm(str(state), str(run))
    run.write_text("1")  # the cluster's agents start it
    remember_ksm(str(state), str(run))  # a second `up` keeps the first finding
    assert restore_ksm(str(state), str(run)) == "KSM run 1 -> 0 (as found at up)"
    assert run.read_text() == "0"
    assert restore_ksm(str(state), str(run)) is None  # nothing to change
    assert restore_ksm(str(tmp_path / "never-up"), str(run)) is None
    remember_ksm(str(tmp_path / "no-ksm"), str(tmp_path / "absent"))  # no KSM: nothing
    assert not (tmp_path / "no-ksm").exists()
