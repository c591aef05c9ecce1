"""The reloadable server credentials: a reload hands gRPC the new pair once; a bad file
leaves the old pair in use and says which file."""

from __future__ import annotations

import pytest

from computed.mtls.credentials import ReloadableServerCredentials, TlsError
from computed.pki.directory import PkiDirectory


@pytest.fixture
def files(tmp_path):
    pki = PkiDirectory(str(tmp_path / "pki"))
    pki.init()
    return pki, pki.issue("agent", "h", ["127.0.0.1"])


def test_reload_is_handed_to_the_next_handshake_once(files):
    pki, tls = files
    creds = ReloadableServerCredentials(tls)
    first = creds.cert_pem
    assert creds._fetch() is None  # nothing new: gRPC keeps what it has
    pki.issue("agent", "h", ["127.0.0.1"])
    creds.reload()
    assert creds.cert_pem != first
    assert creds._fetch() is not None and creds._fetch() is None


def test_a_bad_file_keeps_the_old_pair_and_names_the_file(files):
    _, tls = files
    creds = ReloadableServerCredentials(tls)
    good = creds.cert_pem
    with open(tls.cert, "w") as f:
        f.write("not a certificate")
    with pytest.raises(TlsError, match=f"{tls.cert}: not a PEM certificate"):
        creds.reload()
    assert creds.cert_pem == good and creds._fetch() is None
    with pytest.raises(TlsError, match="cannot read /nonexistent"):
        ReloadableServerCredentials(type(tls)("/nonexistent", tls.cert, tls.key))


def test_a_key_that_is_not_the_certificates_is_refused(files):
    pki, tls = files
    other = pki.issue("agent", "other", ["127.0.0.1"])
    creds = ReloadableServerCredentials(tls)
    with open(other.key, "rb") as src, open(tls.key, "wb") as dst:
        dst.write(src.read())
    with pytest.raises(TlsError, match="is not the key of"):
        creds.reload()
