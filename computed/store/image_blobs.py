"""Image bytes in etcd: content-addressed chunks and one manifest per digest.

Why etcd (docs/images.md says more): it is the one replicated store every
scheduler and agent already reaches, so any scheduler can accept an upload and
any agent can fetch by digest while a scheduler is down. It is not a blob
store, so images are small by rule: at most MAX_IMAGE_BYTES, in CHUNK_BYTES
values (etcd refuses requests over 1.5 MiB by default).

Layout:
  /computed/image-blobs/<hex>                    ImageBlobRecord: size, chunks, upload, images
  /computed-image-chunks/<hex>/<upload>/<000000> the bytes, CHUNK_BYTES each (last one shorter)

An upload writes its chunks under a fresh upload id first, then commits the
image record and the manifest in one transaction. A second upload of the same
bytes finds the manifest and only adds its name (its own chunks are removed);
the last delete removes the manifest in a transaction and then exactly the
chunks that manifest named. So no sequence of uploads and deletes can leave a
manifest pointing at chunks that are gone. Chunks of an upload that died
before its commit stay behind (no manifest names them); `orphan_uploads`
lists them for an operator.
"""

from __future__ import annotations

import hashlib
import uuid as uuidlib
from collections.abc import Iterator

from computed.store import keys
from computed.store.client import Store
from computed.store.ops import Put
from computed.store.records import ImageBlobRecord

CHUNK_BYTES = 512 << 10
MAX_IMAGE_BYTES = 32 << 20


class BlobMissing(Exception):
    """The store has no (complete) copy of these bytes; the message says what is missing."""


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def new_upload_id() -> str:
    return uuidlib.uuid4().hex


def write_chunks(store: Store, digest: str, upload: str, data: bytes) -> int:
    """Write `data` as chunks of one upload; returns how many. Each chunk is its own
    request (a transaction of several would pass etcd's request size limit)."""
    count = 0
    for index, start in enumerate(range(0, len(data), CHUNK_BYTES)):
        store.put(keys.image_chunk(digest, upload, index), data[start : start + CHUNK_BYTES])
        count += 1
    return count


def delete_chunks(store: Store, digest: str, upload: str) -> None:
    store.delete_prefix(keys.image_chunks(digest, upload))


def manifest(store: Store, digest: str) -> tuple[ImageBlobRecord, int] | None:
    """The manifest of `digest` and its mod_revision, or None."""
    return store.get_record(keys.image_blob(digest), ImageBlobRecord)


def manifest_put(blob: ImageBlobRecord) -> Put:
    return Put(keys.image_blob(blob.digest), blob)


def read_chunks(store: Store, digest: str) -> Iterator[bytes]:
    """The bytes of `digest`, chunk by chunk, as the store holds them (unverified: the
    reader checks the digest over what it got). BlobMissing if there is no manifest
    or a chunk is missing."""
    found = manifest(store, digest)
    if found is None:
        raise BlobMissing(f"image {digest} is not in the image store (deleted?)")
    blob = found[0]
    for index in range(blob.chunks):
        entry = store.get(keys.image_chunk(digest, blob.upload, index))
        if entry is None:
            raise BlobMissing(f"image {digest}: chunk {index} of {blob.chunks} is missing")
        yield entry.value


def orphan_uploads(store: Store) -> list[tuple[str, str]]:
    """(digest, upload) of chunks no manifest names: uploads that died before committing."""
    entries, _ = store.get_prefix(keys.IMAGE_CHUNKS)
    seen: set[tuple[str, str]] = set()
    for entry in entries:
        hexpart, upload, _index = entry.key[len(keys.IMAGE_CHUNKS) :].split("/", 2)
        seen.add((f"sha256:{hexpart}", upload))
    orphans = []
    for digest, upload in sorted(seen):
        found = manifest(store, digest)
        if found is None or found[0].upload != upload:
            orphans.append((digest, upload))
    return orphans
