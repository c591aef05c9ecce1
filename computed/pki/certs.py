"""Building the cluster's certificates. Pure: keys and certificates in, PEM bytes out.

One CA signs everything. A certificate's subject says who holds it: CN is the
identity (`admin`, `reader-ops`, `scheduler-1`, `agent-host-1`, `root`), OU the
role. gRPC servers accept the four roles in GRPC_ROLES; `etcd-root` (the
identity that provisions etcd's users) and `etcd-server` exist for etcd only and
no gRPC server lets them in. Schedulers and agents both serve and call, so their
certificates carry serverAuth and clientAuth and SANs naming every address
they serve on (clients check the address they dialled against them).
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import re

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from computed.pki.roles import CA_DAYS, CERT_DAYS, ROLES, SERVER_ROLES

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")

PrivateKey = ec.EllipticCurvePrivateKey


class PkiError(ValueError):
    """Input that cannot make a certificate; the message names what is wrong."""


@dataclasses.dataclass(frozen=True)
class Subject:
    """Whose certificate: identity (CN) and role (OU)."""

    identity: str
    role: str


def identity_for(role: str, name: str | None) -> str:
    """The CN a role's certificate carries: `agent-<host>`, `scheduler-<n>`, `reader-<who>`,
    `admin` (or `admin-<who>`), `root` for etcd-root, `etcd-<name>` for etcd servers."""
    if role not in ROLES:
        raise PkiError(f"unknown role {role!r} (choose from: {', '.join(ROLES)})")
    if name is not None and not _NAME.fullmatch(name):
        raise PkiError(f"name {name!r}: 1-63 lowercase letters, digits, '.', '_' or '-'")
    if role == "etcd-root":
        return "root"
    if role == "admin":
        return "admin" if name is None else f"admin-{name}"
    if name is None:
        raise PkiError(f"role {role} needs a name (e.g. the host id or scheduler number)")
    return f"{'etcd' if role == 'etcd-server' else role}-{name}"


def parse_sans(values: list[str]) -> list[x509.GeneralName]:
    """Each value an IP address or a DNS name."""
    out: list[x509.GeneralName] = []
    for value in values:
        value = value.strip()
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(value)))
            continue
        except ValueError:
            pass
        if not re.fullmatch(r"[A-Za-z0-9*]([A-Za-z0-9.-]{0,252})", value):
            raise PkiError(f"SAN {value!r} is neither an IP address nor a DNS name")
        out.append(x509.DNSName(value))
    return out


def new_key() -> PrivateKey:
    """P-256: small, fast handshakes, accepted by gRPC and etcd alike."""
    return ec.generate_private_key(ec.SECP256R1())


def make_ca(
    key: PrivateKey, name: str = "computed cluster CA", now: datetime.datetime | None = None,
    days: int = CA_DAYS,
) -> x509.Certificate:  # fmt: skip
    if days < 1:
        raise PkiError(f"--days {days}: must be at least 1")
    now = now or _now()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def issue(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    key: PrivateKey,
    subject: Subject,
    sans: list[str] = (),  # type: ignore[assignment]
    days: int = CERT_DAYS,
    not_before: datetime.datetime | None = None,
) -> x509.Certificate:
    """A certificate for `subject` signed by the CA. Servers (SERVER_ROLES) must name
    at least one SAN; clients may not (a SAN on an operator's certificate means nothing)."""
    if subject.role not in ROLES:
        raise PkiError(f"unknown role {subject.role!r} (choose from: {', '.join(ROLES)})")
    if days < 1:
        raise PkiError(f"--days {days}: must be at least 1")
    server = subject.role in SERVER_ROLES
    names = parse_sans(list(sans))
    if server and not names:
        raise PkiError(
            f"role {subject.role} serves: give --san with every address and name it serves on"
        )
    if not server and names:
        raise PkiError(f"role {subject.role} is a client only: it takes no --san")
    start = not_before or (_now() - datetime.timedelta(minutes=5))
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if server:
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, subject.role),
                    x509.NameAttribute(NameOID.COMMON_NAME, subject.identity),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_key(pem: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError("the CA key is not an EC key made by computectl pki")
    return key


def subject_of(cert: x509.Certificate) -> Subject:
    """CN and OU of a certificate ('' where missing)."""

    def first(oid: x509.ObjectIdentifier) -> str:
        attrs = cert.subject.get_attributes_for_oid(oid)
        return str(attrs[0].value) if attrs else ""

    return Subject(first(NameOID.COMMON_NAME), first(NameOID.ORGANIZATIONAL_UNIT_NAME))


def not_after(cert: x509.Certificate) -> datetime.datetime:
    return cert.not_valid_after_utc


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
