"""Who is calling a gRPC method: the identity and role in its client certificate.

The certificate's subject carries both: CN is the identity (`admin`,
`scheduler-1`, `agent-node-1`), OU is the role (`admin`, `reader`,
`scheduler`, `agent`). A server started with `--insecure` has no certificate
to read; its callers are `anonymous` with every right, which is why that mode
warns loudly at start.
"""

from __future__ import annotations

import dataclasses
import functools

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

ANONYMOUS = "anonymous"


@dataclasses.dataclass(frozen=True)
class Caller:
    identity: str
    role: str


def caller_of(context: grpc.ServicerContext) -> Caller:
    """The caller of the current RPC (anonymous admin on a plaintext server)."""
    auth = context.auth_context() or {}
    pems = auth.get("x509_pem_cert") or []
    if not pems:
        if auth.get("transport_security_type") == [b"ssl"]:
            return Caller("", "")  # TLS without a verified client certificate: no role
        return Caller(ANONYMOUS, "admin")
    return caller_of_pem(pems[0])


@functools.lru_cache(maxsize=256)
def caller_of_pem(pem: bytes) -> Caller:
    """CN and OU of a PEM certificate, parsed once per distinct certificate (a busy
    channel presents the same one on every call)."""
    subject = x509.load_pem_x509_certificate(pem).subject

    def first(oid: x509.ObjectIdentifier) -> str:
        attrs = subject.get_attributes_for_oid(oid)
        return str(attrs[0].value) if attrs else ""

    return Caller(first(NameOID.COMMON_NAME), first(NameOID.ORGANIZATIONAL_UNIT_NAME))
