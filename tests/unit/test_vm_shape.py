"""What a standby prepares ahead (computed/vmm/prepared.py): the shape it is keyed by,
when its vCPUs fit a request, and when the image it read may stand for the file."""

from __future__ import annotations

import os
import shutil

from computed.guests.bundled import bundled_dir
from computed.vmm.cpu_model import parse_cpu, parse_smp
from computed.vmm.prepared import PreparedImage, VmShape


def test_a_request_names_its_shape_with_qemus_defaults_for_what_it_omits():
    argv = ["computed-vmm", "-name", "i", "-m", "2G", "-smp", "2,cores=2", "-cpu", "Penryn"]
    assert VmShape.of_request(argv) == VmShape(2048, "2,cores=2", "Penryn")
    assert VmShape.of_request(["computed-vmm", "-m", "64"]) == VmShape(64, "1", "host")
    assert str(VmShape(64)) == "64M smp=1 cpu=host"  # the standby's title
    assert VmShape.of_request(["computed-vmm"]) is None  # no -m: the VMM says what is wrong
    assert VmShape.of_request(["computed-vmm", "-m", "lots"]) is None
    assert VmShape.of_request(["computed-vmm", "-m"]) is None


def test_vcpus_fit_a_request_of_the_same_topology_and_cpu_model_however_spelled():
    assert parse_smp("2") == parse_smp("cpus=2,sockets=1,cores=2")
    assert parse_smp("2") != parse_smp("2,sockets=2")
    assert parse_cpu("host") == parse_cpu("host,check")
    assert parse_cpu("host") != parse_cpu("host,-sse4.2")
    assert parse_cpu("host") != parse_cpu("host,enforce")


def test_an_image_read_ahead_stands_only_for_the_same_unchanged_file(tmp_path):
    path = str(tmp_path / "guest.elf")
    shutil.copy(os.path.join(bundled_dir(), "heartbeat"), path)
    prepared = PreparedImage(path)
    assert prepared.image_for(path) is prepared.image
    assert prepared.image_for(str(tmp_path / "other.elf")) is None
    with open(path, "ab") as f:  # rewritten in place
        f.write(b"\0")
    assert prepared.image_for(path) is None
    os.unlink(path)
    assert prepared.image_for(path) is None  # gone: the VMM's own read says so
