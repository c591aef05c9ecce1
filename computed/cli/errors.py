"""Failures → one line for the operator and an exit status. Pure (no grpc import needed).

The scheduler already puts the field and the reason in its status details; what the CLI
adds is words for the transport failures (nobody listening, no answer in time).
"""

from __future__ import annotations

from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1  # the request was refused or failed
EXIT_USAGE = 2  # argparse's own status for a bad command line
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C


class CliError(Exception):
    """A failure to report as `computectl: error: <message>` and exit with `status`."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status


# grpc.StatusCode names → a short prefix saying what kind of failure it was.
_PREFIX = {
    "INVALID_ARGUMENT": "invalid request",
    "NOT_FOUND": "not found",
    "ALREADY_EXISTS": "already exists",
    "RESOURCE_EXHAUSTED": "no valid host",
    "FAILED_PRECONDITION": "refused",
    "PERMISSION_DENIED": "permission denied",
    "UNIMPLEMENTED": "not supported by this scheduler",
    "INTERNAL": "scheduler internal error",
}

_CONNECT_WORDS = (
    (
        "handshake",
        "the TLS handshake failed (a plaintext scheduler, or a certificate its CA "
        "did not sign or that has expired?)",
    ),
    (
        "ssl",
        "the TLS handshake failed (a plaintext scheduler, or a certificate its CA "
        "did not sign or that has expired?)",
    ),
    ("connection refused", "connection refused"),
    ("dns resolution failed", "cannot resolve the address"),
    ("name resolution", "cannot resolve the address"),
    ("no route to host", "no route to host"),
    ("network is unreachable", "network unreachable"),
    ("connection reset", "connection reset"),
    ("timeout occurred", "connection timed out"),
    ("connection timed out", "connection timed out"),
    ("socket closed", "connection closed"),
    ("failed to connect", "connection failed"),
)


def one_line(text: str) -> str:
    """Details from the server may hold newlines; the operator gets one line."""
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())


def rpc_message(err: Any, address: str, deadline: float | None = None) -> str:
    """A grpc.RpcError (anything with code() and details()) → the line to print."""
    code = err.code()
    name = getattr(code, "name", str(code))
    details = one_line(err.details() or "")
    if name == "UNAVAILABLE":
        lowered = details.lower()
        for needle, words in _CONNECT_WORDS:
            if needle in lowered:
                return f"cannot reach the scheduler at {address}: {words}"
        return f"scheduler at {address} unavailable: {details or 'no details'}"
    if name == "DEADLINE_EXCEEDED":
        within = f" within {deadline:g} s" if deadline else " in time"
        return f"the scheduler at {address} did not answer{within}"
    if name == "CANCELLED":
        return "request cancelled"
    prefix = _PREFIX.get(name, name.lower().replace("_", " "))
    if not details:
        return prefix
    # "not found: server 'x' not found" says it twice: the server's words are enough.
    return details if prefix.lower() in details.lower() else f"{prefix}: {details}"
