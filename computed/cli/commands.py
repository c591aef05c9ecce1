"""One function per verb: build the request, call the scheduler, return a Result to show.

Commands never print their results (main renders them) so the formats stay uniform;
only progress (--wait) and per-item failures of multi-target verbs go to stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import grpc

from computed.api import compute_pb2, compute_pb2_grpc
from computed.cli import convert
from computed.cli import wait as waiting
from computed.cli.errors import EXIT_USAGE, CliError, rpc_message
from computed.cli.format import Result
from computed.mtls.credentials import TlsError, channel_credentials, check_pair, open_channel
from computed.tls_files import TlsFiles

DEADLINE = 30.0  # seconds for an ordinary request
CREATE_DEADLINE = 120.0  # create builds every instance before it answers


class Client:
    """The Compute stub plus what error messages need to know (address, deadline)."""

    def __init__(self, address: str, tls: TlsFiles | None) -> None:
        self.address = address
        self.tls = tls
        try:  # the pair is parsed only if a connection fails (see explain)
            creds = channel_credentials(tls, check=False) if tls is not None else None
        except TlsError as e:
            raise CliError(str(e), EXIT_USAGE) from None
        self.channel = open_channel(address, creds)
        self.stub = compute_pb2_grpc.ComputeStub(self.channel)

    def call(self, method: str, request: Any, deadline: float = DEADLINE) -> Any:
        try:
            return getattr(self.stub, method)(request, timeout=deadline)
        except grpc.RpcError as e:
            raise self.explain(e, deadline) from None

    def explain(self, e: grpc.RpcError, deadline: float) -> CliError:
        """The error to show for a failed call. A connection that failed may be our own
        certificate pair's fault (a key that is not the certificate's fails the handshake
        with no useful words): that is checked now, and named if so."""
        if self.tls is not None and e.code() == grpc.StatusCode.UNAVAILABLE:
            try:
                with open(self.tls.cert, "rb") as c, open(self.tls.key, "rb") as k:
                    check_pair(self.tls, c.read(), k.read())
            except TlsError as bad:
                return CliError(str(bad), EXIT_USAGE)
            except OSError:
                pass  # read once already; whatever changed, the RPC error says enough
        return CliError(rpc_message(e, self.address, deadline))

    def close(self) -> None:
        self.channel.close()


def _progress(text: str) -> None:
    print(f"computectl: waiting: {text}", file=sys.stderr, flush=True)


def _wait(api: Client, servers: list[Any], want: str, timeout: float) -> list[Any]:
    """`servers` once each is `want`. When the reply already says so (a create answers
    once its instances are built), there is nothing to watch: the watch would begin
    with those same states and end there, one stream and one scheduler scan later."""
    if servers and all(convert.status_name(s.instance.status) == want for s in servers):
        _progress(f"{len(servers)}/{len(servers)} {want}")  # as the watch would end
        return servers
    uuids = [s.instance.spec.uuid for s in servers]
    try:
        return waiting.watch(api.stub, uuids, want, timeout, _progress)
    except grpc.RpcError as e:
        raise api.explain(e, timeout) from None


def _servers(servers: list[Any], single: bool) -> Result:
    rows = [convert.server(s) for s in servers]
    if single and len(rows) == 1:
        return Result(rows, convert.server_show_columns(rows[0]), True, convert.SERVER_HUMAN)
    return Result(rows, convert.SERVER_LIST_COLUMNS, False, convert.SERVER_HUMAN)


def _server(server: Any) -> Result:
    return _servers([server], single=True)


# --- servers ---------------------------------------------------------------------
def server_create(api: Client, args: argparse.Namespace) -> Result:
    request = compute_pb2.CreateServersRequest(
        name=args.name,
        flavor=args.flavor,
        image=args.image,
        count=args.count,
        min_count=args.min_count or 0,
        availability_zone=args.az or "",
        group=args.group or "",
        cmdline=args.append or "",
    )
    servers = list(api.call("CreateServers", request, CREATE_DEADLINE).servers)
    if args.wait:
        servers = _wait(api, servers, "ACTIVE", args.timeout)
    return _servers(servers, single=args.count == 1)


def server_list(api: Client, args: argparse.Namespace) -> Result:
    request = compute_pb2.ListServersRequest(
        host=args.host or "", status=args.status or "", name=args.name or ""
    )
    rows = [convert.server(s) for s in api.call("ListServers", request).servers]
    return Result(rows, convert.SERVER_LIST_COLUMNS, False, convert.SERVER_HUMAN)


def server_show(api: Client, args: argparse.Namespace) -> Result:
    return _server(api.call("GetServer", compute_pb2.ServerRef(name_or_id=args.server)))


def server_delete(api: Client, args: argparse.Namespace) -> None:
    """Every named server is tried; each failure is reported, and any one fails the command."""
    failed = 0
    for name in args.servers:
        try:
            api.call("DeleteServer", compute_pb2.ServerRef(name_or_id=name))
        except CliError as e:
            failed += 1
            print(f"computectl: error: {name}: {e}", file=sys.stderr)
    if failed:
        raise CliError(f"{failed} of {len(args.servers)} servers not deleted")


def _action(method: str, want: str) -> Callable[[Client, argparse.Namespace], Result]:
    def run(api: Client, args: argparse.Namespace) -> Result:
        if method == "RebootServer":
            request = compute_pb2.RebootServerRequest(name_or_id=args.server, hard=args.hard)
        else:
            request = compute_pb2.ServerRef(name_or_id=args.server)
        server = api.call(method, request)
        if args.wait:
            server = _wait(api, [server], want, args.timeout)[0]
        return _server(server)

    run.__doc__ = f"{method}; with --wait, until the scheduler's record says {want}."
    return run


server_stop = _action("StopServer", "SHUTOFF")
server_start = _action("StartServer", "ACTIVE")
server_reboot = _action("RebootServer", "ACTIVE")
server_pause = _action("PauseServer", "PAUSED")
server_resume = _action("ResumeServer", "ACTIVE")


def server_console(api: Client, args: argparse.Namespace) -> str:
    request = compute_pb2.ConsoleOutputRequest(name_or_id=args.server, lines=args.lines)
    return api.call("GetConsoleOutput", request).output


# --- hosts -----------------------------------------------------------------------
def _host(host: Any) -> Result:
    return Result([convert.host(host)], convert.HOST_FIELDS, True, convert.HOST_HUMAN)


def host_list(api: Client, args: argparse.Namespace) -> Result:
    reply = api.call("ListHosts", compute_pb2.ListHostsRequest())
    for alarm in reply.store_alarms:  # on stderr: the table stays parseable
        print(f"computectl: WARNING: etcd alarm {alarm}: {STORE_ALARM_ADVICE}", file=sys.stderr)
    rows = [convert.host(h) for h in reply.hosts]
    return Result(rows, convert.HOST_LIST_COLUMNS, False, convert.HOST_HUMAN)


STORE_ALARM_ADVICE = (
    "etcd refuses every write (no create, delete, claim or lease) until an operator "
    "compacts, defragments and disarms it (docs/operations.md, 'etcd space')"
)


def host_show(api: Client, args: argparse.Namespace) -> Result:
    return _host(api.call("GetHost", compute_pb2.HostRef(host_id=args.host)))


def host_enable(api: Client, args: argparse.Namespace) -> Result:
    return _host(api.call("EnableHost", compute_pb2.HostRef(host_id=args.host)))


def host_disable(api: Client, args: argparse.Namespace) -> Result:
    request = compute_pb2.DisableHostRequest(host_id=args.host, reason=args.reason or "")
    return _host(api.call("DisableHost", request))


def host_evacuate(api: Client, args: argparse.Namespace) -> Result:
    reply = api.call("EvacuateHost", compute_pb2.HostRef(host_id=args.host), CREATE_DEADLINE)
    return _servers(list(reply.servers), single=False)


# --- flavors, images, server groups ----------------------------------------------
def flavor_list(api: Client, args: argparse.Namespace) -> Result:
    reply = api.call("ListFlavors", compute_pb2.ListFlavorsRequest())
    return Result([convert.flavor(f) for f in reply.flavors], convert.FLAVOR_FIELDS)


def flavor_create(api: Client, args: argparse.Namespace) -> Result:
    request = compute_pb2.Flavor(name=args.name, vcpus=args.vcpus, memory_mb=args.ram)
    return Result([convert.flavor(api.call("CreateFlavor", request))], convert.FLAVOR_FIELDS, True)


def flavor_delete(api: Client, args: argparse.Namespace) -> None:
    api.call("DeleteFlavor", compute_pb2.FlavorRef(name=args.flavor))


def image_list(api: Client, args: argparse.Namespace) -> Result:
    reply = api.call("ListImages", compute_pb2.ListImagesRequest())
    rows = [convert.image(i) for i in reply.images]
    return Result(rows, convert.IMAGE_LIST_COLUMNS, False, convert.IMAGE_HUMAN)


def image_show(api: Client, args: argparse.Namespace) -> Result:
    image = api.call("GetImage", compute_pb2.ImageRef(name=args.image))
    return Result([convert.image(image)], convert.IMAGE_FIELDS, True, convert.IMAGE_HUMAN)


UPLOAD_PIECE = 256 << 10  # bytes per upload message (gRPC's default limit is 4 MiB)
UPLOAD_DEADLINE = 300.0


def _upload_messages(name: str, properties: dict[str, str], data: bytes):
    header = compute_pb2.ImageUploadHeader(name=name, properties=properties)
    yield compute_pb2.ImageUpload(header=header, data=data[:UPLOAD_PIECE])
    for start in range(UPLOAD_PIECE, len(data), UPLOAD_PIECE):
        yield compute_pb2.ImageUpload(data=data[start : start + UPLOAD_PIECE])


def image_create(api: Client, args: argparse.Namespace) -> Result:
    try:
        with open(args.file, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CliError(f"cannot read {args.file}: {e.strerror}") from None
    properties = dict(args.properties)
    if len(properties) != len(args.properties):
        raise CliError("a --property key is given twice", EXIT_USAGE)
    messages = _upload_messages(args.name, properties, data)
    image = api.call("CreateImage", messages, UPLOAD_DEADLINE)
    return Result([convert.image(image)], convert.IMAGE_FIELDS, True, convert.IMAGE_HUMAN)


def image_delete(api: Client, args: argparse.Namespace) -> None:
    """Every named image is tried; each failure is reported, and any one fails the command."""
    failed = 0
    for name in args.images:
        try:
            api.call("DeleteImage", compute_pb2.DeleteImageRequest(name=name, force=args.force))
        except CliError as e:
            failed += 1
            print(f"computectl: error: {name}: {e}", file=sys.stderr)
    if failed:
        raise CliError(f"{failed} of {len(args.images)} images not deleted")


_POLICY = {
    "affinity": compute_pb2.GROUP_POLICY_AFFINITY,
    "anti-affinity": compute_pb2.GROUP_POLICY_ANTI_AFFINITY,
}


def server_group_create(api: Client, args: argparse.Namespace) -> Result:
    request = compute_pb2.CreateServerGroupRequest(
        name=args.name, policy=_POLICY[args.policy], soft=args.soft
    )
    group = api.call("CreateServerGroup", request)
    return Result([convert.group(group)], convert.GROUP_FIELDS, True, convert.GROUP_HUMAN)


def server_group_list(api: Client, args: argparse.Namespace) -> Result:
    reply = api.call("ListServerGroups", compute_pb2.ListServerGroupsRequest())
    rows = [convert.group(g) for g in reply.groups]
    return Result(rows, convert.GROUP_FIELDS, False, convert.GROUP_HUMAN)


def server_group_delete(api: Client, args: argparse.Namespace) -> None:
    for name in args.groups:
        api.call("DeleteServerGroup", compute_pb2.ServerGroupRef(name_or_id=name))


def server_event_list(api: Client, args: argparse.Namespace) -> Result:
    reply = api.call("ListServerEvents", compute_pb2.ServerRef(name_or_id=args.server))
    rows = [convert.event(e) for e in reply.events]
    return Result(rows, convert.EVENT_FIELDS, False, {})


def top(api: Client, args: argparse.Namespace) -> str:
    from computed.cli import top as top_view  # rich loads only for top

    return top_view.run(api, args)
