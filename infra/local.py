"""Start and stop the local services Diff-CXR runs against: MLflow server, moto S3, Ray head.

Used by the tests (fixtures), by ``.ci/run`` (``python -m infra.local up/down``)
and by the one-command local pipeline (``python -m infra.local pipeline``), so
there is one way to start each service and one place that knows its readiness
check. Everything binds to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from infra.env import apply_defaults

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class Service:
    """A background process we started, with its URL and log file."""

    name: str
    pid: int
    url: str
    log: str

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
            return True
        except OSError:
            return False

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the service's process group, SIGKILL what is left after ``timeout``."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGTERM)
        deadline = time.time() + timeout
        while time.time() < deadline and self.alive():
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, os.WNOHANG)
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)


def _spawn(name: str, cmd: list[str], url: str, log_dir: Path, ready: Callable[[], bool], timeout: float) -> Service:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    apply_defaults()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=os.environ.copy()
        )
    service = Service(name, proc.pid, url, str(log_path))
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}; see {log_path}")
            if ready():
                return service
            time.sleep(0.3)
        raise RuntimeError(f"{name} not ready after {timeout:.0f} s; see {log_path}")
    except BaseException:  # not ready, or interrupted while waiting: never leave it behind
        service.stop()
        raise


def start_moto(log_dir: Path, port: int | None = None) -> Service:
    """A moto S3-compatible server on 127.0.0.1 (ready in about a second)."""
    port = port or free_port()
    url = f"http://{HOST}:{port}"
    cmd = [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)]
    return _spawn("moto", cmd, url, log_dir, lambda: _http_ok(f"{url}/moto-api/"), timeout=30)


def start_mlflow(state_dir: Path, log_dir: Path, port: int | None = None, artifacts: str | None = None) -> Service:
    """An MLflow tracking + registry server with a sqlite backend (ready in ~8 s)."""
    port = port or free_port()
    state_dir.mkdir(parents=True, exist_ok=True)
    url = f"http://{HOST}:{port}"
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{state_dir.absolute() / 'mlflow.db'}",
        "--artifacts-destination",
        artifacts or str((state_dir / "artifacts").absolute()),
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    return _spawn("mlflow", cmd, url, log_dir, lambda: _http_ok(f"{url}/health"), timeout=90)


def _ray_cli() -> str:
    return shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"


def start_ray_head(num_cpus: int | None = None) -> str:
    """``ray start --head`` bound to 127.0.0.1; returns the dashboard (job submission) address."""
    apply_defaults()
    cmd = [_ray_cli(), "start", "--head", "--node-ip-address", HOST, "--dashboard-host", HOST, "--disable-usage-stats"]
    if num_cpus:
        cmd += ["--num-cpus", str(num_cpus)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return f"http://{HOST}:8265"


def stop_ray_head() -> None:
    subprocess.run([_ray_cli(), "stop", "--force"], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# ---------------------------------------------------------------------------- CLI for scripts


def _state_file(state: Path) -> Path:
    return state / "services.json"


def up(state: Path, moto: bool, mlflow: bool) -> dict[str, Service]:
    """Start services and record them (pids, URLs) plus a sourceable ``services.env``."""
    services: dict[str, Service] = {}
    logs = state / "logs"
    if moto:
        services["moto"] = start_moto(logs)
    if mlflow:
        services["mlflow"] = start_mlflow(state / "mlflow", logs)
    _state_file(state).write_text(json.dumps({k: asdict(v) for k, v in services.items()}, indent=2))
    env = []
    if "moto" in services:
        env.append(f"export DIFFCXR_TEST_S3_ENDPOINT={services['moto'].url}")
    if "mlflow" in services:
        env.append(f"export DIFFCXR_TEST_MLFLOW_URI={services['mlflow'].url}")
    (state / "services.env").write_text("\n".join(env) + "\n")
    return services


def down(state: Path) -> None:
    path = _state_file(state)
    if not path.exists():
        return
    for data in json.loads(path.read_text()).values():
        Service(**data).stop()
    path.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start services in the background; writes STATE/services.env")
    p_up.add_argument("--state", type=Path, default=Path("var/services"))
    p_up.add_argument("--moto", action="store_true", help="moto S3 server")
    p_up.add_argument("--mlflow", action="store_true", help="MLflow server (sqlite backend)")
    p_down = sub.add_parser("down", help="stop the services recorded in STATE")
    p_down.add_argument("--state", type=Path, default=Path("var/services"))
    args = parser.parse_args(argv)
    args.state.mkdir(parents=True, exist_ok=True)
    if args.command == "up":
        for name, svc in up(args.state, args.moto, args.mlflow).items():
            print(f"{name}: {svc.url} (pid {svc.pid}, log {svc.log})")
    else:
        down(args.state)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
