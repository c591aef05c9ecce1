"""Between the agent's records and the wire messages. Pure."""

from __future__ import annotations

from agent.host_facts import KvmFacts
from agent.supervisor import InstanceView
from computed.api import types_pb2
from computed.capacity import Capacity, Usage
from computed.wire import spec_to_proto


def instance_to_proto(view: InstanceView, host: str) -> types_pb2.Instance:
    return types_pb2.Instance(
        spec=spec_to_proto(view.spec),
        status=types_pb2.InstanceStatus.Value(f"STATUS_{view.state.status}"),
        power_state=types_pb2.PowerState.Value(f"POWER_STATE_{view.state.power_state}"),
        fault=view.state.fault,
        host=host,
        pid=view.pid or 0,
        created_at=view.created_at,
        updated_at=view.updated_at,
    )


def host_info_to_proto(
    host_id: str, zone: str, capacity: Capacity, used: Usage, kvm: KvmFacts, address: str
) -> types_pb2.HostInfo:
    return types_pb2.HostInfo(
        host_id=host_id,
        availability_zone=zone,
        vcpus=capacity.vcpus,
        memory_mb=capacity.memory_mb,
        cpu_allocation_ratio=capacity.cpu_ratio,
        ram_allocation_ratio=capacity.ram_ratio,
        allocated_vcpus=used.vcpus,
        allocated_memory_mb=used.memory_mb,
        instances=used.instances,
        kvm=types_pb2.KvmFacts(
            api_version=kvm.api_version,
            vendor_module=kvm.vendor_module,
            vhost=kvm.vhost,
            guest_kernel_emulated=kvm.guest_kernel_emulated,
        ),
        agent_address=address,
    )
