"""A PKI on disk: the CA in <dir>/ca/, each issued identity in <dir>/<CN>/.

Layout (every directory 0700, every private key 0600):
    <dir>/ca/ca.pem  <dir>/ca/ca-key.pem        the cluster CA (keep ca-key.pem offline)
    <dir>/<CN>/ca.pem cert.pem key.pem          one identity: exactly what a daemon's
                                                --tls-cacert/--tls-cert/--tls-key (or
                                                computectl's --os-*) point at
Files are written to a temporary name and renamed, so a daemon reloading on
SIGHUP never reads half a file, and a failed issue leaves nothing behind.
"""

from __future__ import annotations

import datetime
import os

from computed.pki import certs
from computed.pki.certs import PkiError, Subject
from computed.tls_files import TlsFiles


class PkiDirectory:
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    @property
    def ca_cert_path(self) -> str:
        return os.path.join(self.root, "ca", "ca.pem")

    @property
    def ca_key_path(self) -> str:
        return os.path.join(self.root, "ca", "ca-key.pem")

    def exists(self) -> bool:
        return os.path.exists(self.ca_cert_path) and os.path.exists(self.ca_key_path)

    def init(self, days: int = certs.CA_DAYS) -> str:
        """Make the CA; PkiError if one is already there (never overwrite a CA by accident)."""
        if os.path.exists(self.ca_cert_path) or os.path.exists(self.ca_key_path):
            raise PkiError(f"{self.root} already holds a CA ({self.ca_cert_path})")
        key = certs.new_key()
        cert = certs.make_ca(key, days=days)
        _private_dir(os.path.dirname(self.ca_cert_path))
        _write(self.ca_key_path, certs.key_pem(key), 0o600)
        _write(self.ca_cert_path, certs.cert_pem(cert), 0o644)
        return self.ca_cert_path

    def files(self, identity: str) -> TlsFiles:
        d = os.path.join(self.root, identity)
        return TlsFiles(
            os.path.join(d, "ca.pem"), os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        )

    def issue(
        self,
        role: str,
        name: str | None = None,
        sans: list[str] = (),  # type: ignore[assignment]
        days: int = certs.CERT_DAYS,
        not_before: datetime.datetime | None = None,
    ) -> TlsFiles:
        """Issue (or renew: a new key and certificate replace the old) one identity's files."""
        identity = certs.identity_for(role, name)
        ca_key, ca_cert = self._load_ca()
        key = certs.new_key()
        cert = certs.issue(
            ca_key, ca_cert, key, Subject(identity, role), list(sans), days, not_before
        )
        files = self.files(identity)
        _private_dir(self.root)
        _private_dir(os.path.dirname(files.cert))
        _write(files.ca, certs.cert_pem(ca_cert), 0o644)
        _write(files.key, certs.key_pem(key), 0o600)
        _write(files.cert, certs.cert_pem(cert), 0o644)
        return files

    def _load_ca(self) -> tuple[certs.PrivateKey, certs.x509.Certificate]:
        if not self.exists():
            raise PkiError(
                f"no CA in {self.root}: run `computectl pki init --dir {self.root}` first"
            )
        try:
            with open(self.ca_key_path, "rb") as f:
                key = certs.load_key(f.read())
            with open(self.ca_cert_path, "rb") as f:
                cert = certs.x509.load_pem_x509_certificate(f.read())
        except (OSError, ValueError) as e:
            raise PkiError(f"cannot read the CA in {self.root}: {e}") from None
        return key, cert


def _private_dir(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)


def _write(path: str, data: bytes, mode: int) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # umask must not widen or narrow it
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)
