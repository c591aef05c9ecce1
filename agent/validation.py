"""Validation of instance specs arriving over gRPC. Pure.

The limits are the ones the VMM checks its command line against
(computed.limits), so a spec the agent accepts is one the VMM will accept.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os

from computed.errors import Invalid
from computed.guests.bundled import bundled_names
from computed.limits import (
    CMDLINE_MAX,
    MAX_MEMORY_MIB,
    MAX_VCPUS,
    MIN_MEMORY_MIB,
    NAME_MAX,
    is_valid_name,
    is_valid_uuid,
    mac_problem,
)
from computed.store.keys import digest_hex
from computed.store.records import InstanceSpec


def validate_uuid(uuid: str, field: str = "uuid") -> str:
    if not is_valid_uuid(uuid):
        raise Invalid(field, f"{uuid!r} is not a UUID")
    return uuid.lower()


def validate_spec(spec: InstanceSpec, available_images: list[str] | None = None) -> InstanceSpec:
    """Check every field of a spec; return it normalised (lower-case uuid)."""
    uuid = validate_uuid(spec.uuid, "spec.uuid")
    if not is_valid_name(spec.name):
        raise Invalid(
            "spec.name", f"use 1..{NAME_MAX} letters, digits, '.', '_' or '-' (got {spec.name!r})"
        )
    if not 1 <= spec.vcpus <= MAX_VCPUS:
        raise Invalid("spec.vcpus", f"must be 1..{MAX_VCPUS} (got {spec.vcpus})")
    if not MIN_MEMORY_MIB <= spec.memory_mb <= MAX_MEMORY_MIB:
        raise Invalid(
            "spec.memory_mb", f"must be {MIN_MEMORY_MIB}..{MAX_MEMORY_MIB} (got {spec.memory_mb})"
        )
    if len(spec.cmdline.encode()) > CMDLINE_MAX or "\0" in spec.cmdline:
        raise Invalid("spec.cmdline", f"longer than {CMDLINE_MAX} bytes or contains NUL")
    if spec.image_digest:  # an uploaded image, fetched by digest; `image` is its name
        _validate_uploaded_image(spec)
    else:
        bundled = bundled_names() if available_images is None else available_images
        _validate_image(spec.image, bundled)
    _validate_network(spec)
    return dataclasses.replace(spec, uuid=uuid)


def _validate_network(spec: InstanceSpec) -> None:
    """ip, gateway and mac: all empty (no network) or a consistent set."""
    if not (spec.ip or spec.gateway or spec.mac):
        return
    try:
        iface = ipaddress.IPv4Interface(spec.ip)
    except ValueError:
        raise Invalid("spec.ip", f"{spec.ip!r} is not an IPv4 address/prefix") from None
    if iface.network.prefixlen > 30 or iface.ip in (
        iface.network.network_address,
        iface.network.broadcast_address,
    ):
        raise Invalid("spec.ip", f"{spec.ip} is not a usable host address")
    try:
        gateway = ipaddress.IPv4Address(spec.gateway)
    except ValueError:
        raise Invalid("spec.gateway", f"{spec.gateway!r} is not an IPv4 address") from None
    if gateway not in iface.network or gateway == iface.ip:
        raise Invalid("spec.gateway", f"{gateway} is not another address in {iface.network}")
    problem = mac_problem(spec.mac)
    if problem is not None:
        raise Invalid("spec.mac", f"mac={spec.mac!r}: {problem}")


def _validate_uploaded_image(spec: InstanceSpec) -> None:
    try:
        digest_hex(spec.image_digest)
    except ValueError as e:
        raise Invalid("spec.image_digest", str(e)) from None
    if not is_valid_name(spec.image):
        raise Invalid("spec.image", f"{spec.image!r} is not an image name")


def _validate_image(image: str, bundled: list[str]) -> None:
    if not image:
        raise Invalid("spec.image", "is required")
    if "/" in image:
        if not os.path.isabs(image) or not os.path.isfile(image):
            raise Invalid("spec.image", f"{image!r} is not an existing absolute path")
    elif image not in bundled:
        raise Invalid(
            "spec.image", f"no bundled image {image!r} (available: {', '.join(bundled) or 'none'})"
        )
