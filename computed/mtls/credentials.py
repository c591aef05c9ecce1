"""gRPC credentials from TlsFiles: a server side that reloads, and client channels.

The server uses gRPC's dynamic SSL credentials: gRPC asks the fetcher for a
certificate configuration at each new handshake, so after `reload()` (on
SIGHUP) new connections present the renewed certificate while established
connections, their streams (WatchServers) and the VMMs carry on untouched.
Every configuration requires and verifies a client certificate from the CA.

cryptography is imported only where a certificate is parsed: computectl, which
starts afresh for every command, checks that its key is its certificate's
only when a connection fails (its import costs ~25 ms of each command).
"""

from __future__ import annotations

import datetime
import logging
import threading

import grpc

from computed.tls_files import TlsFiles

log = logging.getLogger("computed.mtls")
EXPIRY_WARNING = datetime.timedelta(days=30)


class TlsError(ValueError):
    """TLS files that cannot be used; the message names the file."""


def read_files(files: TlsFiles) -> tuple[bytes, bytes, bytes]:
    """(ca, cert, key) bytes, checked to be PEM of the right kind and the key to be the
    certificate's; TlsError otherwise."""
    ca, cert, key = read_pem(files)
    check_pair(files, cert, key)
    return ca, cert, key


def read_pem(files: TlsFiles) -> tuple[bytes, bytes, bytes]:
    """(ca, cert, key) bytes, checked only to be PEM of the right kind (cheap)."""
    try:
        ca, cert, key = files.read()
    except OSError as e:
        raise TlsError(f"cannot read {e.filename}: {e.strerror}") from None
    for path, data, marker in ((files.ca, ca, b"CERTIFICATE"), (files.cert, cert, b"CERTIFICATE"),
                               (files.key, key, b"PRIVATE KEY")):  # fmt: skip
        if b"-----BEGIN " not in data or marker not in data:
            raise TlsError(f"{path}: not a PEM {marker.decode().lower()}")
    return ca, cert, key


def check_pair(files: TlsFiles, cert: bytes, key: bytes) -> None:
    """TlsError unless both parse and `key` is the private key of `cert`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        public = x509.load_pem_x509_certificate(cert).public_key()
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError) as e:
        raise TlsError(f"{files.cert} / {files.key}: {e}") from None
    if public.public_numbers() != private.public_key().public_numbers():  # type: ignore[union-attr]
        raise TlsError(f"{files.key} is not the key of {files.cert}")


def not_after(cert_pem: bytes) -> datetime.datetime:
    from cryptography import x509

    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc


def expiry_warning(what: str, cert_pem: bytes, now: datetime.datetime | None = None) -> str | None:
    """A warning if the certificate expires within 30 days (or has), else None. Pure."""
    now = now or datetime.datetime.now(datetime.UTC)
    end = not_after(cert_pem)
    if end - now > EXPIRY_WARNING:
        return None
    if end <= now:
        return f"{what} certificate EXPIRED at {end:%Y-%m-%d %H:%M} UTC: renew it and send SIGHUP"
    days = (end - now).days
    return (
        f"{what} certificate expires in {days} day(s), at {end:%Y-%m-%d %H:%M} UTC: "
        "renew it and send SIGHUP"
    )


class ReloadableServerCredentials:
    """Server credentials whose certificate pair and CA can be swapped while serving."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._lock = threading.Lock()
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self.cert_pem = b""
        initial = self._load()
        self.credentials = grpc.dynamic_ssl_server_credentials(
            initial, self._fetch, require_client_authentication=True
        )

    def _load(self) -> grpc.ServerCertificateConfiguration:
        ca, cert, key = read_files(self.files)
        self.cert_pem = cert
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def reload(self) -> None:
        """Re-read the files; the next handshake uses them. TlsError leaves the old ones in use."""
        config = self._load()
        with self._lock:
            self._pending = config

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:  # gRPC calls this at each handshake; None means "unchanged"
            config, self._pending = self._pending, None
        return config

    def not_after(self) -> datetime.datetime:
        return not_after(self.cert_pem)


def channel_credentials(files: TlsFiles, check: bool = True) -> grpc.ChannelCredentials:
    """Client side: verify the server against the CA, present our own pair. check=False
    skips parsing the pair (the caller runs check_pair when a connection fails)."""
    ca, cert, key = read_files(files) if check else read_pem(files)
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


def open_channel(address: str, creds: grpc.ChannelCredentials | None) -> grpc.Channel:
    """A secure channel, or a plaintext one when `creds` is None (--insecure)."""
    if creds is None:
        return grpc.insecure_channel(address)
    return grpc.secure_channel(address, creds)


def warn_expiring(what: str, cert_pem: bytes, logger: logging.Logger = log) -> None:
    message = expiry_warning(what, cert_pem)
    if message:
        logger.warning(message)


INSECURE_WARNING = (
    "*** --insecure: serving gRPC in PLAINTEXT with NO authentication. Anyone who can reach "
    "%s can do anything. Never use this outside a sealed test machine. ***"
)
