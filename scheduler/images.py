"""Uploaded images: check, store by digest, describe, delete. What `computectl image` drives.

An upload is judged by the VMM's own loader rules (computed/guest_image.py)
before a byte is stored, so a file the VMM would refuse is refused here with
the same reason and never reaches a host. Bytes go to the image store
(computed/store/image_blobs.py) under their sha256; the ImageRecord names the
digest, and agents fetch by it.

Properties are free-form `key=value` strings, kept as given. Two keys mean
something to placement (as Glance's image properties do to Nova):
- `trait:<TRAIT>=required`: only hosts offering TRAIT (ImagePropertiesFilter),
  e.g. `trait:vhost:kernel=required`;
- `min_ram=<MiB>`: at least this much guest RAM (Glance's min_ram). The image's
  own layout sets a floor too: the RAM its segments need.

Deleting an image that servers use is refused unless forced, because the stored
bytes are what a rebuild of those servers needs (evacuation, a retry on another
host, a hard reboot on a host that lost its cache); docs/images.md.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping

from computed.errors import AlreadyExists, Invalid, NotFound, Refused, Unavailable
from computed.guest_image import MIB, ImageFormatError, required_ram, validate
from computed.limits import MAX_MEMORY_MIB, is_valid_name
from computed.store import image_blobs, keys
from computed.store.client import Store
from computed.store.ops import Delete, Put
from computed.store.records import ImageBlobRecord, ImageRecord, InstanceRecord

TRAIT_PREFIX = "trait:"
MIN_RAM = "min_ram"
MAX_PROPERTIES = 64
MAX_PROPERTY_CHARS = 255
_COMMIT_ROUNDS = 5


@dataclasses.dataclass(frozen=True)
class PlacementNeeds:
    """What an image's properties ask of placement."""

    required_traits: tuple[str, ...] = ()
    min_memory_mb: int = 0


def placement_needs(properties: Mapping[str, str]) -> PlacementNeeds:
    """The traits and RAM floor the properties ask for; Invalid naming a bad one. Pure."""
    if len(properties) > MAX_PROPERTIES:
        raise Invalid("properties", f"at most {MAX_PROPERTIES}")
    traits: list[str] = []
    min_mb = 0
    for key, value in properties.items():
        if not key or len(key) > MAX_PROPERTY_CHARS or len(value) > MAX_PROPERTY_CHARS:
            raise Invalid("property", f"{key!r}: keys 1..255 characters, values at most 255")
        if not key.isprintable() or not value.isprintable() or "=" in key:
            raise Invalid("property", f"{key!r}: printable characters only, no '=' in a key")
        if key.startswith(TRAIT_PREFIX):
            trait = key[len(TRAIT_PREFIX) :]
            if not trait or value != "required":
                raise Invalid(
                    "property", f"{key}={value}: write trait:<TRAIT>=required (e.g. "
                    "trait:vhost:kernel=required)",
                )  # fmt: skip
            traits.append(trait)
        elif key == MIN_RAM:
            if not value.isdigit() or not 0 <= int(value) <= MAX_MEMORY_MIB:
                raise Invalid("property", f"min_ram={value}: MiB, 0..{MAX_MEMORY_MIB}")
            min_mb = int(value)
    return PlacementNeeds(tuple(sorted(traits)), min_mb)


