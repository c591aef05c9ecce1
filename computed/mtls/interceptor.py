"""The server interceptor that enforces an access table (computed/mtls/access.py).

Servicers stay free of auth code: every handler is wrapped here, and the wrapper
checks the caller's role (from its verified client certificate) before the
servicer runs, answering PERMISSION_DENIED with the role the method needs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc

from computed.caller import caller_of
from computed.mtls.access import AccessTable, refusal

log = logging.getLogger("computed.mtls")


class RoleInterceptor(grpc.ServerInterceptor):
    def __init__(self, table: AccessTable) -> None:
        self.table = table

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None:
            return None  # no such method: gRPC answers UNIMPLEMENTED
        return _guarded(handler, self.table, details.method)


def _guarded(
    handler: grpc.RpcMethodHandler, table: AccessTable, method: str
) -> grpc.RpcMethodHandler:
    """The same handler, with the role check in front of whichever behaviour it has."""

    def check(context: grpc.ServicerContext) -> None:
        caller = caller_of(context)
        why = refusal(table, method, caller.role)
        if why is not None:
            log.warning(
                "refused %s to %s (role %s)", method, caller.identity or "?", caller.role or "none"
            )
            context.abort(grpc.StatusCode.PERMISSION_DENIED, why)

    def wrap(behaviour: Callable[..., Any]) -> Callable[..., Any]:
        def guarded(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
            check(context)
            return behaviour(request_or_iterator, context)

        return guarded

    def wrap_stream(behaviour: Callable[..., Any]) -> Callable[..., Any]:
        def guarded(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
            check(context)  # before the first message: nothing is streamed to a refused caller
            yield from behaviour(request_or_iterator, context)

        return guarded

    kinds = (
        ("unary_unary", grpc.unary_unary_rpc_method_handler, wrap),
        ("unary_stream", grpc.unary_stream_rpc_method_handler, wrap_stream),
        ("stream_unary", grpc.stream_unary_rpc_method_handler, wrap),
        ("stream_stream", grpc.stream_stream_rpc_method_handler, wrap_stream),
    )
    for attr, make, wrapper in kinds:
        behaviour = getattr(handler, attr)
        if behaviour is not None:
            return make(
                wrapper(behaviour),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler
