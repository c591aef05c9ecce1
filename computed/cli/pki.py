"""computectl pki init|issue: the cluster CA and its certificates, on this machine's disk.

No scheduler is involved: these verbs only write files (computed/pki/). Run them
where the CA key lives, then copy each identity's directory to its host.
"""

from __future__ import annotations

import argparse
import os

from computed.cli.errors import EXIT_USAGE, CliError
from computed.pki import roles  # light: the cryptography library loads only in run()

DEFAULT_DIR = os.path.join(".", "pki")


def add_verbs(top: argparse._SubParsersAction) -> None:
    parser = top.add_parser("pki", help="the cluster's CA and certificates (local files)")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    p = sub.add_parser("init", help="create the cluster CA in --dir")
    p.add_argument("--dir", default=DEFAULT_DIR, help="PKI directory (default %(default)s)")
    p.add_argument(
        "--days", type=int, default=roles.CA_DAYS, help="CA validity (default %(default)s)"
    )
    p.set_defaults(handler="pki_init", fields=None, local=True)
    p = sub.add_parser(
        "issue",
        help="issue (or renew) a certificate: writes <dir>/<identity>/{ca,cert,key}.pem",
        description="Roles: admin, reader (operators); scheduler, agent (daemons: give every "
        "address they serve on with --san); etcd-root (provisions etcd users); etcd-server.",
    )
    p.add_argument("--dir", default=DEFAULT_DIR, help="PKI directory (default %(default)s)")
    p.add_argument("--role", required=True, choices=roles.ROLES)
    p.add_argument("--name", help="agent: the host id; scheduler: its number; reader: who")
    p.add_argument("--san", action="append", default=[], metavar="IP_OR_DNS",
                   help="an address the daemon serves on (repeatable; servers only)")  # fmt: skip
    p.add_argument(
        "--days", type=int, default=roles.CERT_DAYS, help="validity (default %(default)s)"
    )
    p.set_defaults(handler="pki_issue", fields=None, local=True)


def run(args: argparse.Namespace) -> str:
    """The verb's one-paragraph result; CliError (exit 2) for bad input."""
    from computed.pki.certs import PkiError
    from computed.pki.directory import PkiDirectory

    pki = PkiDirectory(args.dir)
    try:
        if args.handler == "pki_init":
            path = pki.init(args.days)
            return f"CA created: {path} (its key {pki.ca_key_path} is 0600: keep it safe)"
        files = pki.issue(args.role, args.name, args.san, args.days)
    except PkiError as e:
        raise CliError(str(e), EXIT_USAGE) from None
    except OSError as e:
        raise CliError(f"{e.filename}: {e.strerror}") from None
    return (
        f"issued {os.path.basename(os.path.dirname(files.cert))} (role {args.role}):\n"
        f"  --tls-cacert {files.ca} --tls-cert {files.cert} --tls-key {files.key}"
    )
