"""Uploaded images, the pure parts: what an upload is checked for, what properties mean,
who uses an image, and the agent's verified cache (with a chunk source standing in for
the store: the cache takes a function, not etcd)."""

from __future__ import annotations

import hashlib
import os
import pathlib
import threading

import pytest

from agent.image_cache import ImageCache, ImageFetchError
from computed.errors import Invalid
from computed.store.errors import StoreUnavailable
from computed.store.image_blobs import MAX_IMAGE_BYTES, BlobMissing
from computed.store.records import ImageRecord, InstanceRecord, InstanceSpec
from scheduler.images import check_image, placement_needs, receive, users
from tests.unit.test_vmm_elf import make_elf

GOOD = make_elf([(0x100000, b"\x90" * 64, 0x3000)])


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- upload checks -----------------------------------------------------------------
def test_an_upload_is_content_addressed_and_sized():
    record = check_image("mine", GOOD, {"owner": "qa"})
    assert record.digest == digest_of(GOOD) and record.size == len(GOOD)
    assert record.properties == {"owner": "qa"} and record.min_memory_mb == 2  # 0x103000 B


@pytest.mark.parametrize(
    "data,words",
    [
        (b"", "is empty"),
        (b"MZ" + bytes(200), "not an ELF"),
        (make_elf([(0x100000, b"x", 1)], etype=3), "ET_EXEC"),
        (make_elf([(0x1000, b"x", 1)], entry=0x1000), "VMM-reserved"),
    ],
)
def test_a_bad_upload_is_refused_with_the_loaders_reason(data, words):
    with pytest.raises(Invalid, match=words) as e:
        check_image("mine", data, {})
    assert e.value.field == "file"


def test_properties_steer_placement():
    needs = placement_needs({"trait:vhost:kernel": "required"})
    assert needs.required_traits == ("vhost:kernel",)
    assert placement_needs({"min_ram": "256"}).min_memory_mb == 256
    assert check_image("m", GOOD, {"min_ram": "256"}).min_memory_mb == 256
    for bad in ({"trait:vhost:kernel": "yes"}, {"min_ram": "lots"}, {"": "x"}, {"k": "\n"}):
        with pytest.raises(Invalid):
            placement_needs(bad)


def test_receive_stops_at_the_limit():
    assert receive([b"ab", b"cd"]) == b"abcd"
    with pytest.raises(Invalid, match="limit"):
        receive(iter([b"x" * 10] * 5), limit=20)


def test_users_are_servers_of_the_same_name_and_bytes():
    record = ImageRecord("mine", digest=digest_of(GOOD))

    def server(name: str, image: str, digest: str, state: str = "ACTIVE") -> InstanceRecord:
        spec = InstanceSpec(name, name, image, 1, 64, image_digest=digest)
        return InstanceRecord(spec=spec, status=state, display_name=name)

    everyone = [
        server("a", "mine", record.digest),
        server("b", "mine", digest_of(b"older bytes")),  # an earlier image of that name
        server("c", "other", record.digest),
        server("d", "mine", record.digest, "DELETED"),
    ]
    assert [i.display_name for i in users(record, everyone)] == ["a"]


# --- the agent's cache ----------------------------------------------------------------
def test_the_first_use_fetches_verifies_and_keeps_a_read_only_copy(tmp_path):
    calls = []
    cache = ImageCache(str(tmp_path), lambda d: calls.append(d) or [GOOD[:100], GOOD[100:]])
    path = cache.ensure(digest_of(GOOD))
    assert pathlib.Path(path).read_bytes() == GOOD and os.stat(path).st_mode & 0o777 == 0o444
    assert cache.ensure(digest_of(GOOD)) == path and len(calls) == 1
    assert os.listdir(cache.directory) == [os.path.basename(path)]  # no temporary left


def test_bytes_that_do_not_match_are_refused_and_never_kept(tmp_path):
    cache = ImageCache(str(tmp_path), lambda d: [GOOD + b"tampered"])
    with pytest.raises(ImageFetchError, match="do not match its digest"):
        cache.ensure(digest_of(GOOD))
    assert os.listdir(cache.directory) == []


def test_a_damaged_cached_copy_is_refused_and_removed(tmp_path):
    cache = ImageCache(str(tmp_path), lambda d: [GOOD])
    with open(cache.path(digest_of(GOOD)), "wb") as f:
        f.write(b"not it")
    with pytest.raises(ImageFetchError, match="cached on this host does not match"):
        cache.ensure(digest_of(GOOD))
    assert cache.ensure(digest_of(GOOD))  # the next start fetches it again


@pytest.mark.parametrize(
    "failure,words",
    [
        (StoreUnavailable("etcd at 10.0.0.1:2379 unavailable"), "cannot fetch image"),
        (BlobMissing("image sha256:... is not in the image store (deleted?)"), "not in the image"),
    ],
)
def test_an_unreachable_or_empty_store_fails_the_start_with_the_reason(tmp_path, failure, words):
    def source(digest):
        yield GOOD[:10]
        raise failure

    cache = ImageCache(str(tmp_path), source)
    with pytest.raises(ImageFetchError, match=words):
        cache.ensure(digest_of(GOOD))
    assert os.listdir(cache.directory) == []


def test_a_store_holding_too_much_is_refused(tmp_path):
    cache = ImageCache(str(tmp_path), lambda d: iter([bytes(MAX_IMAGE_BYTES), b"x"]))
    with pytest.raises(ImageFetchError, match="more than"):
        cache.ensure(digest_of(GOOD))


def test_instances_starting_together_share_one_fetch(tmp_path):
    calls = []
    gate = threading.Event()

    def slow(digest):
        calls.append(digest)
        gate.wait(5)
        return [GOOD]

    cache = ImageCache(str(tmp_path), slow)
    threads = [threading.Thread(target=cache.ensure, args=(digest_of(GOOD),)) for _ in range(4)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join()
    assert len(calls) == 1


def test_a_malformed_digest_is_an_error_not_a_path(tmp_path):
    cache = ImageCache(str(tmp_path), lambda d: [GOOD])
    with pytest.raises(ImageFetchError, match="expected sha256"):
        cache.ensure("sha256:../../etc/passwd")
