"""Flavors, images and server groups: what a create request names, kept in etcd.

Default flavors are seeded once per cluster in one transaction, so any number
of schedulers starting at once agree and an operator's edits are never undone.
Images are the bundled guests (every host has them) plus registered image
files. Validation here is pure; reads and writes go through the Store.
"""

from __future__ import annotations

import uuid as uuidlib

from computed.errors import AlreadyExists, Invalid, NotFound
from computed.guests.bundled import bundled_names
from computed.limits import MAX_MEMORY_MIB, MAX_VCPUS, MIN_MEMORY_MIB, is_valid_name
from computed.store import keys
from computed.store.client import Store
from computed.store.ops import Put
from computed.store.records import FlavorRecord, ImageRecord, ServerGroupRecord

# Sized for the bundled guests, which need little memory.
DEFAULT_FLAVORS = (
    FlavorRecord("m1.tiny", 1, 64),
    FlavorRecord("m1.small", 1, 128),
    FlavorRecord("m1.medium", 2, 256),
    FlavorRecord("m1.large", 4, 512),
)
POLICIES = ("affinity", "anti-affinity")


def validate_flavor(f: FlavorRecord) -> FlavorRecord:
    if not is_valid_name(f.name):
        raise Invalid("name", f"{f.name!r}: use letters, digits, '.', '_' or '-'")
    if not 1 <= f.vcpus <= MAX_VCPUS:
        raise Invalid("vcpus", f"must be 1..{MAX_VCPUS}")
    if not MIN_MEMORY_MIB <= f.memory_mb <= MAX_MEMORY_MIB:
        raise Invalid("memory_mb", f"must be {MIN_MEMORY_MIB}..{MAX_MEMORY_MIB}")
    return f


class Catalog:
    def __init__(self, store: Store) -> None:
        self.store = store

    # --- flavors --------------------------------------------------------------
    def seed_flavors(self) -> None:
        """Once per cluster: a marker key in the same transaction means an operator who
        deletes a default flavor never sees it come back when a scheduler restarts."""
        marker = keys.counter("flavors-seeded")
        ops = [Put(marker, "1"), *(Put(keys.flavor(f.name), f) for f in DEFAULT_FLAVORS)]
        self.store.transaction({marker: 0}, ops)

    def flavors(self) -> list[FlavorRecord]:
        entries, _ = self.store.get_prefix(keys.FLAVORS)
        return sorted(
            (e.record(FlavorRecord) for e in entries), key=lambda f: (f.memory_mb, f.name)
        )

    def flavor(self, name: str) -> FlavorRecord:
        found = (
            self.store.get_record(keys.flavor(name), FlavorRecord) if is_valid_name(name) else None
        )
        if found is None:
            raise NotFound(f"flavor {name!r} not found")
        return found[0]

    def create_flavor(self, flavor: FlavorRecord) -> FlavorRecord:
        validate_flavor(flavor)
        if not self.store.compare_and_swap(keys.flavor(flavor.name), flavor, 0):
            raise AlreadyExists(f"flavor {flavor.name!r} already exists")
        return flavor

    def delete_flavor(self, name: str) -> None:
        self.flavor(name)
        self.store.delete(keys.flavor(name))

    # --- images ---------------------------------------------------------------
    def images(self) -> list[ImageRecord]:
        bundled = [ImageRecord(name, "") for name in bundled_names()]
        entries, _ = self.store.get_prefix(keys.IMAGES)
        return bundled + [e.record(ImageRecord) for e in entries]

    def image(self, name: str) -> ImageRecord:
        if name in bundled_names():
            return ImageRecord(name, "")
        found = (
            self.store.get_record(keys.image(name), ImageRecord) if is_valid_name(name) else None
        )
        if found is None:
            raise NotFound(f"image {name!r} not found")
        return found[0]

    # --- server groups -----------------------------------------------------------
    def groups(self) -> list[tuple[ServerGroupRecord, int]]:
        entries, _ = self.store.get_prefix(keys.SERVER_GROUPS)
        return [(e.record(ServerGroupRecord), e.mod_revision) for e in entries]

    def group(self, name_or_id: str) -> tuple[ServerGroupRecord, int]:
        for group, revision in self.groups():
            if name_or_id in (group.id, group.name):
                return group, revision
        raise NotFound(f"server group {name_or_id!r} not found")

    def create_group(self, name: str, policy: str, soft: bool) -> ServerGroupRecord:
        if not is_valid_name(name):
            raise Invalid("name", f"{name!r}: use letters, digits, '.', '_' or '-'")
        if policy not in POLICIES:
            raise Invalid("policy", f"must be one of {', '.join(POLICIES)}")
        if any(g.name == name for g, _ in self.groups()):
            raise AlreadyExists(f"server group {name!r} already exists")
        group = ServerGroupRecord(str(uuidlib.uuid4()), name, policy, soft)
        self.store.compare_and_swap(keys.server_group(group.id), group, 0)
        return group

    def delete_group(self, name_or_id: str) -> None:
        group, _ = self.group(name_or_id)
        self.store.delete(keys.server_group(group.id))
