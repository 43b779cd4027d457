#!/usr/bin/env python3
"""Regenerate lockstep's Python gRPC stubs from the protocol definition.

The stubs live in ``src/lockstep/v1/`` and are checked in, so installing the package needs neither
``protoc`` nor grpcio-tools. Run this after changing ``crates/proto/proto/lockstep/v1/lockstep.proto``::

    python clients/python/scripts/gen_proto.py            # rewrite the checked-in stubs
    python clients/python/scripts/gen_proto.py --out DIR  # write them under DIR/lockstep/v1 instead

It needs the grpcio-tools version pinned in ``pyproject.toml`` (the ``dev`` extra): another version
writes different version guards into the generated files, which the drift test reports.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

PYTHON_ROOT = Path(__file__).resolve().parent.parent
REPO_ROOT = PYTHON_ROOT.parent.parent
PROTO_ROOT = REPO_ROOT / "crates" / "proto" / "proto"
PROTO_FILE = "lockstep/v1/lockstep.proto"
DEFAULT_OUT = PYTHON_ROOT / "src"

#: Files the generator writes, relative to the output root.
GENERATED = (
    "lockstep/v1/lockstep_pb2.py",
    "lockstep/v1/lockstep_pb2.pyi",
    "lockstep/v1/lockstep_pb2_grpc.py",
)


def generate(out_root: Path, proto_root: Path = PROTO_ROOT) -> List[Path]:
    """Generate the stubs under ``out_root`` and return the paths written."""
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SystemExit(
            "grpcio-tools is not installed: pip install './clients/python[dev]'"
        ) from exc

    (out_root / "lockstep" / "v1").mkdir(parents=True, exist_ok=True)
    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"--proto_path={proto_root}",
        f"--proto_path={well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        str(proto_root / PROTO_FILE),
    ]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    return [out_root / name for name in GENERATED]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output root (default: src/)")
    parser.add_argument("--proto-root", type=Path, default=PROTO_ROOT, help="directory holding lockstep/v1/")
    ns = parser.parse_args(argv)
    for path in generate(ns.out, ns.proto_root):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
