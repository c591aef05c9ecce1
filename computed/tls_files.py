"""Where a process finds its TLS material: one CA bundle, one certificate, one key.

Shared by the gRPC hops (computectl → scheduler → agent) and the etcd client,
so every daemon names its files the same way. Paths only: each user loads and
reloads the files itself (a SIGHUP re-reads them without a restart).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    """PEM files: the cluster CA to verify peers with, and this process's own pair."""

    ca: str
    cert: str
    key: str

    def read(self) -> tuple[bytes, bytes, bytes]:
        """The three files' bytes, read now (so a renewed pair is picked up)."""
        out = []
        for path in (self.ca, self.cert, self.key):
            with open(path, "rb") as f:
                out.append(f.read())
        return out[0], out[1], out[2]