def check_image(name: str, data: bytes, properties: Mapping[str, str]) -> ImageRecord:
    """The record an upload would create (without storing anything); Invalid if the
    name, the properties or the bytes are wrong. Pure."""
    if not is_valid_name(name):
        raise Invalid("name", f"{name!r}: use letters, digits, '.', '_' or '-'")
    needs = placement_needs(properties)
    if not data:
        raise Invalid("file", "is empty")
    if len(data) > image_blobs.MAX_IMAGE_BYTES:
        raise Invalid(
            "file", f"{len(data)} bytes: the image store takes at most "
            f"{image_blobs.MAX_IMAGE_BYTES >> 20} MiB per image",
        )  # fmt: skip
    try:
        image = validate(data, name)
    except ImageFormatError as e:
        raise Invalid("file", f"the VMM would refuse this image: {e}") from None
    layout_mb = -(-required_ram(image) // MIB)
    if layout_mb > MAX_MEMORY_MIB:
        raise Invalid("file", f"its segments need {layout_mb} MiB of RAM (max {MAX_MEMORY_MIB})")
    return ImageRecord(
        name=name,
        min_memory_mb=max(needs.min_memory_mb, layout_mb),
        required_traits=needs.required_traits,
        digest=image_blobs.sha256_digest(data),
        size=len(data),
        properties=dict(properties),
        created_at=time.time(),
    )


def receive(pieces: Iterable[bytes], limit: int = image_blobs.MAX_IMAGE_BYTES) -> bytes:
    """The uploaded file from its pieces; Invalid as soon as it passes `limit`."""
    data = bytearray()
    for piece in pieces:
        data += piece
        if len(data) > limit:
            raise Invalid("file", f"larger than the image store's limit of {limit >> 20} MiB")
    return bytes(data)


def create_image(store: Store, record: ImageRecord, data: bytes) -> ImageRecord:
    """Store `data` (already checked) under its digest and commit `record`."""
    key = keys.image(record.name)
    if store.get(key) is not None:
        raise AlreadyExists(f"image {record.name!r} already exists")
    upload: str | None = None  # ours, once our chunks are written
    chunks = 0
    try:
        for _ in range(_COMMIT_ROUNDS):
            found = image_blobs.manifest(store, record.digest)
            if found is None:
                if upload is None:
                    upload = image_blobs.new_upload_id()
                    chunks = image_blobs.write_chunks(store, record.digest, upload, data)
                blob = ImageBlobRecord(
                    record.digest, len(data), image_blobs.CHUNK_BYTES, chunks, upload,
                    (record.name,),
                )  # fmt: skip
                expect = {key: 0, keys.image_blob(record.digest): 0}
            else:
                names = tuple(sorted({*found[0].images, record.name}))
                blob = dataclasses.replace(found[0], images=names)
                expect = {key: 0, keys.image_blob(record.digest): found[1]}
            if store.transaction(expect, [Put(key, record), image_blobs.manifest_put(blob)]):
                if upload is not None and blob.upload != upload:
                    image_blobs.delete_chunks(store, record.digest, upload)  # a copy won
                return record
            if store.get(key) is not None:
                raise AlreadyExists(f"image {record.name!r} already exists")
        raise Unavailable("the image store kept changing during the upload; try again")
    except BaseException:
        if upload is not None:
            found = image_blobs.manifest(store, record.digest)
            if found is None or found[0].upload != upload:
                image_blobs.delete_chunks(store, record.digest, upload)
        raise


def users(record: ImageRecord, instances: Iterable[InstanceRecord]) -> list[InstanceRecord]:
    """The servers built from this image (same name and same bytes). Pure."""
    return sorted(
        (
            i for i in instances
            if i.spec.image == record.name and i.spec.image_digest == record.digest
            and i.status != "DELETED"
        ),
        key=lambda i: i.display_name or i.spec.name,
    )  # fmt: skip


def delete_image(
    store: Store, name: str, force: bool, instances: Iterable[InstanceRecord]
) -> list[InstanceRecord]:
    """Delete an uploaded image (and its bytes once no image names them); returns the
    servers still using it (only possible with force)."""
    found = store.get_record(keys.image(name), ImageRecord) if is_valid_name(name) else None
    if found is None:
        raise NotFound(f"image {name!r} not found")
    record, revision = found
    if not record.digest:
        raise Refused(f"image {name!r} is not an uploaded image (registered by path)")
    using = users(record, instances)
    if using and not force:
        shown = ", ".join(i.display_name or i.spec.name for i in using[:10])
        more = f" and {len(using) - 10} more" if len(using) > 10 else ""
        raise Refused(
            f"image {name!r} is used by {len(using)} server(s): {shown}{more}. Their "
            "rebuilds (evacuation, a retry on another host) need its bytes; delete the "
            "servers first, or use --force"
        )
    for _ in range(_COMMIT_ROUNDS):
        blob_found = image_blobs.manifest(store, record.digest)
        ops: list[Put | Delete] = [Delete(keys.image(name))]
        expect = {keys.image(name): revision}
        gone: ImageBlobRecord | None = None
        if blob_found is not None:
            blob, blob_revision = blob_found
            expect[keys.image_blob(record.digest)] = blob_revision
            rest = tuple(n for n in blob.images if n != name)
            if rest:
                ops.append(image_blobs.manifest_put(dataclasses.replace(blob, images=rest)))
            else:
                ops.append(Delete(keys.image_blob(record.digest)))
                gone = blob
        if store.transaction(expect, ops):
            if gone is not None:
                image_blobs.delete_chunks(store, gone.digest, gone.upload)
            return using
        again = store.get_record(keys.image(name), ImageRecord)
        if again is None:
            raise NotFound(f"image {name!r} not found")
        record, revision = again
    raise Unavailable("the image store kept changing during the delete; try again")
