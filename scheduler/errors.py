"""Scheduler errors → gRPC status codes, in one place for the whole Compute service."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from computed.store.errors import StoreUnavailable
from scheduler.catalog import CatalogConflict, CatalogError, CatalogNotFound
from scheduler.claims import Overcommit

log = logging.getLogger("computed.scheduler")


class Invalid(ValueError):
    """INVALID_ARGUMENT naming the field."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")


class NotFound(LookupError):
    pass


class Refused(Exception):
    """FAILED_PRECONDITION: the request cannot be done in the cluster's current state."""


class NoValidHost(Exception):
    """RESOURCE_EXHAUSTED: no host (or not enough hosts) fits; says why per filter."""


CODES: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (Invalid, grpc.StatusCode.INVALID_ARGUMENT),
    (CatalogError, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (CatalogNotFound, grpc.StatusCode.NOT_FOUND),
    (CatalogConflict, grpc.StatusCode.ALREADY_EXISTS),
    (Refused, grpc.StatusCode.FAILED_PRECONDITION),
    (NoValidHost, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Overcommit, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (StoreUnavailable, grpc.StatusCode.UNAVAILABLE),
)

F = TypeVar("F", bound=Callable[..., Any])


def maps_errors(method: F) -> F:
    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except grpc.RpcError as e:  # an agent's answer: pass its code and words on
            context.abort(e.code(), f"agent: {e.details()}")
        except Exception as e:
            for kind, code in CODES:
                if isinstance(e, kind):
                    context.abort(code, str(e))
            log.exception("%s failed", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"{method.__name__}: internal error: {e}")

    return wrapper  # type: ignore[return-value]
