"""The PKI: subjects (CN identity, OU role), SANs and key usages, file modes, bad input."""

from __future__ import annotations

import datetime
import ipaddress
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from computed.caller import Caller, caller_of_pem
from computed.mtls.credentials import expiry_warning
from computed.pki import certs
from computed.pki.certs import PkiError
from computed.pki.directory import PkiDirectory


@pytest.fixture
def pki(tmp_path) -> PkiDirectory:
    p = PkiDirectory(str(tmp_path / "pki"))
    p.init()
    return p


def _cert(path: str) -> x509.Certificate:
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def test_agent_certificate_names_host_role_and_addresses(pki):
    files = pki.issue("agent", "host-1", ["10.213.0.11", "host-1.example"])
    cert = _cert(files.cert)
    assert certs.subject_of(cert) == certs.Subject("agent-host-1", "agent")
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.213.0.11")]
    assert sans.get_values_for_type(x509.DNSName) == ["host-1.example"]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    cert.verify_directly_issued_by(_cert(pki.ca_cert_path))
    with open(files.cert, "rb") as f:  # what a server reads from the peer's certificate
        assert caller_of_pem(f.read()) == Caller("agent-host-1", "agent")


def test_operator_certificates_are_client_only(pki):
    for role, name, cn in (("admin", None, "admin"), ("reader", "ops", "reader-ops"),
                           ("etcd-root", None, "root")):  # fmt: skip
        cert = _cert(pki.issue(role, name).cert)
        assert certs.subject_of(cert) == certs.Subject(cn, role)
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_keys_are_0600_and_directories_0700(pki):
    files = pki.issue("scheduler", "1", ["127.0.0.1"])
    for path in (files.key, pki.ca_key_path):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    for path in (pki.root, os.path.dirname(files.key), os.path.dirname(pki.ca_key_path)):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700, path


def test_renewing_replaces_key_and_certificate(pki):
    first = pki.issue("agent", "h", ["127.0.0.1"])
    old_key, old_serial = Path(first.key).read_text(), _cert(first.cert).serial_number
    again = pki.issue("agent", "h", ["127.0.0.1"])
    assert again == first
    assert Path(again.key).read_text() != old_key and _cert(again.cert).serial_number != old_serial


@pytest.mark.parametrize(
    "role,name,sans,words",
    [
        ("agent", "h", [], "give --san"),
        ("admin", None, ["10.0.0.1"], "client only"),
        ("wizard", "x", [], "unknown role"),
        ("agent", None, ["10.0.0.1"], "needs a name"),
        ("agent", "Bad/Name", ["10.0.0.1"], "name 'Bad/Name'"),
        ("agent", "h", ["not an address!"], "neither an IP address nor a DNS name"),
    ],
)
def test_bad_input_is_named_and_writes_nothing(pki, role, name, sans, words):
    before = sorted(os.listdir(pki.root))
    with pytest.raises(PkiError, match=words):
        pki.issue(role, name, sans)
    assert sorted(os.listdir(pki.root)) == before


def test_init_never_overwrites_a_ca_and_issue_needs_one(pki, tmp_path):
    with pytest.raises(PkiError, match="already holds a CA"):
        pki.init()
    with pytest.raises(PkiError, match="no CA in"):
        PkiDirectory(str(tmp_path / "empty")).issue("admin")


def test_expiry_warning_within_30_days(pki):
    now = datetime.datetime.now(datetime.UTC)
    soon = Path(pki.issue("admin", "soon", days=10).cert).read_bytes()
    later = Path(pki.issue("admin", "later", days=90).cert).read_bytes()
    assert "expires in 9 day(s)" in expiry_warning("agent", soon, now)
    assert expiry_warning("agent", later, now) is None
    assert "EXPIRED" in expiry_warning("agent", soon, now + datetime.timedelta(days=11))
