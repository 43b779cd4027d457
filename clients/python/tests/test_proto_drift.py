"""The checked-in stubs must be exactly what the generator makes from the .proto today."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

PYTHON_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = PYTHON_ROOT / "scripts" / "gen_proto.py"
PINNED_TOOLS = "1.80.1"


def _load_generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_proto", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stubs_match_the_proto(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools is in the test extra: pip install '.[test]'")
    from importlib.metadata import version

    tools = version("grpcio-tools")
    assert tools == PINNED_TOOLS, (
        f"grpcio-tools {tools} is installed but the stubs are generated with {PINNED_TOOLS} "
        "(pinned in pyproject.toml); install the pinned version"
    )
    gen = _load_generator()
    written = gen.generate(tmp_path)
    checked_in = PYTHON_ROOT / "src"
    stale = []
    for fresh in written:
        rel = fresh.relative_to(tmp_path)
        current = checked_in / rel
        if not current.exists() or current.read_bytes() != fresh.read_bytes():
            stale.append(str(rel))
    assert not stale, (
        f"generated stubs are out of date with {gen.PROTO_FILE}: {stale}. "
        f"Run: {sys.executable} clients/python/scripts/gen_proto.py"
    )


def test_stubs_cover_every_rpc_in_the_proto() -> None:
    from lockstep.v1 import lockstep_pb2, lockstep_pb2_grpc

    proto = (PYTHON_ROOT.parent.parent / "crates" / "proto" / "proto" / "lockstep" / "v1" / "lockstep.proto").read_text()
    import re

    services = dict(re.findall(r"^service\s+(\w+)\s*\{(.*?)^\}", proto, flags=re.M | re.S))
    assert {"Lockstep", "Admin"} <= set(services), f"services in the proto: {sorted(services)}"
    for name, body in services.items():
        rpcs = re.findall(r"^\s*rpc\s+(\w+)\s*\(", body, flags=re.M)
        assert rpcs, f"no rpc found in service {name}"
        service = lockstep_pb2.DESCRIPTOR.services_by_name[name]
        assert sorted(m.name for m in service.methods) == sorted(rpcs), name
        assert hasattr(lockstep_pb2_grpc, f"{name}Stub"), name
