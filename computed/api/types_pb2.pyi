from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InstanceStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATUS_UNSPECIFIED: _ClassVar[InstanceStatus]
    STATUS_BUILD: _ClassVar[InstanceStatus]
    STATUS_ACTIVE: _ClassVar[InstanceStatus]
    STATUS_PAUSED: _ClassVar[InstanceStatus]
    STATUS_SHUTOFF: _ClassVar[InstanceStatus]
    STATUS_ERROR: _ClassVar[InstanceStatus]
    STATUS_DELETED: _ClassVar[InstanceStatus]

class PowerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    POWER_STATE_UNSPECIFIED: _ClassVar[PowerState]
    POWER_STATE_NOSTATE: _ClassVar[PowerState]
    POWER_STATE_RUNNING: _ClassVar[PowerState]
    POWER_STATE_PAUSED: _ClassVar[PowerState]
    POWER_STATE_SHUTDOWN: _ClassVar[PowerState]
    POWER_STATE_CRASHED: _ClassVar[PowerState]
STATUS_UNSPECIFIED: InstanceStatus
STATUS_BUILD: InstanceStatus
STATUS_ACTIVE: InstanceStatus
STATUS_PAUSED: InstanceStatus
STATUS_SHUTOFF: InstanceStatus
STATUS_ERROR: InstanceStatus
STATUS_DELETED: InstanceStatus
POWER_STATE_UNSPECIFIED: PowerState
POWER_STATE_NOSTATE: PowerState
POWER_STATE_RUNNING: PowerState
POWER_STATE_PAUSED: PowerState
POWER_STATE_SHUTDOWN: PowerState
POWER_STATE_CRASHED: PowerState

class InstanceSpec(_message.Message):
    __slots__ = ("uuid", "name", "image", "vcpus", "memory_mb", "cmdline", "ip", "gateway", "mac", "image_digest")
    UUID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    VCPUS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    CMDLINE_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    IMAGE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    name: str
    image: str
    vcpus: int
    memory_mb: int
    cmdline: str
    ip: str
    gateway: str
    mac: str
    image_digest: str
    def __init__(self, uuid: _Optional[str] = ..., name: _Optional[str] = ..., image: _Optional[str] = ..., vcpus: _Optional[int] = ..., memory_mb: _Optional[int] = ..., cmdline: _Optional[str] = ..., ip: _Optional[str] = ..., gateway: _Optional[str] = ..., mac: _Optional[str] = ..., image_digest: _Optional[str] = ...) -> None: ...

class Instance(_message.Message):
    __slots__ = ("spec", "status", "power_state", "fault", "host", "pid", "created_at", "updated_at")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    POWER_STATE_FIELD_NUMBER: _ClassVar[int]
    FAULT_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    spec: InstanceSpec
    status: InstanceStatus
    power_state: PowerState
    fault: str
    host: str
    pid: int
    created_at: float
    updated_at: float
    def __init__(self, spec: _Optional[_Union[InstanceSpec, _Mapping]] = ..., status: _Optional[_Union[InstanceStatus, str]] = ..., power_state: _Optional[_Union[PowerState, str]] = ..., fault: _Optional[str] = ..., host: _Optional[str] = ..., pid: _Optional[int] = ..., created_at: _Optional[float] = ..., updated_at: _Optional[float] = ...) -> None: ...

class KvmFacts(_message.Message):
    __slots__ = ("api_version", "vendor_module", "vhost", "guest_kernel_emulated")
    API_VERSION_FIELD_NUMBER: _ClassVar[int]
    VENDOR_MODULE_FIELD_NUMBER: _ClassVar[int]
    VHOST_FIELD_NUMBER: _ClassVar[int]
    GUEST_KERNEL_EMULATED_FIELD_NUMBER: _ClassVar[int]
    api_version: int
    vendor_module: str
    vhost: str
    guest_kernel_emulated: bool
    def __init__(self, api_version: _Optional[int] = ..., vendor_module: _Optional[str] = ..., vhost: _Optional[str] = ..., guest_kernel_emulated: _Optional[bool] = ...) -> None: ...

class HostInfo(_message.Message):
    __slots__ = ("host_id", "availability_zone", "vcpus", "memory_mb", "cpu_allocation_ratio", "ram_allocation_ratio", "allocated_vcpus", "allocated_memory_mb", "instances", "kvm", "agent_address")
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    AVAILABILITY_ZONE_FIELD_NUMBER: _ClassVar[int]
    VCPUS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    CPU_ALLOCATION_RATIO_FIELD_NUMBER: _ClassVar[int]
    RAM_ALLOCATION_RATIO_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_VCPUS_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    KVM_FIELD_NUMBER: _ClassVar[int]
    AGENT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    host_id: str
    availability_zone: str
    vcpus: int
    memory_mb: int
    cpu_allocation_ratio: float
    ram_allocation_ratio: float
    allocated_vcpus: int
    allocated_memory_mb: int
    instances: int
    kvm: KvmFacts
    agent_address: str
    def __init__(self, host_id: _Optional[str] = ..., availability_zone: _Optional[str] = ..., vcpus: _Optional[int] = ..., memory_mb: _Optional[int] = ..., cpu_allocation_ratio: _Optional[float] = ..., ram_allocation_ratio: _Optional[float] = ..., allocated_vcpus: _Optional[int] = ..., allocated_memory_mb: _Optional[int] = ..., instances: _Optional[int] = ..., kvm: _Optional[_Union[KvmFacts, _Mapping]] = ..., agent_address: _Optional[str] = ...) -> None: ...
