"""The house plan, checked: the core stands on nothing above it, services meet only through the core and
each other's public entry points, and fault injection comes from one place (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from diffcxr import faults
from diffcxr.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
ROOMS = ("diffcxr", "services", "orchestration", "infra")


def imports(folder: str) -> list[tuple[str, int, str]]:
    """(file, line, imported module) of every absolute import of our packages under ``folder``."""
    found = []
    for path in sorted((REPO / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            found += [(str(path.relative_to(REPO)), node.lineno, n) for n in names if n.split(".")[0] in ROOMS]
    return found


def test_the_core_imports_nothing_above_it() -> None:
    upward = [f"{f}:{line} imports {m}" for f, line, m in imports("diffcxr") if not m.startswith("diffcxr")]
    assert upward == []


def test_services_meet_only_through_public_entry_points() -> None:
    """``from services.text import TextPart`` is fine (the package names its public entry points lazily);
    ``from services.text.model import ...`` from another service is not."""
    crossing = []
    for f, line, module in imports("services"):
        parts, own = module.split("."), Path(f).parts[1]
        if parts[0] != "services" or len(parts) < 2 or parts[1] == own:
            continue
        package = __import__(f"services.{parts[1]}", fromlist=["__all__"])
        public = len(parts) == 2 or (len(parts) == 3 and parts[2] in getattr(package, "__all__", ()))
        if not public:
            crossing.append(f"{f}:{line} imports {module}")
    assert crossing == []


def test_services_do_not_import_orchestration_or_infra() -> None:
    above = [f"{f}:{line} imports {m}" for f, line, m in imports("services") if m.split(".")[0] != "services"
             and not m.startswith("diffcxr")]  # fmt: skip
    assert above == []


def test_fault_plan_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(faults.ENV, raising=False)
    assert faults.plan_for("uvit") == {}
    monkeypatch.setenv(faults.ENV, json.dumps({"uvit": {"crash_after_step": 3}, "text": {"kill_after_step": 2}}))
    assert faults.plan_for("uvit") == {"crash_after_step": 3} and faults.plan_for("adapter") == {}
    monkeypatch.setenv(faults.ENV, json.dumps({"uvit": {"explode_after_step": 3}}))
    with pytest.raises(ConfigError, match="unknown fault kinds \\['explode_after_step'\\]"):
        faults.plan_for("uvit")
    monkeypatch.setenv(faults.ENV, json.dumps({"uvit": 3}))
    with pytest.raises(ConfigError, match="'uvit' must map to"):
        faults.plan_for("uvit")
    monkeypatch.setenv(faults.ENV, "{not json")
    with pytest.raises(ConfigError, match="DIFFCXR_FAULTS"):
        faults.plan_for("uvit")
