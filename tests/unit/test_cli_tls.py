"""Where computectl finds its certificate: flag, then $OS_*, then ~/.config/computed/."""

from __future__ import annotations

import pytest

from computed.cli.errors import CliError
from computed.cli.main import parse
from computed.cli.tls import client_tls

NONE = {"cacert": None, "cert": None, "key": None}


def test_flags_win_over_environment_over_the_config_directory():
    env = {"HOME": "/home/op", "OS_CERT": "/env/cert.pem"}
    flags = {**NONE, "key": "/flag/key.pem"}
    files = client_tls(flags, False, env, exists=lambda p: True)
    assert (files.ca, files.cert, files.key) == (
        "/home/op/.config/computed/ca.pem", "/env/cert.pem", "/flag/key.pem"
    )  # fmt: skip


def test_missing_files_name_every_place_looked_and_insecure_needs_none():
    with pytest.raises(CliError, match=r"--os-cert / \$OS_CERT / /h/.config/computed/cert.pem"):
        client_tls(NONE, False, {"HOME": "/h"}, exists=lambda p: False)
    assert client_tls(NONE, True, {}, exists=lambda p: False) is None


def test_openstack_style_flags_parse_before_or_after_the_verb():
    a = parse(["--os-cacert", "c", "server", "list", "--os-cert", "x", "--os-key", "k"])
    assert (a.os_cacert, a.os_cert, a.os_key, a.insecure) == ("c", "x", "k", False)
    assert parse(["server", "list", "--insecure"]).insecure is True
