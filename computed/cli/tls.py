"""Where computectl finds its certificate, named as the openstack CLI names them. Pure.

Each of the three files, in order: its flag (--os-cacert, --os-cert, --os-key),
its environment variable (OS_CACERT, OS_CERT, OS_KEY), then
~/.config/computed/{ca.pem,cert.pem,key.pem} (where `deploy/devcluster up`
links its admin certificate, so the dev cluster needs no typing). --insecure
talks plaintext to a scheduler started with --insecure.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from computed.cli.errors import EXIT_USAGE, CliError
from computed.tls_files import TlsFiles

CONFIG_DIR = os.path.join("~", ".config", "computed")
_SOURCES = (("cacert", "OS_CACERT", "ca.pem"), ("cert", "OS_CERT", "cert.pem"),
            ("key", "OS_KEY", "key.pem"))  # fmt: skip


def config_dir(environ: Mapping[str, str]) -> str:
    home = environ.get("HOME") or os.path.expanduser("~")
    return os.path.join(home, ".config", "computed")


def client_tls(
    flags: Mapping[str, str | None],
    insecure: bool,
    environ: Mapping[str, str],
    exists: Callable[[str], bool] = os.path.exists,
) -> TlsFiles | None:
    """The files to present, or None with --insecure; CliError naming what is missing."""
    if insecure:
        return None
    found: dict[str, str] = {}
    missing: list[str] = []
    for name, env, default_name in _SOURCES:
        path = (
            flags.get(name) or environ.get(env) or os.path.join(config_dir(environ), default_name)
        )
        if not exists(path):
            missing.append(f"--os-{name} / ${env} / {path}")
        found[name] = path
    if missing:
        raise CliError(
            "no client certificate: " + "; ".join(missing) + " not found. Issue one with "
            "`computectl pki issue --role admin` (or reader), or pass --insecure for a "
            "plaintext scheduler",
            EXIT_USAGE,
        )
    return TlsFiles(found["cacert"], found["cert"], found["key"])
