"""One cluster PKI per test session (computed/pki), so every harness runs with mTLS.

Made lazily on first use in a private temp dir and removed at exit. Identities are
issued once each: a scheduler and agents serving on loopback (SAN 127.0.0.1), and
the operator roles.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile

import grpc

from computed.mtls.credentials import channel_credentials
from computed.pki.directory import PkiDirectory
from computed.tls_files import TlsFiles

LOOPBACK_SANS = ["127.0.0.1", "localhost"]


@functools.cache
def session_pki() -> PkiDirectory:
    # /var/tmp: a confined agent (test_systemd_unit) sees /tmp as an empty private tmpfs.
    root = tempfile.mkdtemp(prefix="computed-pki-", dir="/var/tmp")
    atexit.register(shutil.rmtree, root, True)
    pki = PkiDirectory(root)
    pki.init()
    return pki


@functools.cache
def identity(role: str, name: str | None = None, sans: tuple[str, ...] | None = None) -> TlsFiles:
    """The session's certificate for (role, name), issued on first use."""
    if sans is None:
        sans = tuple(LOOPBACK_SANS) if role in ("scheduler", "agent", "etcd-server") else ()
    return session_pki().issue(role, name, list(sans))


def daemon_flags(files: TlsFiles) -> list[str]:
    return ["--tls-cacert", files.ca, "--tls-cert", files.cert, "--tls-key", files.key]


def channel(address: str, role: str, name: str | None = None) -> grpc.Channel:
    """A channel to `address` presenting the session's certificate for (role, name)."""
    return grpc.secure_channel(address, channel_credentials(identity(role, name)))


def admin() -> TlsFiles:
    return identity("admin")


def scheduler() -> TlsFiles:
    return identity("scheduler", "test")
