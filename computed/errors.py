"""The failures a user of computed can meet, each naming the gRPC status it travels as.

The agent and the scheduler raise these (or their own subclasses, whose names say
more) from plain Python code that knows nothing of gRPC; `computed.grpc_status`
turns them into status codes in one place. The status is a name, not a
`grpc.StatusCode`, so that pure modules (the placement core, validation) can
raise them without importing grpc.
"""

from __future__ import annotations


class ComputedError(Exception):
    """A failure with words meant for the user; `grpc_status` is how it travels."""

    grpc_status = "INTERNAL"


class Invalid(ComputedError, ValueError):
    """A request field is wrong; names the field."""

    grpc_status = "INVALID_ARGUMENT"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class NotFound(ComputedError, LookupError):
    grpc_status = "NOT_FOUND"


class AlreadyExists(ComputedError):
    """The name is taken, or the thing is still in use."""

    grpc_status = "ALREADY_EXISTS"


class Refused(ComputedError):
    """The request cannot be done in the current state (of the instance, host or cluster)."""

    grpc_status = "FAILED_PRECONDITION"


class Exhausted(ComputedError):
    """Not enough of something: room on a host, hosts that fit, free addresses."""

    grpc_status = "RESOURCE_EXHAUSTED"


class Unavailable(ComputedError):
    """A service the request needs (etcd, an agent) cannot be reached; try again."""

    grpc_status = "UNAVAILABLE"
