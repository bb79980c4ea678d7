"""The gRPC stubs of ``generator.proto``, importable from the installed package.

``pip install`` (editable or not) generates them: setup.py's build step runs
protoc, the one place that does.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from diffcxr.errors import ConfigError

PACKAGE = "services.serve"
#: What Serve's gRPC proxy is told to call to register the servicer.
SERVICER_FUNCTION = f"{PACKAGE}.generator_pb2_grpc.add_GeneratorServicer_to_server"


def load() -> tuple[ModuleType, ModuleType]:
    """(generator_pb2, generator_pb2_grpc)."""
    try:
        return importlib.import_module(f"{PACKAGE}.generator_pb2"), importlib.import_module(
            f"{PACKAGE}.generator_pb2_grpc"
        )
    except ImportError:
        raise ConfigError(
            "gRPC stubs are missing: install the package (pip install -e .), which generates them from "
            "services/serve/generator.proto"
        ) from None
