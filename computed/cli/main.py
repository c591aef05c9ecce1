"""computectl: parse the command line, run one verb, print its result, map failures to exits.

Parsing is pure and imports nothing heavy; grpc and the generated modules load only once a
command is actually going to talk to the scheduler. Every way out is a one-line message and
an exit status (0 ok, 1 failed request, 2 usage, 130 Ctrl-C), never a traceback.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sys
import threading
from collections.abc import Sequence

from computed.cli import convert, pki
from computed.cli.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, CliError
from computed.cli.format import FORMATS, FormatError, Result, render, select_columns
from computed.cli.tls import client_tls

DEFAULT_SCHEDULER = "127.0.0.1:8774"
ENV_SCHEDULER = "COMPUTED_SCHEDULER"
DEFAULT_WAIT_TIMEOUT = 300.0
# computectl top's keys and sort columns (computed/cli/top_model.py, kept light: no rich here).
TOP_KEYS = "q quit, < > sort column, r reverse, P cpu, M memory, N name, h host, s status, c clear"
TOP_SORTS = (
    "name", "host", "status", "vcpus", "cpu_percent", "vcpu_time_ns", "vcpu_percent",
    "kvm_pit_time_ns", "kvm_pit_percent", "vhost_time_ns", "vhost_percent", "memory_rss",
)  # fmt: skip


def _int_at_least(minimum: int, why: str):
    """An argparse type: an integer >= minimum, else a one-line usage error."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{why}: {text!r}")
        return value

    convert.__name__ = "integer"
    return convert


positive_int = _int_at_least(1, "must be at least 1")
non_negative_int = _int_at_least(0, "must not be negative")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _status(text: str) -> str:
    value = text.upper()
    if value not in convert.STATUSES:
        raise argparse.ArgumentTypeError(
            f"unknown status {text!r} (choose from: {', '.join(convert.STATUSES)})"
        )
    return value


