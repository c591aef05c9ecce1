"""Domain errors → gRPC status codes, in one place for every servicer.

A servicer method wrapped with `@maps_errors` raises the domain's own
exceptions; the client sees a status code that means what it says and the
exception's message as details. Anything unexpected is INTERNAL with a
one-line message (the traceback goes to the agent's log, not the client).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from agent.instance_state import ActionRefused
from agent.supervisor import HostFull, NotFound
from agent.validation import InvalidField

log = logging.getLogger("computed.agent")

CODES: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (InvalidField, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (ActionRefused, grpc.StatusCode.FAILED_PRECONDITION),
    (HostFull, grpc.StatusCode.RESOURCE_EXHAUSTED),
)

F = TypeVar("F", bound=Callable[..., Any])


def status_for(error: BaseException) -> grpc.StatusCode | None:
    for kind, code in CODES:
        if isinstance(error, kind):
            return code
    return None


def maps_errors(method: F) -> F:
    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except Exception as e:
            code = status_for(e)
            if code is None:
                log.exception("%s failed", method.__name__)
                context.abort(grpc.StatusCode.INTERNAL, f"{method.__name__}: internal error: {e}")
            context.abort(code, str(e))

    return wrapper  # type: ignore[return-value]
