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
import shlex
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

from diffcxr.env import apply_defaults

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent


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


def start_ray_head(num_cpus: int | None = None, env: dict[str, str] | None = None) -> str:
    """``ray start --head`` bound to 127.0.0.1; returns the dashboard (job submission) address.

    ``env`` is added to the head's environment, which every job driver and worker on it inherits
    (how ``up --ray`` points jobs at the MLflow and moto servers it started)."""
    apply_defaults()
    cmd = [_ray_cli(), "start", "--head", "--node-ip-address", HOST, "--dashboard-host", HOST, "--disable-usage-stats"]
    if num_cpus:
        cmd += ["--num-cpus", str(num_cpus)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    return f"http://{HOST}:8265"


def stop_ray_head() -> None:
    subprocess.run([_ray_cli(), "stop", "--force"], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# ---------------------------------------------------------------------------- CLI for scripts


def _state_file(state: Path) -> Path:
    return state / "services.json"


#: Key of a Ray head started by ``up --ray`` in services.json (stopped with ``ray stop``, not by pid).
RAY_RECORD = "ray"


#: Dummy credentials for moto (boto3 refuses to sign without any); a value already set wins.
MOTO_DEFAULTS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def _client_env(services: dict[str, Service]) -> dict[str, str]:
    """What a client (a shell, or the jobs on a Ray head we start) needs to use these services."""
    env = {"DIFFCXR_HOME": os.environ.get("DIFFCXR_HOME") or str(REPO)}
    if "mlflow" in services:
        env["MLFLOW_TRACKING_URI"] = services["mlflow"].url
    if "moto" in services:
        env["AWS_ENDPOINT_URL"] = env["MLFLOW_S3_ENDPOINT_URL"] = services["moto"].url
    return env


def up(
    state: Path, moto: bool, mlflow: bool, ray: bool = False, shell_env: bool = False, mlflow_state: Path | None = None
) -> dict[str, Service]:
    """Start services and record them (pids, URLs) plus a sourceable ``services.env``.

    ``ray``: also a Ray head on 127.0.0.1 whose jobs see the services started here. ``shell_env``:
    services.env also exports MLFLOW_TRACKING_URI, AWS_ENDPOINT_URL, ... and the Ray addresses for a
    developer's shell; off for CI, whose tests choose their stores themselves (DIFFCXR_TEST_*)."""
    services: dict[str, Service] = {}
    logs = state / "logs"
    ray_dashboard = None
    try:
        if moto:
            services["moto"] = start_moto(logs)
        if mlflow:
            services["mlflow"] = start_mlflow(mlflow_state or state / "mlflow", logs)
        if ray:
            head_env = _client_env(services)
            # a job's `python ...` entrypoint must find this environment's interpreter, not the system one
            head_env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
            if moto:
                head_env.update({k: v for k, v in MOTO_DEFAULTS.items() if not os.environ.get(k)})
            ray_dashboard = start_ray_head(env=head_env)
    except BaseException:  # one failed: stop the ones already started, nobody else knows about them
        for service in services.values():
            service.stop()
        raise
    record: dict[str, dict[str, object]] = {k: asdict(v) for k, v in services.items()}
    if ray_dashboard:
        record[RAY_RECORD] = {"dashboard": ray_dashboard}
    _state_file(state).write_text(json.dumps(record, indent=2))
    env = []
    if "moto" in services:
        env.append(f"export DIFFCXR_TEST_S3_ENDPOINT={services['moto'].url}")
    if "mlflow" in services:
        env.append(f"export DIFFCXR_TEST_MLFLOW_URI={services['mlflow'].url}")
    if shell_env:
        exports = _client_env(services)
        if ray_dashboard:
            # `ray job ...` reads RAY_API_SERVER_ADDRESS (the dashboard); ray.init() and the diffcxr commands read
            # RAY_ADDRESS, which must be the GCS host:port: an http:// RAY_ADDRESS makes ray.init() fail.
            exports["RAY_API_SERVER_ADDRESS"] = ray_dashboard
            exports["RAY_ADDRESS"] = f"{HOST}:6379"
        env += [f"export {key}={shlex.quote(value)}" for key, value in exports.items()]
        if moto:  # a shell default, so that real credentials are never written into this file
            env += [f'export {key}="${{{key}:-{value}}}"' for key, value in MOTO_DEFAULTS.items()]
    (state / "services.env").write_text("\n".join(env) + "\n")
    return services


def down(state: Path) -> None:
    path = _state_file(state)
    if not path.exists():
        return
    for name, data in json.loads(path.read_text()).items():
        if name == RAY_RECORD:
            stop_ray_head()
        else:
            Service(**data).stop()
    path.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start services in the background; writes STATE/services.env")
    p_up.add_argument("--state", type=Path, default=Path("var/services"))
    p_up.add_argument("--moto", action="store_true", help="moto S3 server")
    p_up.add_argument("--mlflow", action="store_true", help="MLflow server (sqlite backend)")
    p_up.add_argument("--ray", action="store_true", help="Ray head on 127.0.0.1 (dashboard :8265); `down` stops it")
    p_up.add_argument(
        "--shell-env",
        action="store_true",
        help="services.env also exports MLFLOW_TRACKING_URI, AWS_ENDPOINT_URL, RAY_ADDRESS, ... for a shell",
    )
    p_up.add_argument(
        "--mlflow-state",
        type=Path,
        help="MLflow sqlite + artefact folder (default STATE/mlflow; start_local.sh shares var/mlflow-server with "
        "run_local.sh, so both see the same runs and registry)",
    )
    p_down = sub.add_parser("down", help="stop the services recorded in STATE")
    p_down.add_argument("--state", type=Path, default=Path("var/services"))
    args = parser.parse_args(argv)
    args.state.mkdir(parents=True, exist_ok=True)
    if args.command == "up":
        for name, svc in up(args.state, args.moto, args.mlflow, args.ray, args.shell_env, args.mlflow_state).items():
            print(f"{name}: {svc.url} (pid {svc.pid}, log {svc.log})")
        if args.ray:
            print(f"ray: http://{HOST}:8265 (`ray stop` or `python -m infra.local down` stops it)")
    else:
        down(args.state)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