def _property(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


@functools.cache
def _common(output: bool) -> argparse.ArgumentParser:
    """Options every leaf command takes; SUPPRESS keeps a top-level --scheduler from being reset.
    One parent per kind, shared by every leaf (argparse copies its actions in)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--scheduler", default=argparse.SUPPRESS, metavar="HOST:PORT", help=argparse.SUPPRESS
    )
    _tls_flags(p, argparse.SUPPRESS)
    if output:
        g = p.add_argument_group("output")
        g.add_argument("-f", "--format", choices=FORMATS, default="table", help="output format")
        g.add_argument(
            "-c",
            "--column",
            dest="columns",
            action="append",
            default=[],
            metavar="FIELD",
            help="show only this field (repeatable)",
        )
    return p


def _waiting(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--wait", action="store_true", help=f"return only once {what}")
    p.add_argument(
        "--timeout",
        type=positive_float,
        default=DEFAULT_WAIT_TIMEOUT,
        metavar="SECONDS",
        help=f"give up waiting after this long (default {DEFAULT_WAIT_TIMEOUT:g})",
    )


def _tls_flags(p: argparse.ArgumentParser, default: object) -> None:
    """--os-cacert/--os-cert/--os-key/--insecure (hidden again on each leaf command)."""
    shown = default is None
    for name, env, what in (("cacert", "OS_CACERT", "the cluster CA"),
                            ("cert", "OS_CERT", "your certificate"),
                            ("key", "OS_KEY", "its private key")):  # fmt: skip
        why = f"{what} (default: ${env}, else ~/.config/computed/)"
        p.add_argument(
            f"--os-{name}", default=default, metavar="PEM",
            help=why if shown else argparse.SUPPRESS,
        )  # fmt: skip
    why = "plaintext, no certificate (a scheduler started with --insecure)"
    p.add_argument(
        "--insecure", action="store_true", default=default if not shown else False,
        help=why if shown else argparse.SUPPRESS,
    )  # fmt: skip


class _Verbs:
    """Adds the verbs of one resource, recording which handler and field set each one uses."""

    def __init__(self, top: argparse._SubParsersAction, resource: str, help: str) -> None:
        self.resource = resource
        parser = top.add_parser(resource, help=help, description=help)
        self.sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    def add(
        self, verb: str, help: str, output: bool = True, fields: str | None = None
    ) -> argparse.ArgumentParser:
        p = self.sub.add_parser(verb, help=help, description=help, parents=[_common(output)])
        handler = f"{self.resource}_{verb}".replace("-", "_")
        p.set_defaults(handler=handler, fields=(fields or self.resource) if output else None)
        return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="computectl",
        description="Operate a computed cluster through its scheduler's public API.",
    )
    parser.add_argument(
        "--scheduler",
        metavar="HOST:PORT",
        help=f"the scheduler's address (default: ${ENV_SCHEDULER}, else {DEFAULT_SCHEDULER})",
    )
    _tls_flags(parser, None)
    top = parser.add_subparsers(dest="resource", metavar="RESOURCE", required=True)

    server = _Verbs(top, "server", "servers (instances)")
    p = server.add("create", "create one or more servers")
    p.add_argument("name", help="display name; NAME-1..NAME-N when --count > 1")
    p.add_argument("--flavor", required=True, help="e.g. m1.tiny")
    p.add_argument("--image", required=True, help="e.g. heartbeat")
    p.add_argument("--count", type=positive_int, default=1, help="how many (default 1)")
    p.add_argument("--min-count", type=positive_int, help="accept as few as this many")
    p.add_argument("--group", help="server group name or id")
    p.add_argument("--az", help="availability zone")
    p.add_argument("--append", metavar="CMDLINE", help="the guest's kernel command line")
    _waiting(p, "every server is ACTIVE")
    p = server.add("list", "list servers")
    p.add_argument("--host", help="only servers on this host")
    p.add_argument("--status", type=_status, help="only servers in this status")
    p.add_argument("--name", help="only servers whose name contains this")
    server.add("show", "show one server in detail").add_argument("server", metavar="NAME_OR_ID")
    p = server.add("delete", "delete servers", output=False)
    p.add_argument("servers", nargs="+", metavar="NAME_OR_ID")
    for verb, want in (
        ("stop", "SHUTOFF"),
        ("start", "ACTIVE"),
        ("reboot", "ACTIVE"),
        ("pause", "PAUSED"),
        ("resume", "ACTIVE"),
    ):
        p = server.add(verb, f"{verb} a server")
        p.add_argument("server", metavar="NAME_OR_ID")
        if verb == "reboot":
            p.add_argument("--hard", action="store_true", help="restart the VMM, not the guest")
        _waiting(p, f"the server is {want}")
    p = server.add("console", "print the end of a server's console output", output=False)
    p.add_argument("server", metavar="NAME_OR_ID")
    p.add_argument("--lines", type=non_negative_int, default=0, help="last N lines (0: all)")

    p = server.sub.add_parser("event", help="a server's action log (create, stop, crash, ...)")
    events = p.add_subparsers(dest="event_verb", metavar="VERB", required=True)
    p = events.add_parser("list", help="list a server's actions, oldest first",
                          parents=[_common(True)])  # fmt: skip
    p.set_defaults(handler="server_event_list", fields="event")
    p.add_argument("server", metavar="NAME_OR_ID", help="also a deleted server, for a day")

    p = top.add_parser("top", help="the cluster live: hosts and instances, like virt-top",
                       description="The cluster live. Keys: " + TOP_KEYS)  # fmt: skip
    p.set_defaults(handler="top", fields=None, columns=[])
    p.add_argument("--scheduler", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.add_argument("-n", "--iterations", type=positive_int, metavar="N",
                   help="print N snapshots and exit (default: live view on a terminal, "
                   "else one snapshot)")  # fmt: skip
    p.add_argument("-d", "--delay", type=positive_float, default=1.0, metavar="SECONDS",
                   help="between snapshots (default 1; at least 0.5)")  # fmt: skip
    p.add_argument("-f", "--format", choices=("table", "json"), default="table")
    p.add_argument("--sort", choices=TOP_SORTS, default="cpu_percent", help="sort column")
    p.add_argument("--host", help="only this host's instances")
    p.add_argument("--status", type=_status, help="only instances in this status")

    host = _Verbs(top, "host", "compute hosts")
    host.add("list", "list hosts")
    for verb, help in (
        ("show", "show one host"),
        ("enable", "let the scheduler place servers on a host again"),
        ("disable", "stop placing servers on a host"),
    ):
        p = host.add(verb, help)
        p.add_argument("host", metavar="HOST_ID")
    p.add_argument("--reason", help="why (shown in host show)")
    p = host.add("evacuate", "rebuild a down host's servers elsewhere", fields="server")
    p.add_argument("host", metavar="HOST_ID")

    flavor = _Verbs(top, "flavor", "flavors (server sizes)")
    flavor.add("list", "list flavors")
    p = flavor.add("create", "create a flavor")
    p.add_argument("name")
    p.add_argument("--vcpus", type=positive_int, required=True)
    p.add_argument("--ram", type=positive_int, required=True, metavar="MB")
    flavor.add("delete", "delete a flavor", output=False).add_argument("flavor", metavar="NAME")

    image = _Verbs(top, "image", "guest images")
    image.add("list", "list images")
    image.add("show", "show one image").add_argument("image", metavar="NAME")
    p = image.add("create", "upload a guest image (an ELF built with computed-guest-cc)")
    p.add_argument("name")
    p.add_argument("--file", required=True, metavar="PATH", help="the image file to upload")
    p.add_argument(
        "--property", dest="properties", action="append", type=_property, default=[],
        metavar="KEY=VALUE",
        help="repeatable; trait:<TRAIT>=required and min_ram=<MiB> steer placement",
    )  # fmt: skip
    p = image.add("delete", "delete uploaded images", output=False)
    p.add_argument("images", nargs="+", metavar="NAME")
    p.add_argument("--force", action="store_true", help="even while servers use it")

    pki.add_verbs(top)

    group = _Verbs(top, "server-group", "server groups ((anti-)affinity)")
    p = group.add("create", "create a server group")
    p.add_argument("name")
    p.add_argument("--policy", choices=("affinity", "anti-affinity"), required=True)
    p.add_argument("--soft", action="store_true", help="preferred, never refused")
    group.add("list", "list server groups")
    p = group.add("delete", "delete server groups", output=False)
    p.add_argument("groups", nargs="+", metavar="NAME_OR_ID")
    return parser


def scheduler_address(flag: str | None, environ: dict[str, str] | os._Environ[str]) -> str:
    """--scheduler, else $COMPUTED_SCHEDULER, else the default port on loopback."""
    return flag or environ.get(ENV_SCHEDULER) or DEFAULT_SCHEDULER


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check everything that can be checked before a request is sent (exit 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "min_count", None) and args.min_count > args.count:
        parser.error(f"--min-count {args.min_count} is more than --count {args.count}")
    if args.fields and getattr(args, "columns", None):
        try:
            select_columns(args.columns, convert.FIELDS[args.fields])
        except FormatError as e:
            parser.error(str(e))
    return args


def execute(args: argparse.Namespace) -> int:
    if getattr(args, "local", False):
        print(pki.run(args))
        return 0
    # gRPC's C core logs to stderr; computectl says what failed in one line of its own
    # (GRPC_VERBOSITY=ERROR in the environment brings the core's logs back).
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    if args.handler != "top":  # top restores its screen through its own ^C handling
        _take_ctrl_c_in_a_thread()
    from computed.cli import commands  # grpc loads here, not for --help or usage errors

    flags = {"cacert": args.os_cacert, "cert": args.os_cert, "key": args.os_key}
    tls = client_tls(flags, args.insecure, os.environ)
    api = commands.Client(scheduler_address(args.scheduler, os.environ), tls)
    try:
        result = getattr(commands, args.handler)(api, args)
    finally:
        api.close()
    if isinstance(result, Result):
        try:
            text = render(result, args.format, args.columns)
        except FormatError as e:
            raise CliError(str(e), EXIT_USAGE) from None
        if text:
            print(text)
    elif isinstance(result, str) and result:
        sys.stdout.write(result if result.endswith("\n") else result + "\n")
    sys.stdout.flush()
    return 0


def run(argv: Sequence[str] | None = None) -> int:
    """The exit status for one invocation; never raises (but argparse's SystemExit)."""
    try:
        return execute(parse(argv))
    except CliError as e:
        print(f"computectl: error: {e}", file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        print("computectl: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader left (computectl ... | head): stop quietly, and keep Python's
        # shutdown flush from failing on the closed pipe again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
    except Exception as e:  # a bug, or a failure nobody foresaw: still one line
        print(f"computectl: error: unexpected {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAILED


def _take_ctrl_c_in_a_thread() -> None:
    """From here on, ^C is taken by a thread of ours that says so and exits 130 at once.
    SIGINT is blocked first, so every thread gRPC starts later inherits the block: a
    SIGINT the kernel handed to one of gRPC's poller threads could abort the process
    (SIGABRT after "epoll_wait error: Bad file descriptor", about one ^C in 30)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})

    def wait_for_ctrl_c() -> None:
        signal.sigwait({signal.SIGINT})
        print("computectl: interrupted", file=sys.stderr, flush=True)
        os._exit(EXIT_INTERRUPTED)

    threading.Thread(target=wait_for_ctrl_c, name="ctrl-c", daemon=True).start()


def main() -> None:
    sys.exit(run())
