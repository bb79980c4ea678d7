"""Build hook: generate the gRPC stubs from services/serve/generator.proto at install time.

Everything else about the package is in pyproject.toml.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PROTO = "services/serve/generator.proto"


class BuildPyWithStubs(build_py):
    """build_py that first runs protoc (also runs for editable installs)."""

    def run(self) -> None:
        from grpc_tools import protoc

        args = ["protoc", f"-I{ROOT}", f"--python_out={ROOT}", f"--grpc_python_out={ROOT}", PROTO]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {PROTO}")
        super().run()


setup(cmdclass={"build_py": BuildPyWithStubs})
