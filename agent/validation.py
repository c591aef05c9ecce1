"""Validation of instance specs arriving over gRPC. Pure.

The limits are the VMM's own (computed.vmm.config), so a spec the agent
accepts is one the VMM will accept.
"""

from __future__ import annotations

import dataclasses
import ipaddress
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
    parse_mac,
)
from computed.vmm.errors import UsageError
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
    _validate_network(spec)
    return dataclasses.replace(spec, uuid=uuid)


def _validate_network(spec: InstanceSpec) -> None:
    """ip, gateway and mac: all empty (no network) or a consistent set."""
    if not (spec.ip or spec.gateway or spec.mac):
        return
    try:
        iface = ipaddress.IPv4Interface(spec.ip)
    except ValueError:
        raise InvalidField("spec.ip", f"{spec.ip!r} is not an IPv4 address/prefix") from None
    if iface.network.prefixlen > 30 or iface.ip in (
        iface.network.network_address,
        iface.network.broadcast_address,
    ):
        raise InvalidField("spec.ip", f"{spec.ip} is not a usable host address")
    try:
        gateway = ipaddress.IPv4Address(spec.gateway)
    except ValueError:
        raise InvalidField("spec.gateway", f"{spec.gateway!r} is not an IPv4 address") from None
    if gateway not in iface.network or gateway == iface.ip:
        raise InvalidField("spec.gateway", f"{gateway} is not another address in {iface.network}")
    try:
        parse_mac(spec.mac)
    except UsageError as e:
        raise InvalidField("spec.mac", str(e)) from None


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
