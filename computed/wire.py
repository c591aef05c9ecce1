"""InstanceSpec between its etcd record and its gRPC message, for agent and scheduler alike.

The record mirrors the message field for field, so the conversion is by
name: a field added to both (as ip/gateway/mac were) needs no code here.
"""

from __future__ import annotations

import dataclasses

from computed.api import types_pb2
from computed.store.records import InstanceSpec

_FIELDS = tuple(f.name for f in dataclasses.fields(InstanceSpec))


def spec_to_proto(spec: InstanceSpec) -> types_pb2.InstanceSpec:
    return types_pb2.InstanceSpec(**{name: getattr(spec, name) for name in _FIELDS})


def spec_from_proto(message: types_pb2.InstanceSpec) -> InstanceSpec:
    return InstanceSpec(**{name: getattr(message, name) for name in _FIELDS})
