"""The image store on a real etcd: chunks and manifests, shared bytes, deletes that leave
nothing behind, and an agent's cache fed from it."""

from __future__ import annotations

import pytest

from agent.image_cache import ImageCache, ImageFetchError
from computed.errors import AlreadyExists, NotFound, Refused
from computed.store import image_blobs, keys
from computed.store.records import InstanceRecord, InstanceSpec
from scheduler.images import check_image, create_image, delete_image
from tests.unit.test_vmm_elf import make_elf

pytestmark = pytest.mark.integration

# Bigger than one chunk, so the chunking is exercised.
BIG = make_elf([(0x100000, bytes(range(256)) * 5000, 0x200000)])


def upload(store, name: str, data: bytes = BIG, **props: str):
    return create_image(store, check_image(name, data, props), data)


def chunk_keys(store) -> list[str]:
    return [e.key for e in store.get_prefix(keys.IMAGE_CHUNKS)[0]]


def test_an_upload_is_stored_in_chunks_and_read_back_whole(store):
    record = upload(store, "big")
    blob, _ = image_blobs.manifest(store, record.digest)
    assert blob.chunks == -(-len(BIG) // image_blobs.CHUNK_BYTES) > 1
    assert blob.images == ("big",) and len(chunk_keys(store)) == blob.chunks
    assert b"".join(image_blobs.read_chunks(store, record.digest)) == BIG
    assert not any(k.startswith(keys.ROOT) for k in chunk_keys(store))  # outside the watch


def test_the_same_bytes_under_two_names_are_stored_once(store):
    a = upload(store, "a")
    b = upload(store, "b", owner="qa")
    assert a.digest == b.digest
    blob, _ = image_blobs.manifest(store, a.digest)
    assert blob.images == ("a", "b") and len(chunk_keys(store)) == blob.chunks
    with pytest.raises(AlreadyExists):
        upload(store, "a")
    assert len(chunk_keys(store)) == blob.chunks  # the refused upload left nothing

    delete_image(store, "a", force=False, instances=[])
    assert image_blobs.manifest(store, a.digest)[0].images == ("b",)
    delete_image(store, "b", force=False, instances=[])
    assert image_blobs.manifest(store, a.digest) is None and chunk_keys(store) == []
    assert image_blobs.orphan_uploads(store) == []
    with pytest.raises(NotFound):
        delete_image(store, "b", force=False, instances=[])


def test_an_image_in_use_is_kept_unless_forced(store):
    record = upload(store, "used")
    spec = InstanceSpec("u1", "instance-1", "used", 1, 64, image_digest=record.digest)
    servers = [InstanceRecord(spec=spec, status="ACTIVE", display_name="web-1")]
    with pytest.raises(Refused, match="used by 1 server"):
        delete_image(store, "used", force=False, instances=servers)
    assert store.get(keys.image("used")) is not None
    assert [s.display_name for s in delete_image(store, "used", True, servers)] == ["web-1"]
    assert store.get(keys.image("used")) is None and chunk_keys(store) == []


def test_chunks_of_an_upload_that_never_committed_are_listed(store):
    digest = image_blobs.sha256_digest(BIG)
    image_blobs.write_chunks(store, digest, "dead0001", BIG)
    assert image_blobs.orphan_uploads(store) == [(digest, "dead0001")]


def test_an_agent_fetches_by_digest_and_refuses_what_the_store_corrupted(store, tmp_path):
    record = upload(store, "fetched")
    cache = ImageCache(str(tmp_path), lambda d: image_blobs.read_chunks(store, d))
    with open(cache.ensure(record.digest), "rb") as f:
        assert f.read() == BIG

    other = upload(store, "other", BIG + b"tail")
    blob, _ = image_blobs.manifest(store, other.digest)
    store.put(keys.image_chunk(other.digest, blob.upload, 1), b"\0" * image_blobs.CHUNK_BYTES)
    with pytest.raises(ImageFetchError, match="received from the image store do not match"):
        cache.ensure(other.digest)
    store.delete(keys.image_chunk(other.digest, blob.upload, 1))
    with pytest.raises(ImageFetchError, match="chunk 1 of"):
        cache.ensure(other.digest)
    delete_image(store, "other", force=True, instances=[])
    with pytest.raises(ImageFetchError, match="not in the image store"):
        cache.ensure(other.digest)
