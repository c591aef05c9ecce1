from computed.api import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SpawnRequest(_message.Message):
    __slots__ = ("spec", "placed")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    PLACED_FIELD_NUMBER: _ClassVar[int]
    spec: _types_pb2.InstanceSpec
    placed: bool
    def __init__(self, spec: _Optional[_Union[_types_pb2.InstanceSpec, _Mapping]] = ..., placed: _Optional[bool] = ...) -> None: ...

class StopRequest(_message.Message):
    __slots__ = ("uuid", "timeout_seconds")
    UUID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    timeout_seconds: float
    def __init__(self, uuid: _Optional[str] = ..., timeout_seconds: _Optional[float] = ...) -> None: ...

class RebootRequest(_message.Message):
    __slots__ = ("uuid", "hard")
    UUID_FIELD_NUMBER: _ClassVar[int]
    HARD_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    hard: bool
    def __init__(self, uuid: _Optional[str] = ..., hard: _Optional[bool] = ...) -> None: ...

class InstanceRef(_message.Message):
    __slots__ = ("uuid",)
    UUID_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    def __init__(self, uuid: _Optional[str] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListResponse(_message.Message):
    __slots__ = ("instances",)
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    instances: _containers.RepeatedCompositeFieldContainer[_types_pb2.Instance]
    def __init__(self, instances: _Optional[_Iterable[_Union[_types_pb2.Instance, _Mapping]]] = ...) -> None: ...

class ConsoleRequest(_message.Message):
    __slots__ = ("uuid", "lines")
    UUID_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    lines: int
    def __init__(self, uuid: _Optional[str] = ..., lines: _Optional[int] = ...) -> None: ...

class ConsoleResponse(_message.Message):
    __slots__ = ("output",)
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    output: str
    def __init__(self, output: _Optional[str] = ...) -> None: ...

class HostInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
