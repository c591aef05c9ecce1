"""Validation of instance specs arriving over gRPC. Pure.

The limits are the VMM's own (computed.vmm.config), so a spec the agent
accepts is one the VMM will accept.
"""

from __future__ import annotations

import os

from computed.store.records import InstanceSpec
from computed.vmm.config import (
    CMDLINE_MAX,
    MAX_MEMORY_MIB,
    MAX_VCPUS,
    MIN_MEMORY_MIB,
    NAME_MAX,
    is_valid_name,
    is_valid_uuid,
)
from computed.vmm.images import bundled_names


class InvalidField(ValueError):
    """A request field is wrong; carries the field's name (INVALID_ARGUMENT)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def validate_uuid(uuid: str, field: str = "uuid") -> str:
    if not is_valid_uuid(uuid):
        raise InvalidField(field, f"{uuid!r} is not a UUID")
    return uuid.lower()


def validate_spec(spec: InstanceSpec, available_images: list[str] | None = None) -> InstanceSpec:
    """Check every field of a spec; return it normalised (lower-case uuid)."""
    uuid = validate_uuid(spec.uuid, "spec.uuid")
    if not is_valid_name(spec.name):
        raise InvalidField(
            "spec.name", f"use 1..{NAME_MAX} letters, digits, '.', '_' or '-' (got {spec.name!r})"
        )
    if not 1 <= spec.vcpus <= MAX_VCPUS:
        raise InvalidField("spec.vcpus", f"must be 1..{MAX_VCPUS} (got {spec.vcpus})")
    if not MIN_MEMORY_MIB <= spec.memory_mb <= MAX_MEMORY_MIB:
        raise InvalidField(
            "spec.memory_mb", f"must be {MIN_MEMORY_MIB}..{MAX_MEMORY_MIB} (got {spec.memory_mb})"
        )
    if len(spec.cmdline.encode()) > CMDLINE_MAX or "\0" in spec.cmdline:
        raise InvalidField("spec.cmdline", f"longer than {CMDLINE_MAX} bytes or contains NUL")
    _validate_image(spec.image, bundled_names() if available_images is None else available_images)
    return InstanceSpec(uuid, spec.name, spec.image, spec.vcpus, spec.memory_mb, spec.cmdline)


def _validate_image(image: str, bundled: list[str]) -> None:
    if not image:
        raise InvalidField("spec.image", "is required")
    if "/" in image:
        if not os.path.isabs(image) or not os.path.isfile(image):
            raise InvalidField("spec.image", f"{image!r} is not an existing absolute path")
    elif image not in bundled:
        raise InvalidField(
            "spec.image", f"no bundled image {image!r} (available: {', '.join(bundled) or 'none'})"
        )
