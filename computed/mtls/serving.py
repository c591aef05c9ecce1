"""What the scheduler and the agent share about serving gRPC with mTLS: their flags,
a server built with the role interceptor, and the SIGHUP reload."""

from __future__ import annotations

import argparse
import logging
import signal
from collections.abc import Callable
from concurrent import futures

import grpc

from computed.mtls.access import AccessTable
from computed.mtls.credentials import (
    INSECURE_WARNING,
    ReloadableServerCredentials,
    TlsError,
    warn_expiring,
)
from computed.mtls.interceptor import RoleInterceptor
from computed.tls_files import TlsFiles

log = logging.getLogger("computed.mtls")


def add_tls_flags(p: argparse.ArgumentParser, default: object = None) -> None:
    """--tls-cacert/--tls-cert/--tls-key/--insecure and etcd's --etcd-cacert/-cert/-key."""
    g = p.add_argument_group("TLS (gRPC: mutual TLS, required unless --insecure)")
    g.add_argument("--tls-cacert", default=default, help="the cluster CA (PEM)")
    g.add_argument("--tls-cert", default=default, help="this daemon's certificate (PEM)")
    g.add_argument("--tls-key", default=default, help="its private key (PEM)")
    g.add_argument(
        "--insecure",
        action="store_true",
        default=default if default is not None else False,
        help="serve and call gRPC in plaintext with no authentication (tests only)",
    )
    e = p.add_argument_group("etcd TLS (etcd's own flag names)")
    e.add_argument("--etcd-cacert", default=default, help="CA that signed etcd's certificate")
    e.add_argument("--etcd-cert", default=default, help="client certificate for etcd")
    e.add_argument("--etcd-key", default=default, help="its private key")


def tls_files(
    ca: str | None, cert: str | None, key: str | None, insecure: bool, prefix: str = "--tls"
) -> TlsFiles | None:
    """The three files, or None for --insecure; ValueError naming what is missing."""
    given = {f"{prefix}-cacert": ca, f"{prefix}-cert": cert, f"{prefix}-key": key}
    if insecure:
        if any(given.values()):
            raise ValueError(
                f"--insecure and {', '.join(k for k, v in given.items() if v)} contradict"
            )
        return None
    missing = [k for k, v in given.items() if not v]
    if missing:
        raise ValueError(
            f"mutual TLS needs {', '.join(missing)} (issue them with `computectl pki issue`), "
            "or --insecure for a plaintext test setup"
        )
    return TlsFiles(str(ca), str(cert), str(key))


def etcd_tls_files(ca: str | None, cert: str | None, key: str | None) -> TlsFiles | None:
    """etcd TLS is all three files or none (a plaintext etcd)."""
    given = [ca, cert, key]
    if not any(given):
        return None
    if not all(given):
        raise ValueError("--etcd-cacert, --etcd-cert and --etcd-key go together")
    return TlsFiles(str(ca), str(cert), str(key))


def make_server(
    tls: TlsFiles | None, table: AccessTable, workers: int, thread_prefix: str
) -> tuple[grpc.Server, ReloadableServerCredentials | None]:
    """A gRPC server enforcing `table` (mTLS), or a plaintext one without checks (tls None)."""
    executor = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=thread_prefix)
    if tls is None:
        return grpc.server(executor), None
    creds = ReloadableServerCredentials(tls)
    return grpc.server(executor, interceptors=(RoleInterceptor(table),)), creds


def listen(
    server: grpc.Server, address: str, creds: ReloadableServerCredentials | None, what: str
) -> bool:
    """Bind `address`; with no credentials, the loud plaintext warning. False if it cannot."""
    if creds is None:
        log.warning(INSECURE_WARNING, address)
        return server.add_insecure_port(address) != 0
    warn_expiring(what, creds.cert_pem)
    return server.add_secure_port(address, creds.credentials) != 0


def on_sighup(reload: Callable[[], None]) -> None:
    """Run `reload` on SIGHUP, logging (never dying of) a failed reload."""

    def handler(_signo: int, _frame: object) -> None:
        try:
            reload()
        except (TlsError, OSError, ValueError) as e:
            log.error("SIGHUP: certificates not reloaded, the old ones stay in use: %s", e)

    signal.signal(signal.SIGHUP, handler)
