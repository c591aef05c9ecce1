"""Per-instance VMM uids: the range, the pure allocator, persistence across restarts."""

import os

import pytest

from agent.config import ConfigError, parse_config
from agent.vmm_users import (
    DEFAULT_UID_RANGE,
    IdRange,
    UidRangeError,
    VmmIdAllocator,
    VmmIds,
    next_free,
    parse_id_range,
    read_ids,
)


def test_the_range_parses_and_refuses_root_nobody_and_minus_one():
    assert parse_id_range("200000-209999") == IdRange(200000, 209999)
    assert len(parse_id_range(DEFAULT_UID_RANGE)) == 10000
    for bad in ("0-10", "200000", "2-1", "a-b", "60000-70000", "4294967290-4294967295"):
        with pytest.raises(UidRangeError):
            parse_id_range(bad)


def test_next_free_is_the_lowest_unused_id_of_the_range():
    ids = IdRange(1000, 1002)
    assert next_free(ids, []) == 1000
    assert next_free(ids, [1000, 5]) == 1001
    assert next_free(ids, [1001]) == 1000
    assert next_free(ids, [1000, 1001, 1002]) is None


def make_instance(root, uuid):
    os.makedirs(os.path.join(root, uuid))
    return uuid


def test_each_instance_gets_its_own_id_persisted_and_found_after_a_restart(tmp_path):
    root = str(tmp_path)
    a, b, c = (make_instance(root, u) for u in ("a", "b", "c"))
    alloc = VmmIdAllocator(IdRange(5000, 5009), root)
    ids_a, ids_b = alloc.claim(a), alloc.claim(b)
    assert (ids_a, ids_b) == (VmmIds(5000, 5000), VmmIds(5001, 5001))
    assert alloc.claim(a) == ids_a  # idempotent
    assert read_ids(os.path.join(root, a)) == ids_a
    restarted = VmmIdAllocator(IdRange(5000, 5009), root)
    assert restarted.in_use() == {"a": 5000, "b": 5001}
    assert restarted.claim(c) == VmmIds(5002, 5002)
    restarted.release(a)
    assert read_ids(os.path.join(root, a)) is None
    assert restarted.claim(make_instance(root, "d")) == VmmIds(5000, 5000)  # freed, reused


def test_an_exhausted_range_says_so(tmp_path):
    root = str(tmp_path)
    alloc = VmmIdAllocator(IdRange(5000, 5000), root)
    alloc.claim(make_instance(root, "a"))
    with pytest.raises(UidRangeError, match="all 1 VMM uids of 5000-5000 are in use"):
        alloc.claim(make_instance(root, "b"))


def test_agent_confines_by_default_with_the_default_range():
    c = parse_config(["--insecure", "--host-id", "h"])
    assert (c.confine, c.vmm_uid_range, c.cgroup_parent) == (True, DEFAULT_UID_RANGE, "computed")
    c = parse_config(
        ["--insecure", "--host-id", "h", "--no-confine", "--vmm-uid-range", "300000-300099",
         "--cgroup-parent", "./t"]
    )  # fmt: skip
    assert (c.confine, c.vmm_uid_range, c.cgroup_parent) == (False, "300000-300099", "./t")


def test_agent_conf_keys_and_bad_values():
    conf = "[agent]\nconfine = off\nvmm_uid_range = 400000-400009\ncgroup_parent = m/c\n"
    c = parse_config(["--insecure", "--host-id", "h", "--config", "agent.conf"], lambda _p: conf)
    assert (c.confine, c.vmm_uid_range, c.cgroup_parent) == (False, "400000-400009", "m/c")
    with pytest.raises(ConfigError, match="--vmm-uid-range"):
        parse_config(["--insecure", "--host-id", "h", "--vmm-uid-range", "0-9"])
    with pytest.raises(ConfigError, match="--cgroup-parent"):
        parse_config(["--insecure", "--host-id", "h", "--cgroup-parent", "/abs"])
