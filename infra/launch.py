"""The embedded default: a local MLflow server + Ray head, the pipeline submitted as a Ray job.

``bash infra/run_local.sh`` (the README's first command) runs this after the
environment is installed. It starts what is missing (an MLflow server with a
sqlite backend under ``var/mlflow-server``, a Ray head on 127.0.0.1), submits
``orchestration/full_pipeline.py`` with ``ray job submit``, streams its log,
and stops what it started when the job ends or on Ctrl-C (the job included).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from diffcxr.config import add_config_arguments, load_config
from diffcxr.env import apply_defaults
from diffcxr.errors import DiffCXRError
from infra.local import HOST, Service, _ray_cli, free_port, start_mlflow, start_ray_head, stop_ray_head
from orchestration.full_pipeline import STAGES

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = f"http://{HOST}:8265"
#: Where S3 is (not who may use it): passed into the job so that an ``s3://`` run root works on a cluster that
#: was started elsewhere. Credentials stay out of the job's runtime env, which the dashboard shows.
S3_PLACE = (
    "AWS_ENDPOINT_URL",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EC2_METADATA_DISABLED",
    "MLFLOW_S3_ENDPOINT_URL",
)
UPLOAD_EXCLUDES = [".venv", "var", ".git", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache"]


def _ray_running() -> bool:
    try:
        with urllib.request.urlopen(f"{DASHBOARD}/api/version", timeout=2):
            return True
    except OSError:
        return False


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex((HOST, port)) != 0


def submit(profile: str, overrides: list[str], tracking_uri: str, stages: list[str] | None = None) -> int:
    """``ray job submit`` the pipeline; returns the job's exit status. Ctrl-C stops the job.

    ``stages`` are the pipeline's own stage-range flags (``--from X``, ``--to Y``), passed through so a
    training-only variant (an ablation row) need not pay for an evaluation it will not use."""
    job_id = f"diffcxr-{profile}-{int(time.time())}"
    runtime_env = {
        "working_dir": str(REPO),
        "excludes": UPLOAD_EXCLUDES,
        "env_vars": {
            "MLFLOW_TRACKING_URI": tracking_uri,
            "DIFFCXR_HOME": str(REPO),
            **{k: os.environ[k] for k in os.environ if k.startswith(("RAY_", "HF_", "MLFLOW_SERVER")) or k in S3_PLACE},
        },
    }
    entry = [sys.executable, "orchestration/full_pipeline.py", "--config", profile]
    for item in overrides:
        entry += ["--set", item]
    entry += stages or []
    cmd = [
        _ray_cli(),
        "job",
        "submit",
        "--address",
        DASHBOARD,
        "--submission-id",
        job_id,
        "--runtime-env-json",
        json.dumps(runtime_env),
        "--",
        *entry,
    ]
    proc = subprocess.Popen(cmd, cwd=REPO)
    try:
        proc.wait()
    except KeyboardInterrupt:
        print(f"\nstopping Ray job {job_id} ...", flush=True)
        subprocess.run([_ray_cli(), "job", "stop", "--address", DASHBOARD, job_id], check=False)
        proc.send_signal(signal.SIGINT)
        proc.wait()
        return 130
    from ray.job_submission import JobStatus, JobSubmissionClient

    status = JobSubmissionClient(DASHBOARD).get_job_status(job_id)
    return 0 if status == JobStatus.SUCCEEDED else (proc.returncode or 1)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.launch", description=__doc__.splitlines()[0])
    add_config_arguments(parser, "-p", "--profile", "--config")
    parser.add_argument(
        "--keep-services",
        action="store_true",
        help="leave the MLflow server (and a Ray head we started) running afterwards",
    )
    parser.add_argument(
        "--state",
        type=Path,
        default=REPO / "var" / "mlflow-server",
        help="MLflow server state folder (sqlite + artifacts)",
    )
    parser.add_argument(
        "--artifacts",
        metavar="URI",
        help="where the MLflow server keeps run artefacts and registered models: a folder or e.g. "
        "s3://bucket/mlflow-artifacts (default: <state>/artifacts). The server reads the AWS_* variables "
        "and MLFLOW_S3_ENDPOINT_URL (an S3-compatible store) from this environment",
    )
    parser.add_argument("--from", dest="start", choices=STAGES, help="start at this stage (earlier ones current)")
    parser.add_argument("--to", dest="stop", choices=STAGES, help="stop after this stage, e.g. --to diffusion")
    args = parser.parse_args(argv)
    stages = [*(["--from", args.start] if args.start else []), *(["--to", args.stop] if args.stop else [])]
    launched = time.monotonic()
    try:  # fail on a bad profile or key now, not after starting a cluster
        load_config(args.profile, args.overrides)
    except DiffCXRError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it like Ctrl-C does
    apply_defaults()
    os.environ["DIFFCXR_HOME"] = str(REPO)
    state = args.state.absolute()
    artifacts = args.artifacts or str(state / "artifacts")
    if "://" not in artifacts:  # a folder: absolute, so the server and the printed command agree on it
        artifacts = str(Path(artifacts).absolute())
    started_ray = False
    mlflow: Service | None = None
    code = 1
    try:
        port = 5000 if _port_free(5000) else free_port()
        # the two servers start side by side (each mostly one process importing Python): the job was submitted
        # ~18 s after the launcher started with one after the other on 2 cores, ~12 s together. Leaving the
        # block waits for the Ray start even when MLflow failed, so that `finally` can stop it.
        with ThreadPoolExecutor(max_workers=1) as pool:
            ray_start = None
            if _ray_running():
                print(f"using the Ray cluster already at {DASHBOARD}", flush=True)
            else:
                print("starting a local Ray head on 127.0.0.1 ...", flush=True)
                started_ray = True  # before the call: an interrupted start must still be stopped
                ray_start = pool.submit(start_ray_head, num_cpus=os.cpu_count())
            print(f"starting MLflow server on http://{HOST}:{port} (sqlite: {state / 'mlflow.db'}; "
                  f"artefacts: {artifacts}) ...", flush=True)  # fmt: skip
            mlflow = start_mlflow(state, state / "logs", port=port, artifacts=artifacts)
            if ray_start is not None:
                ray_start.result()
        code = submit(args.profile, args.overrides, mlflow.url, stages)
    except KeyboardInterrupt:
        code = 130
        print("\ninterrupted: stopping what was started ...", flush=True)
    finally:
        if started_ray and not args.keep_services:
            print("stopping the Ray head ...", flush=True)
            stop_ray_head()
        if mlflow is not None and not args.keep_services:
            mlflow.stop()
    print("\nWhere to look:")
    print(f"  MLflow UI:  {f'http://{HOST}:{port}' if args.keep_services else 'stopped; browse it with'}")
    if not args.keep_services:
        print(
            f"    {Path(sys.executable).parent / 'mlflow'} server --backend-store-uri sqlite:///{state / 'mlflow.db'}"
            f" --artifacts-destination {artifacts} --host {HOST} --port 5000"
        )
    print(f"  job status: {'succeeded' if code == 0 else f'failed ({code})'}")
    minutes, seconds = divmod(round(time.monotonic() - launched), 60)
    print(f"  wall time:  {minutes} min {seconds:02d} s (services up, job, services down)")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
