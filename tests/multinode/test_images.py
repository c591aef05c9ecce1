"""Bring your own guest, on a 3-host cluster with two schedulers: build with the SDK alone,
upload with computectl, lose the scheduler that took the upload, run the image on every
host, refuse bad images at upload and bad bytes on a host, and delete as designed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import grpc
import pytest

from computed.api import compute_pb2
from computed.devcluster import processes
from computed.store import keys
from computed.store.records import BuildFailuresRecord
from tests.multinode.conftest import status, wait_for

pytestmark = pytest.mark.multinode

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "examples", "hello", "hello.c")
BIN = os.path.dirname(sys.executable)


def computectl(scheduler: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [os.path.join(BIN, "computectl"), "--scheduler", scheduler, *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr}"
    assert "Traceback" not in done.stderr
    return done.stdout


def refused(done: subprocess.CompletedProcess, *words: str, code: int = 1) -> str:
    assert done.returncode == code, f"exit {done.returncode}: {done.stdout} {done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    assert "computectl" in done.stderr and "error:" in done.stderr, done.stderr
    for word in words:
        assert word in done.stderr, done.stderr
    return done.stderr


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return "sha256:" + hashlib.sha256(f.read()).hexdigest()


def console(stub, name: str) -> str:
    request = compute_pb2.ConsoleOutputRequest(name_or_id=name)
    return stub.GetConsoleOutput(request, timeout=10).output


@pytest.mark.timeout(420)
def test_bring_your_own_guest(make_cluster, tmp_path):
    # --- build in a fresh directory with the SDK alone --------------------------
    shutil.copy(EXAMPLE, tmp_path / "hello.c")
    built = subprocess.run(
        [os.path.join(BIN, "computed-guest-cc"), "hello.c", "-o", "hello.elf"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    image = str(tmp_path / "hello.elf")
    digest = sha256(image)

    node = make_cluster(hosts=3, schedulers=2)
    first, second = node.plan.scheduler_addresses
    stub = node.stubs[1]

    # --- upload through scheduler 1, then lose it ----------------------------------
    shown = json.loads(
        ok(computectl(first, "image", "create", "byo", "--file", image, "-f", "json"))
    )
    assert shown["digest"] == digest and shown["size"] == os.path.getsize(image)
    assert not shown["bundled"]
    processes.kill([node.cluster.pids.pop("scheduler-1")])
    node.cluster._save_pids()

    # --- a corrupted image is refused at upload with the loader's reason ----------
    bad = tmp_path / "bad.elf"
    blob = bytearray((tmp_path / "hello.elf").read_bytes())
    blob[18] = 3  # e_machine: i386
    bad.write_bytes(bytes(blob))
    refused(
        computectl(second, "image", "create", "bad", "--file", str(bad)),
        "the VMM would refuse this image", "not an x86-64 ELF",
    )  # fmt: skip
    with node.store() as store:
        bad_hex = hashlib.sha256(bytes(blob)).hexdigest()
        assert store.get(keys.image("bad")) is None
        assert store.get_prefix(keys.IMAGE_CHUNKS + bad_hex)[0] == [], "bad bytes were stored"
        assert store.get_prefix(keys.IMAGE_BLOBS + bad_hex)[0] == []

    # --- run it on every host: one per host, each console shows its output --------
    stub.CreateServerGroup(
        compute_pb2.CreateServerGroupRequest(
            name="spread", policy=compute_pb2.GROUP_POLICY_ANTI_AFFINITY
        ),
        timeout=10,
    )
    servers = node.create_active("byo", count=3, image="byo", group="spread", stub=stub,
                                 cmdline="ticks=30")  # fmt: skip
    assert sorted(s.instance.host for s in servers) == sorted(h.host_id for h in node.hosts)
    for s in servers:
        assert s.instance.spec.image_digest == digest
        out = wait_for(
            f"{s.name}'s console",
            lambda s=s: (text := console(stub, s.name)) and "goodbye" in text and text,
            timeout=60,
        )
        assert f"example-hello: hello from {s.instance.spec.name} (1 vCPU, 64 MiB)" in out, out
        assert "example-hello: waited 30 ticks in ring 3, goodbye" in out, out
    for host in node.hosts:
        cached = os.path.join(host.state_dir, "images", "sha256", digest.split(":")[1])
        assert sha256(cached) == digest
    # the bad image reached no host
    for host in node.hosts:
        assert not os.path.exists(os.path.join(host.state_dir, "images", "sha256", bad_hex))

    # --- image show names the servers using it; delete refuses while they do -------
    shown = json.loads(ok(computectl(second, "image", "show", "byo", "-f", "json")))
    assert sorted(shown["used_by"]) == ["byo-1", "byo-2", "byo-3"]
    refused(computectl(second, "image", "delete", "byo"), "is used by 3 server(s)", "--force")
    assert (
        ok(computectl(second, "image", "show", "byo", "-f", "value", "-c", "digest")).strip()
        == digest
    )

    # --- a host whose copy does not match the digest refuses it; the build moves on --
    other = tmp_path / "other.elf"
    other.write_bytes((tmp_path / "hello.elf").read_bytes() + b"another image")  # loads the same
    other_digest = sha256(str(other))
    ok(computectl(second, "image", "create", "byo2", "--file", str(other)))
    victim = node.hosts[0]
    victim_copy = os.path.join(victim.state_dir, "images", "sha256", other_digest.split(":")[1])
    with open(victim_copy, "wb") as f:  # bytes that are not the image, before any fetch
        f.write(b"\x7fELF not the uploaded bytes")
    # Three at once spread one per host (equal hosts), so one is tried on the victim first.
    moved = node.create_active("moved", count=3, image="byo2", stub=stub)
    assert victim.host_id not in {s.instance.host for s in moved}
    with node.store() as store:
        found = store.get_record(keys.build_failures(victim.host_id), BuildFailuresRecord)
    assert found is not None, "the victim never refused the bytes"
    assert "does not match its digest" in found[0].last_fault, found[0]
    assert not os.path.exists(victim_copy), "the bad copy was kept"

    # --- properties steer placement (ImagePropertiesFilter) -------------------------
    hosts = stub.ListHosts(compute_pb2.ListHostsRequest(), timeout=10).hosts
    vhost = hosts[0].info.kvm.vhost
    ok(computectl(second, "image", "create", "needs-vhost", "--file", image,
                  "--property", f"trait:vhost:{vhost}=required"))  # fmt: skip
    ok(computectl(second, "image", "create", "needs-dpdk", "--file", image,
                  "--property", "trait:vhost:dpdk=required", "--property", "owner=qa"))  # fmt: skip
    fits = node.create("fits", image="needs-vhost", stub=stub, cmdline="ticks=1000000")[0]
    assert status(fits) == "ACTIVE"
    with pytest.raises(grpc.RpcError) as e:
        node.create("nowhere", image="needs-dpdk", stub=stub)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "ImagePropertiesFilter" in e.value.details() and "vhost:dpdk" in e.value.details()

    ok(computectl(second, "image", "create", "roomy", "--file", image, "--property", "min_ram=128"))
    refused(
        computectl(second, "server", "create", "small", "--flavor", "m1.tiny", "--image", "roomy"),
        "m1.tiny has 64 MiB; image roomy needs at least 128 MiB",
    )  # fmt: skip
    ok(computectl(second, "image", "delete", "roomy"))

    # --- forced delete: the image goes, running servers keep running ---------------
    ok(computectl(second, "image", "delete", "byo", "--force"))
    refused(computectl(second, "image", "show", "byo"), "not found")
    with node.store() as store:
        manifest = store.get(keys.image_blob(digest))
        assert manifest is not None, "needs-vhost and needs-dpdk still name these bytes"
        ok(computectl(second, "image", "delete", "needs-vhost", "needs-dpdk", "--force"))
        assert store.get(keys.image_blob(digest)) is None
        assert store.get_prefix(keys.IMAGE_CHUNKS + digest.split(":")[1])[0] == []
    running = stub.GetServer(compute_pb2.ServerRef(name_or_id=fits.instance.spec.uuid), timeout=10)
    assert status(running) == "ACTIVE" and running.instance.pid == fits.instance.pid

    # --- bad input: one line, no traceback ----------------------------------------
    refused(computectl(second, "image", "create", "x", "--file", str(tmp_path / "none")),
            "cannot read")  # fmt: skip
    refused(computectl(second, "image", "create", "x", "--file", image, "--property", "novalue"),
            "KEY=VALUE", code=2)  # fmt: skip
    refused(computectl(second, "image", "create", "hello", "--file", image), "bundled guest")
    refused(computectl(second, "image", "create", "x", "--file", image,
                       "--property", "trait:vhost:kernel=yes"), "=required")  # fmt: skip
    refused(computectl(second, "image", "delete", "heartbeat"), "bundled guest")
