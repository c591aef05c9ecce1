"""The committed gRPC/protobuf modules are exactly what the .proto files generate."""

from __future__ import annotations

import pickle

from computed.api import regen


def test_committed_modules_match_a_fresh_generation(tmp_path):
    regen.generate(tmp_path)
    problems = regen.differences(regen.API_DIR, tmp_path)
    assert not problems, "computed/api is stale, run `python -m computed.api.regen`: " + "; ".join(
        problems
    )


def test_generated_modules_import_as_computed_api():
    from computed.api import agent_pb2, agent_pb2_grpc, types_pb2

    assert agent_pb2.DESCRIPTOR.dependencies[0] is types_pb2.DESCRIPTOR
    assert hasattr(agent_pb2_grpc, "AgentStub")
    # The proto package keeps its own name; only the Python module moved.
    assert types_pb2.Instance.DESCRIPTOR.full_name == "computed.v1.Instance"
    assert types_pb2.Instance.__module__ == "computed.api.types_pb2"


def test_messages_pickle_because_their_module_exists():
    from computed.api import types_pb2

    spec = types_pb2.InstanceSpec(uuid="u", name="instance-00000001", vcpus=2)
    assert pickle.loads(pickle.dumps(spec)) == spec


def test_rewrite_moves_imports_and_module_names_only():
    generated = (
        "from computed.v1 import types_pb2 as computed_dot_v1_dot_types__pb2\n"
        "DESCRIPTOR = AddSerializedFile(b'\\n\\x17computed/v1/agent.proto\\x12\\x0b"
        "computed.v1')\n"
        "_builder.BuildTopDescriptorsAndMessages(DESCRIPTOR, 'computed.v1.agent_pb2', _globals)\n"
    )
    out = regen.rewrite(generated)
    assert "from computed.api import types_pb2 as computed_dot_v1_dot_types__pb2" in out
    assert "'computed.api.agent_pb2'" in out
    assert "computed/v1/agent.proto\\x12\\x0bcomputed.v1'" in out  # descriptor bytes untouched
