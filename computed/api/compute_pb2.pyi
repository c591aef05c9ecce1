from computed.api import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GroupPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GROUP_POLICY_UNSPECIFIED: _ClassVar[GroupPolicy]
    GROUP_POLICY_AFFINITY: _ClassVar[GroupPolicy]
    GROUP_POLICY_ANTI_AFFINITY: _ClassVar[GroupPolicy]
GROUP_POLICY_UNSPECIFIED: GroupPolicy
GROUP_POLICY_AFFINITY: GroupPolicy
GROUP_POLICY_ANTI_AFFINITY: GroupPolicy

class Flavor(_message.Message):
    __slots__ = ("name", "vcpus", "memory_mb")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VCPUS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    name: str
    vcpus: int
    memory_mb: int
    def __init__(self, name: _Optional[str] = ..., vcpus: _Optional[int] = ..., memory_mb: _Optional[int] = ...) -> None: ...

class FlavorRef(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListFlavorsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListFlavorsResponse(_message.Message):
    __slots__ = ("flavors",)
    FLAVORS_FIELD_NUMBER: _ClassVar[int]
    flavors: _containers.RepeatedCompositeFieldContainer[Flavor]
    def __init__(self, flavors: _Optional[_Iterable[_Union[Flavor, _Mapping]]] = ...) -> None: ...

class DeleteFlavorResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Image(_message.Message):
    __slots__ = ("name", "path", "min_memory_mb", "required_traits", "bundled", "digest", "size", "properties", "used_by", "created_at")
    class PropertiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    MIN_MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_TRAITS_FIELD_NUMBER: _ClassVar[int]
    BUNDLED_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    USED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    path: str
    min_memory_mb: int
    required_traits: _containers.RepeatedScalarFieldContainer[str]
    bundled: bool
    digest: str
    size: int
    properties: _containers.ScalarMap[str, str]
    used_by: _containers.RepeatedScalarFieldContainer[str]
    created_at: float
    def __init__(self, name: _Optional[str] = ..., path: _Optional[str] = ..., min_memory_mb: _Optional[int] = ..., required_traits: _Optional[_Iterable[str]] = ..., bundled: _Optional[bool] = ..., digest: _Optional[str] = ..., size: _Optional[int] = ..., properties: _Optional[_Mapping[str, str]] = ..., used_by: _Optional[_Iterable[str]] = ..., created_at: _Optional[float] = ...) -> None: ...

class ImageUpload(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: ImageUploadHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[ImageUploadHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ImageUploadHeader(_message.Message):
    __slots__ = ("name", "properties")
    class PropertiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    name: str
    properties: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., properties: _Optional[_Mapping[str, str]] = ...) -> None: ...

class DeleteImageRequest(_message.Message):
    __slots__ = ("name", "force")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    force: bool
    def __init__(self, name: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class DeleteImageResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ImageRef(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListImagesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListImagesResponse(_message.Message):
    __slots__ = ("images",)
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[Image]
    def __init__(self, images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ...) -> None: ...

class ServerGroup(_message.Message):
    __slots__ = ("id", "name", "policy", "soft", "members")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SOFT_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    policy: GroupPolicy
    soft: bool
    members: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., policy: _Optional[_Union[GroupPolicy, str]] = ..., soft: _Optional[bool] = ..., members: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateServerGroupRequest(_message.Message):
    __slots__ = ("name", "policy", "soft")
    NAME_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SOFT_FIELD_NUMBER: _ClassVar[int]
    name: str
    policy: GroupPolicy
    soft: bool
    def __init__(self, name: _Optional[str] = ..., policy: _Optional[_Union[GroupPolicy, str]] = ..., soft: _Optional[bool] = ...) -> None: ...

class ServerGroupRef(_message.Message):
    __slots__ = ("name_or_id",)
    NAME_OR_ID_FIELD_NUMBER: _ClassVar[int]
    name_or_id: str
    def __init__(self, name_or_id: _Optional[str] = ...) -> None: ...

class ListServerGroupsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListServerGroupsResponse(_message.Message):
    __slots__ = ("groups",)
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[ServerGroup]
    def __init__(self, groups: _Optional[_Iterable[_Union[ServerGroup, _Mapping]]] = ...) -> None: ...

class DeleteServerGroupResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Server(_message.Message):
    __slots__ = ("instance", "flavor", "availability_zone", "group", "host_status", "stats", "name")
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    FLAVOR_FIELD_NUMBER: _ClassVar[int]
    AVAILABILITY_ZONE_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    HOST_STATUS_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    instance: _types_pb2.Instance
    flavor: str
    availability_zone: str
    group: str
    host_status: str
    stats: ServerStats
    name: str
    def __init__(self, instance: _Optional[_Union[_types_pb2.Instance, _Mapping]] = ..., flavor: _Optional[str] = ..., availability_zone: _Optional[str] = ..., group: _Optional[str] = ..., host_status: _Optional[str] = ..., stats: _Optional[_Union[ServerStats, _Mapping]] = ..., name: _Optional[str] = ...) -> None: ...

class ServerStats(_message.Message):
    __slots__ = ("cpu_percent", "cpu_time_ns", "memory_rss", "helpers", "sampled_at")
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    CPU_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_RSS_FIELD_NUMBER: _ClassVar[int]
    HELPERS_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_AT_FIELD_NUMBER: _ClassVar[int]
    cpu_percent: float
    cpu_time_ns: int
    memory_rss: int
    helpers: _containers.RepeatedCompositeFieldContainer[HelperThread]
    sampled_at: float
    def __init__(self, cpu_percent: _Optional[float] = ..., cpu_time_ns: _Optional[int] = ..., memory_rss: _Optional[int] = ..., helpers: _Optional[_Iterable[_Union[HelperThread, _Mapping]]] = ..., sampled_at: _Optional[float] = ...) -> None: ...

class HelperThread(_message.Message):
    __slots__ = ("name", "pid", "cpu_time_ns")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    CPU_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    name: str
    pid: int
    cpu_time_ns: int
    def __init__(self, name: _Optional[str] = ..., pid: _Optional[int] = ..., cpu_time_ns: _Optional[int] = ...) -> None: ...

class CreateServersRequest(_message.Message):
    __slots__ = ("name", "flavor", "image", "count", "min_count", "availability_zone", "group", "cmdline")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FLAVOR_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MIN_COUNT_FIELD_NUMBER: _ClassVar[int]
    AVAILABILITY_ZONE_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    CMDLINE_FIELD_NUMBER: _ClassVar[int]
    name: str
    flavor: str
    image: str
    count: int
    min_count: int
    availability_zone: str
    group: str
    cmdline: str
    def __init__(self, name: _Optional[str] = ..., flavor: _Optional[str] = ..., image: _Optional[str] = ..., count: _Optional[int] = ..., min_count: _Optional[int] = ..., availability_zone: _Optional[str] = ..., group: _Optional[str] = ..., cmdline: _Optional[str] = ...) -> None: ...

class CreateServersResponse(_message.Message):
    __slots__ = ("servers",)
    SERVERS_FIELD_NUMBER: _ClassVar[int]
    servers: _containers.RepeatedCompositeFieldContainer[Server]
    def __init__(self, servers: _Optional[_Iterable[_Union[Server, _Mapping]]] = ...) -> None: ...

class ServerRef(_message.Message):
    __slots__ = ("name_or_id",)
    NAME_OR_ID_FIELD_NUMBER: _ClassVar[int]
    name_or_id: str
    def __init__(self, name_or_id: _Optional[str] = ...) -> None: ...

class ListServersRequest(_message.Message):
    __slots__ = ("host", "status", "name")
    HOST_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    host: str
    status: str
    name: str
    def __init__(self, host: _Optional[str] = ..., status: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class ListServersResponse(_message.Message):
    __slots__ = ("servers",)
    SERVERS_FIELD_NUMBER: _ClassVar[int]
    servers: _containers.RepeatedCompositeFieldContainer[Server]
    def __init__(self, servers: _Optional[_Iterable[_Union[Server, _Mapping]]] = ...) -> None: ...

class DeleteServerResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RebootServerRequest(_message.Message):
    __slots__ = ("name_or_id", "hard")
    NAME_OR_ID_FIELD_NUMBER: _ClassVar[int]
    HARD_FIELD_NUMBER: _ClassVar[int]
    name_or_id: str
    hard: bool
    def __init__(self, name_or_id: _Optional[str] = ..., hard: _Optional[bool] = ...) -> None: ...

class ConsoleOutputRequest(_message.Message):
    __slots__ = ("name_or_id", "lines")
    NAME_OR_ID_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    name_or_id: str
    lines: int
    def __init__(self, name_or_id: _Optional[str] = ..., lines: _Optional[int] = ...) -> None: ...

class ConsoleOutputResponse(_message.Message):
    __slots__ = ("output",)
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    output: str
    def __init__(self, output: _Optional[str] = ...) -> None: ...

class WatchServersRequest(_message.Message):
    __slots__ = ("uuids",)
    UUIDS_FIELD_NUMBER: _ClassVar[int]
    uuids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, uuids: _Optional[_Iterable[str]] = ...) -> None: ...

class ServerEvent(_message.Message):
    __slots__ = ("server", "deleted")
    SERVER_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    server: Server
    deleted: bool
    def __init__(self, server: _Optional[_Union[Server, _Mapping]] = ..., deleted: _Optional[bool] = ...) -> None: ...

class Host(_message.Message):
    __slots__ = ("info", "up", "enabled", "disabled_reason", "instances", "stats")
    class StatsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    INFO_FIELD_NUMBER: _ClassVar[int]
    UP_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    DISABLED_REASON_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    info: _types_pb2.HostInfo
    up: bool
    enabled: bool
    disabled_reason: str
    instances: _containers.RepeatedScalarFieldContainer[str]
    stats: _containers.ScalarMap[str, float]
    def __init__(self, info: _Optional[_Union[_types_pb2.HostInfo, _Mapping]] = ..., up: _Optional[bool] = ..., enabled: _Optional[bool] = ..., disabled_reason: _Optional[str] = ..., instances: _Optional[_Iterable[str]] = ..., stats: _Optional[_Mapping[str, float]] = ...) -> None: ...

class HostRef(_message.Message):
    __slots__ = ("host_id",)
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    host_id: str
    def __init__(self, host_id: _Optional[str] = ...) -> None: ...

class ListHostsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListHostsResponse(_message.Message):
    __slots__ = ("hosts", "store_alarms")
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    STORE_ALARMS_FIELD_NUMBER: _ClassVar[int]
    hosts: _containers.RepeatedCompositeFieldContainer[Host]
    store_alarms: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, hosts: _Optional[_Iterable[_Union[Host, _Mapping]]] = ..., store_alarms: _Optional[_Iterable[str]] = ...) -> None: ...

class DisableHostRequest(_message.Message):
    __slots__ = ("host_id", "reason")
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    host_id: str
    reason: str
    def __init__(self, host_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class EvacuateHostResponse(_message.Message):
    __slots__ = ("servers",)
    SERVERS_FIELD_NUMBER: _ClassVar[int]
    servers: _containers.RepeatedCompositeFieldContainer[Server]
    def __init__(self, servers: _Optional[_Iterable[_Union[Server, _Mapping]]] = ...) -> None: ...

class WatchTopRequest(_message.Message):
    __slots__ = ("interval",)
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    interval: float
    def __init__(self, interval: _Optional[float] = ...) -> None: ...

class TopHost(_message.Message):
    __slots__ = ("host_id", "up", "enabled", "vcpus", "memory_mb", "allocated_vcpus", "allocated_memory_mb", "cpu_percent", "memory_total", "memory_used", "instances", "load1", "sampled_at")
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    UP_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    VCPUS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_VCPUS_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    LOAD1_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_AT_FIELD_NUMBER: _ClassVar[int]
    host_id: str
    up: bool
    enabled: bool
    vcpus: int
    memory_mb: int
    allocated_vcpus: int
    allocated_memory_mb: int
    cpu_percent: float
    memory_total: int
    memory_used: int
    instances: int
    load1: float
    sampled_at: float
    def __init__(self, host_id: _Optional[str] = ..., up: _Optional[bool] = ..., enabled: _Optional[bool] = ..., vcpus: _Optional[int] = ..., memory_mb: _Optional[int] = ..., allocated_vcpus: _Optional[int] = ..., allocated_memory_mb: _Optional[int] = ..., cpu_percent: _Optional[float] = ..., memory_total: _Optional[int] = ..., memory_used: _Optional[int] = ..., instances: _Optional[int] = ..., load1: _Optional[float] = ..., sampled_at: _Optional[float] = ...) -> None: ...

class TopInstance(_message.Message):
    __slots__ = ("uuid", "name", "instance_name", "host", "status", "power_state", "vcpus", "memory_mb", "cpu_percent", "cpu_time_ns", "vcpu_time_ns", "kvm_pit_time_ns", "vhost_time_ns", "vhost_kind", "memory_rss", "sampled_at", "has_cpu_percent")
    UUID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_NAME_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    POWER_STATE_FIELD_NUMBER: _ClassVar[int]
    VCPUS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    CPU_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    VCPU_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    KVM_PIT_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    VHOST_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    VHOST_KIND_FIELD_NUMBER: _ClassVar[int]
    MEMORY_RSS_FIELD_NUMBER: _ClassVar[int]
    SAMPLED_AT_FIELD_NUMBER: _ClassVar[int]
    HAS_CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    name: str
    instance_name: str
    host: str
    status: str
    power_state: str
    vcpus: int
    memory_mb: int
    cpu_percent: float
    cpu_time_ns: int
    vcpu_time_ns: int
    kvm_pit_time_ns: int
    vhost_time_ns: int
    vhost_kind: str
    memory_rss: int
    sampled_at: float
    has_cpu_percent: bool
    def __init__(self, uuid: _Optional[str] = ..., name: _Optional[str] = ..., instance_name: _Optional[str] = ..., host: _Optional[str] = ..., status: _Optional[str] = ..., power_state: _Optional[str] = ..., vcpus: _Optional[int] = ..., memory_mb: _Optional[int] = ..., cpu_percent: _Optional[float] = ..., cpu_time_ns: _Optional[int] = ..., vcpu_time_ns: _Optional[int] = ..., kvm_pit_time_ns: _Optional[int] = ..., vhost_time_ns: _Optional[int] = ..., vhost_kind: _Optional[str] = ..., memory_rss: _Optional[int] = ..., sampled_at: _Optional[float] = ..., has_cpu_percent: _Optional[bool] = ...) -> None: ...

class TopSnapshot(_message.Message):
    __slots__ = ("at", "hosts", "instances")
    AT_FIELD_NUMBER: _ClassVar[int]
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    at: float
    hosts: _containers.RepeatedCompositeFieldContainer[TopHost]
    instances: _containers.RepeatedCompositeFieldContainer[TopInstance]
    def __init__(self, at: _Optional[float] = ..., hosts: _Optional[_Iterable[_Union[TopHost, _Mapping]]] = ..., instances: _Optional[_Iterable[_Union[TopInstance, _Mapping]]] = ...) -> None: ...

class ServerEventEntry(_message.Message):
    __slots__ = ("action", "at", "requester", "result", "message", "host")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    action: str
    at: float
    requester: str
    result: str
    message: str
    host: str
    def __init__(self, action: _Optional[str] = ..., at: _Optional[float] = ..., requester: _Optional[str] = ..., result: _Optional[str] = ..., message: _Optional[str] = ..., host: _Optional[str] = ...) -> None: ...

class ListServerEventsResponse(_message.Message):
    __slots__ = ("uuid", "name", "deleted", "events")
    UUID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    name: str
    deleted: bool
    events: _containers.RepeatedCompositeFieldContainer[ServerEventEntry]
    def __init__(self, uuid: _Optional[str] = ..., name: _Optional[str] = ..., deleted: _Optional[bool] = ..., events: _Optional[_Iterable[_Union[ServerEventEntry, _Mapping]]] = ...) -> None: ...
