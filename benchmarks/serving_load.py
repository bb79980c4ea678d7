"""Load test of the Serve generation graph from a separate process on 127.0.0.1.

For dynamic batching on (``max_batch_size`` 8 on text, denoiser, decoder) and
off (1): starts ``diffcxr serve --config`` as its own process (a fresh local
Ray each time), measures the cold start (process launch → health ok → first
image), then drives ``POST /v1/generate`` at concurrency 1, 4 and 16 with a
bounded number of requests (and a time cap per level) from threads in this
process, and records throughput (images/s) and p50/p95/p99 latency.

Goals (issue #8): at concurrency 16 batching beats no batching in throughput
(about 1.3x on a 2-core CPU, >= 4x on a GPU) and p99 <= 3x p50.

    .venv/bin/python benchmarks/serving_load.py                      # trained tiny generator if present
    .venv/bin/python benchmarks/serving_load.py --profile small --tag small   # var/runs/small's, else an init one
    .venv/bin/python benchmarks/serving_load.py --model var/runs/small-bench/diffusion/generator --tag small

Without ``--model`` the profile's trained generator (``var/runs/<profile>/diffusion/generator``) is used
when present, else a bundle of the profile's architecture with initial weights (``build_initial_bundle``):
the time of a request depends on the architecture, sizes and steps, not on the weight values, so the
speed is the same; the results file says which (``model.weights``).

Writes ``benchmarks/results/serving_load[_TAG]_<date>.json``. Do not run next
to the test suite or another Ray cluster: both compete for the same 2 cores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from diffcxr.env import apply_defaults  # noqa: E402
from infra.local import free_port  # noqa: E402

apply_defaults()
REPORTS = [
    "Large right pleural effusion. The heart is enlarged.",
    "No acute cardiopulmonary abnormality.",
    "Small left apical pneumothorax.",
    "Mild pulmonary edema with bilateral interstitial opacities.",
    "Right lower lobe consolidation concerning for pneumonia.",
    "Left basilar atelectasis. No pleural effusion.",
    "Cardiomegaly with mild vascular congestion.",
    "Healed fracture of the left lateral seventh rib.",
]


def default_model(profile: str) -> tuple[str, str]:
    """(bundle folder, what its weights are) for ``profile``: its trained generator if a run left one."""
    trained = REPO / f"var/runs/{profile}/diffusion/generator"  # README command 1's run for tiny
    if (trained / "generator.json").is_file():
        return str(trained), "trained"
    from diffcxr.config import load_config
    from services.diffusion.generator import build_initial_bundle

    folder = REPO / f"var/bench/serve-init-bundle-{profile}"
    return str(build_initial_bundle(load_config(profile), folder)), "initial (random init; timing only)"


def start_server(config: dict[str, Any], tmp: Path) -> tuple[subprocess.Popen, str, float, float]:
    """(process, base URL, seconds to health ok, seconds to the first image) from process launch."""
    path = tmp / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{config['http_port']}/"
    log = open(tmp / "serve.log", "w")  # noqa: SIM115 - lives as long as the server
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [str(REPO / ".venv/bin/diffcxr"), "--log-level", "warning", "serve", "--config", str(path)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    healthy = None
    while time.perf_counter() - t0 < 300:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; see {tmp / 'serve.log'}")
        try:
            if requests.get(url + "v1/health", timeout=5).json().get("status") == "ok":
                healthy = time.perf_counter() - t0
                break
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.5)
    if healthy is None:
        raise RuntimeError("server not healthy after 300 s")
    r = requests.post(url + "v1/generate", json={"report": REPORTS[0], "seed": 0}, timeout=300)
    r.raise_for_status()
    return proc, url, healthy, time.perf_counter() - t0


def stop_server(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def drive(url: str, concurrency: int, requests_n: int, time_cap_s: float, steps: int | None) -> dict[str, Any]:
    """``requests_n`` requests through ``concurrency`` client threads (stops early at ``time_cap_s``)."""
    latencies: list[float] = []
    failures: list[str] = []
    batches: list[int] = []
    precisions: set[str] = set()
    lock = threading.Lock()
    counter = iter(range(requests_n))
    t_start = time.perf_counter()

    def worker() -> None:
        session = requests.Session()
        while time.perf_counter() - t_start < time_cap_s:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            body = {"report": REPORTS[i % len(REPORTS)], "seed": 1000 + i}
            if steps:
                body["steps"] = steps
            t = time.perf_counter()
            try:
                r = session.post(url + "v1/generate", json=body, timeout=600)
                ok = r.status_code == 200
                payload = r.json() if ok else None
            except requests.RequestException as exc:
                ok, payload = False, None
                r = exc  # type: ignore[assignment]
            with lock:
                if ok:
                    latencies.append(time.perf_counter() - t)
                    batches.append(payload["batch_sizes"]["denoise"])
                    precisions.update(im["precision"] for im in payload["images"])
                else:
                    failures.append(str(getattr(r, "status_code", r)))

    with ThreadPoolExecutor(concurrency) as pool:
        for _ in range(concurrency):
            pool.submit(worker)
    wall = time.perf_counter() - t_start
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else [float("nan")] * 99
    return {
        "concurrency": concurrency,
        "requests": len(latencies) + len(failures),
        "failed": len(failures),
        "wall_s": round(wall, 2),
        "throughput_images_per_s": round(len(latencies) / wall, 3),
        "latency_s": {
            "p50": round(q[49], 3),
            "p95": round(q[94], 3),
            "p99": round(q[98], 3),
            "mean": round(statistics.fmean(latencies), 3),
        },  # fmt: skip
        "p99_over_p50": round(q[98] / q[49], 2),
        "mean_denoiser_batch": round(statistics.fmean(batches), 2) if batches else None,
        "precision": sorted(precisions),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="generator bundle folder or models:/ ref (default: see --profile)")
    parser.add_argument("--profile", default="tiny", help="without --model: this profile's trained generator, "
                        "else one of its architecture with initial weights (default tiny)")  # fmt: skip
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=64, help="requests per concurrency level (warm-up excluded)")
    parser.add_argument("--time-cap", type=float, default=180.0, help="seconds per level at most")
    parser.add_argument("--steps", type=int, help="sampler steps per request (default: the bundle's)")
    parser.add_argument("--max-batch", type=int, default=8, help="max_batch_size when batching is on")
    parser.add_argument("--tag", default="", help="suffix of the results file")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), help="serve.precision (default: bundle's)")
    parser.add_argument("--out", help="results path (default benchmarks/results/serving_load[_TAG]_<date>.json)")
    args = parser.parse_args()

    from diffusion_flops import machine_info

    model, weights = (args.model, "as given") if args.model else default_model(args.profile)
    runs = []
    for batching in (True, False):
        size = args.max_batch if batching else 1
        config = {
            "model": model, "http_port": free_port(), "grpc_port": None, "model_refresh_s": 0,
            "precision": args.precision,
            "limits": {"max_concurrent_per_client": 64, "max_steps": 1000},
            "text": {"num_cpus": 0.2, "max_batch_size": size},
            "denoiser": {"num_cpus": 1.0, "threads": 2, "max_batch_size": size, "batch_wait_timeout_s": 0.05,
                         "max_ongoing_requests": 64},
            "decoder": {"num_cpus": 0.2, "max_batch_size": size},
            "ingress": {"num_cpus": 0.1, "max_batch_size": 1, "max_ongoing_requests": 256},
        }  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            proc, url, healthy_s, first_image_s = start_server(config, Path(tmp))
            try:
                info = requests.get(url + "v1/models", timeout=30).json()
                levels = []
                for c in args.levels:
                    drive(url, c, c, 60, args.steps)  # warm-up: one request per client thread
                    levels.append(drive(url, c, max(args.requests, 2 * c), args.time_cap, args.steps))
                    print(json.dumps({"batching": batching, **levels[-1]}), flush=True)
            finally:
                stop_server(proc)
        runs.append({
            "batching": batching, "max_batch_size": size, "cold_start_s": {"health_ok": round(healthy_s, 2),
            "first_image": round(first_image_s, 2)}, "levels": levels,
        })  # fmt: skip
    on, off = (next(r for r in runs if r["batching"] is b) for b in (True, False))
    top = max(args.levels)
    t_on = next(lv for lv in on["levels"] if lv["concurrency"] == top)["throughput_images_per_s"]
    t_off = next(lv for lv in off["levels"] if lv["concurrency"] == top)["throughput_images_per_s"]
    result = {
        "benchmark": "serving_load",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "model": {
            "ref": model,
            "weights": weights,
            "version": info["model"],
            "parts": info["parts"],
            "defaults": info["defaults"],
            "image_size": info["image_size"],
        },  # fmt: skip
        "steps": args.steps or info["defaults"]["steps"],
        "precision_asked": args.precision or "bundle default",
        "runs": runs,
        "summary": {
            f"batching_speedup_at_c{top}": round(t_on / t_off, 3),
            "goal_batching_beats_no_batching": t_on > t_off,
            "worst_p99_over_p50": max(lv["p99_over_p50"] for r in runs for lv in r["levels"]),
            "goal_p99_le_3x_p50": all(lv["p99_over_p50"] <= 3 for r in runs for lv in r["levels"]),
            "failed_requests": sum(lv["failed"] for r in runs for lv in r["levels"]),
        },
        "command": "python " + " ".join(sys.argv),
    }
    suffix = f"_{args.tag}" if args.tag else ""
    out = Path(args.out or REPO / f"benchmarks/results/serving_load{suffix}_{dt.date.today().isoformat()}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
