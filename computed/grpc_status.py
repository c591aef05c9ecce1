"""Errors → gRPC status codes, in one place for every servicer (the agent's and the
scheduler's).

A servicer method wrapped with `@maps_errors` raises `computed.errors` types;
the client sees the status the error names and the error's own words as
details. An answer from a service this one called (the scheduler calling an
agent) is passed on with its code. Anything unexpected is INTERNAL with a
one-line message; the traceback goes to the daemon's log, not to the client.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from computed.errors import ComputedError

log = logging.getLogger("computed.grpc")

F = TypeVar("F", bound=Callable[..., Any])


def status_for(error: BaseException) -> grpc.StatusCode | None:
    """The status a computed error travels as; None for anything else (a bug)."""
    if isinstance(error, ComputedError):
        return grpc.StatusCode[error.grpc_status]
    return None


def maps_errors(method: F) -> F:
    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except grpc.RpcError as e:  # a downstream agent's answer: pass its code and words on
            context.abort(e.code(), f"agent: {e.details()}")
        except Exception as e:
            code = status_for(e)
            if code is None:
                log.exception("%s failed", method.__name__)
                context.abort(grpc.StatusCode.INTERNAL, f"{method.__name__}: internal error: {e}")
            context.abort(code, str(e))

    return wrapper  # type: ignore[return-value]
