"""The Agent gRPC service: validate, call the supervisor, convert. No logic of its own."""

from __future__ import annotations

import grpc

from agent import metrics as agent_metrics
from agent.convert import host_info_to_proto, instance_to_proto
from agent.host_facts import KvmFacts
from agent.supervisor import InstanceSupervisor
from agent.validation import validate_spec, validate_uuid
from computed.api import agent_pb2, agent_pb2_grpc, types_pb2
from computed.errors import Invalid
from computed.grpc_status import maps_errors
from computed.wire import spec_from_proto

# Leave this much of a caller's deadline for the reply to travel back.
_DEADLINE_MARGIN = 0.5


def _budget(context: grpc.ServicerContext, wanted: float) -> float:
    """`wanted` seconds, cut to what the caller's deadline leaves (if it set one)."""
    remaining = context.time_remaining()
    if remaining is None:
        return wanted
    if remaining <= 0:
        context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline already expired")
    return max(0.0, min(wanted, remaining - _DEADLINE_MARGIN))


def _uuid(request: object) -> str:
    return validate_uuid(getattr(request, "uuid", ""))


class AgentServicer(agent_pb2_grpc.AgentServicer):
    def __init__(
        self,
        supervisor: InstanceSupervisor,
        host_id: str,
        zone: str,
        kvm: KvmFacts,
        address: str,
    ) -> None:
        self.supervisor = supervisor
        self.host_id = host_id
        self.zone = zone
        self.kvm = kvm
        self.address = address

    def _reply(self, view: object) -> types_pb2.Instance:
        return instance_to_proto(view, self.host_id)  # type: ignore[arg-type]

    @maps_errors
    @agent_metrics.timed_spawn
    def Spawn(self, request, context):  # gRPC method names are CamelCase
        if not request.HasField("spec"):
            raise Invalid("spec", "is required")
        _budget(context, 0)
        spec = validate_spec(spec_from_proto(request.spec))
        return self._reply(self.supervisor.spawn(spec, placed=request.placed))

    @maps_errors
    def Stop(self, request, context):
        if request.timeout_seconds < 0:
            raise Invalid("timeout_seconds", "must not be negative")
        wanted = request.timeout_seconds or self.supervisor.stop_timeout
        timeout = _budget(context, wanted)
        return self._reply(self.supervisor.stop(_uuid(request), timeout=timeout))

    @maps_errors
    def Start(self, request, context):
        return self._reply(self.supervisor.start(_uuid(request)))

    @maps_errors
    def Reboot(self, request, context):
        return self._reply(self.supervisor.reboot(_uuid(request), hard=request.hard))

    @maps_errors
    def Pause(self, request, context):
        return self._reply(self.supervisor.pause(_uuid(request)))

    @maps_errors
    def Resume(self, request, context):
        return self._reply(self.supervisor.resume(_uuid(request)))

    @maps_errors
    def Delete(self, request, context):
        self.supervisor.delete(_uuid(request))
        return agent_pb2.DeleteResponse()

    @maps_errors
    def Get(self, request, context):
        return self._reply(self.supervisor.get(_uuid(request)))

    @maps_errors
    def List(self, request, context):
        views = sorted(self.supervisor.list(), key=lambda v: v.spec.name)
        return agent_pb2.ListResponse(instances=[self._reply(v) for v in views])

    @maps_errors
    def GetConsoleOutput(self, request, context):
        output = self.supervisor.console_tail(_uuid(request), request.lines)
        return agent_pb2.ConsoleResponse(output=output)

    @maps_errors
    def GetHostInfo(self, request, context):
        sup = self.supervisor
        return host_info_to_proto(
            self.host_id, self.zone, sup.capacity, sup.usage(), self.kvm, self.address
        )
