"""The gRPC stubs of ``generator.proto``, importable from the installed package.

``pip install`` generates them (setup.py's build step); a source checkout that
skipped the install gets them generated here on first import (0.1 s) when the
package folder is writable.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

PACKAGE = "services.diffusion.serving"
PROTO = Path(__file__).with_name("generator.proto")
#: What Serve's gRPC proxy is told to call to register the servicer.
SERVICER_FUNCTION = f"{PACKAGE}.generator_pb2_grpc.add_GeneratorServicer_to_server"


def generate(repo_root: Path | None = None) -> None:
    """Run protoc on generator.proto; outputs land beside it, with package-qualified imports."""
    from grpc_tools import protoc

    root = repo_root or Path(__file__).resolve().parents[3]
    rel = PROTO.resolve().relative_to(root)
    args = ["protoc", f"-I{root}", f"--python_out={root}", f"--grpc_python_out={root}", str(rel)]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {rel}")


def load() -> tuple[ModuleType, ModuleType]:
    """(generator_pb2, generator_pb2_grpc), generating them first if this checkout has none."""
    try:
        return importlib.import_module(f"{PACKAGE}.generator_pb2"), importlib.import_module(
            f"{PACKAGE}.generator_pb2_grpc"
        )
    except ImportError:
        generate()
        importlib.invalidate_caches()
        return importlib.import_module(f"{PACKAGE}.generator_pb2"), importlib.import_module(
            f"{PACKAGE}.generator_pb2_grpc"
        )
