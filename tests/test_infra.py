"""Local service helpers never leave a process behind, even when interrupted mid-start."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from infra.local import _spawn


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_interrupted_start_stops_the_process(tmp_path: Path) -> None:
    pids: list[int] = []

    def interrupted() -> bool:
        deadline = time.time() + 10  # the child may not have exec'd its command line yet
        while not pids and time.time() < deadline:
            pids.extend(int(p) for p in os.listdir("/proc") if p.isdigit() and _is_sleeper(int(p)))
            time.sleep(0.05)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _spawn(
            "sleeper",
            [sys.executable, "-c", "import time; time.sleep(120)  # diffcxr-sleeper"],
            "http://127.0.0.1:1",
            tmp_path,
            interrupted,
            timeout=30,
        )
    assert pids, "the service process was never started"
    assert not any(_pid_alive(p) for p in pids)


def test_service_that_never_gets_ready_is_stopped(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="not ready after 1 s"):
        _spawn(
            "sleeper",
            [sys.executable, "-c", "import time; time.sleep(120)  # diffcxr-sleeper"],
            "http://127.0.0.1:1",
            tmp_path,
            lambda: False,
            timeout=1,
        )
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _is_sleeper(int(p)) and _pid_alive(int(p))]


def test_service_that_exits_reports_its_log(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"exited with code 3; see .*failing\.log"):
        _spawn(
            "failing",
            [sys.executable, "-c", "raise SystemExit(3)"],
            "http://127.0.0.1:1",
            tmp_path,
            lambda: False,
            timeout=30,
        )


def _is_sleeper(pid: int) -> bool:
    try:
        return b"diffcxr-sleeper" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
