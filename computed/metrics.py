"""The Prometheus /metrics endpoint every agent and scheduler serves (prometheus-client).

`--metrics-address host:port` says where; `0` (or an empty value) turns it off.
An address given explicitly that cannot be bound stops the daemon at start, like
`--listen`; the default address that cannot be bound (another daemon on this machine
has it) only warns, so a second daemon on a test machine still starts.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
from collections.abc import Iterable
from wsgiref.simple_server import WSGIRequestHandler

from prometheus_client import REGISTRY, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

log = logging.getLogger("computed.metrics")

SCHEDULER_DEFAULT = "127.0.0.1:9774"  # beside the scheduler's gRPC port 8774
AGENT_DEFAULT_PORT = 9775  # on the agent's --listen host, beside its gRPC port 8775


class MetricsAddressError(ValueError):
    """The metrics address cannot be used; the message names it."""


def parse_address(text: str) -> tuple[str, int] | None:
    """(host, port) from `host:port` (`[v6]:port` too); None for `0` or empty: off."""
    text = text.strip()
    if text in ("", "0"):
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise MetricsAddressError(f"--metrics-address {text!r}: use host:port, or 0 to disable")
    return host.strip("[]") or "0.0.0.0", int(port)


def agent_default(listen: str) -> str:
    """The agent's default metrics address: its gRPC host, port 9775."""
    host = listen.rpartition(":")[0] or "127.0.0.1"
    return f"{host}:{AGENT_DEFAULT_PORT}"


def serve(address: str, collectors: Iterable[Collector] = (), explicit: bool = True) -> str | None:
    """Start serving /metrics on `address` in a daemon thread; the URL, or None when off
    (or, for a default address, when it cannot be bound). `collectors` join the
    process-wide registry (the process, platform and module-level metrics)."""
    where = parse_address(address)
    if where is None:
        return None  # off: nothing registered (a hollow-host process runs many agents)
    host, port = where
    try:
        _start_server(host, port)
    except OSError as e:
        if explicit:
            raise MetricsAddressError(f"--metrics-address {address}: {e.strerror}") from None
        log.warning("no /metrics: cannot listen on %s (%s)", address, e.strerror)
        return None
    for collector in collectors:
        REGISTRY.register(collector)
    url = f"http://{address}/metrics"
    log.info("metrics on %s", url)
    return url


class _MetricsServer(ThreadingWSGIServer):
    """prometheus-client's server, but binding without looking the address's name up.

    http.server's server_bind calls socket.getfqdn(address): a reverse DNS query that,
    where the host's resolver does not answer (an agent in a network namespace; a host
    whose DNS is down), held every agent's start for 10 s. WSGI needs no such name."""

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), port
        self.setup_environ()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Scrapes are not worth a log line each."""


def _start_server(host: str, port: int) -> None:
    """Serve the registry on (host, port) from a daemon thread; OSError if it cannot bind."""
    server_class = type(
        "MetricsServer",
        (_MetricsServer,),
        {"address_family": socket.AF_INET6 if ":" in host else socket.AF_INET},
    )
    server = server_class((host, port), _QuietHandler)
    server.set_app(make_wsgi_app(REGISTRY))
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
