"""Benchmark: training throughput of tiny's U-ViT when two torch processes share the machine, by OMP_WAIT_POLICY.

Run by hand: ``.venv/bin/python benchmarks/omp_wait_policy.py`` (about 2.5 minutes; nothing else running).

Why: a Diff-CXR node runs several torch processes at once — a Ray Train worker beside Ray Data's tasks and
actors, three Serve deployments, pytest-xdist workers — each with its own OpenMP threads. libgomp's threads
spin at every barrier before they sleep, so a waiting thread of one process burns the core that a working
thread of another needs. ``diffcxr/env.py`` sets ``OMP_WAIT_POLICY=PASSIVE``; this measures what it buys and
what it costs a process that runs alone.

Method: one process is tiny's U-ViT (``diffcxr/profiles/tiny.yaml``: 32×8×8 latent, patch 1, 16×128 context,
embed 128, depth 4) doing forward + backward + AdamW at batch 32 on 2 threads for ``--seconds``; steps/s is
counted after one warm-up step. Four cases, each in fresh processes with the policy in their environment
(libgomp reads it when torch loads): alone and two at once, spinning (libgomp's default) and PASSIVE.
Writes ``benchmarks/results/omp_wait_policy_<date>.json`` (``--out`` overrides).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def worker(seconds: float) -> None:
    """One training process: prints its steps/s as JSON."""
    import torch

    sys.path.insert(0, str(REPO))
    from services.diffusion.uvit import UViT, UViTConfig

    torch.set_num_threads(2)
    torch.manual_seed(0)
    cfg = UViTConfig(latent_channels=32, latent_size=8, patch_size=1, embed_dim=128, depth=4, num_heads=4,
                     context_tokens=16, context_dim=128, pooled_context=True)  # fmt: skip
    model = UViT(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x, ctx = torch.randn(32, 32, 8, 8), torch.randn(32, 16, 128)

    def step() -> None:
        t = torch.randint(0, 1000, (32,))
        loss = (model(x, t, ctx) - x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        step()
        n += 1
    print(json.dumps({"steps_per_s": n / (time.perf_counter() - start)}))


def run_case(policy: str | None, processes: int, seconds: float) -> list[float]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    cmd = [sys.executable, __file__, "--worker", "--seconds", str(seconds)]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    return [round(json.loads(p.communicate()[0].strip().splitlines()[-1])["steps_per_s"], 3) for p in procs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="timed training per process")
    parser.add_argument("--out", help="result JSON path")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.seconds)

    sys.path.insert(0, str(REPO / "benchmarks"))
    from diffusion_flops import cpu_model, cpu_speed_flags

    load_before = os.getloadavg()
    cases = {}
    for policy, label in ((None, "spinning (libgomp default)"), ("PASSIVE", "PASSIVE")):
        alone = run_case(policy, 1, args.seconds)
        pair = run_case(policy, 2, args.seconds)
        cases[label] = {"alone_steps_per_s": alone[0], "two_at_once_steps_per_s_each": pair,
                        "two_at_once_total": round(sum(pair), 3)}  # fmt: skip
        print(label, cases[label], flush=True)
    result = {
        "benchmark": "omp_wait_policy",
        "date": dt.date.today().isoformat(),
        "machine": {"cpu_model": cpu_model(), "cpu_flags": cpu_speed_flags(), "cpus": os.cpu_count()},
        "command": "benchmarks/omp_wait_policy.py" + (f" --seconds {args.seconds:g}" if args.seconds != 30 else ""),
        "workload": "tiny's U-ViT (32x8x8 latent, patch 1, 16x128 context, embed 128, depth 4), batch 32, "
        "forward + backward + AdamW, 2 threads per process",
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "cases": cases,
    }
    out = Path(args.out or REPO / "benchmarks" / "results" / f"omp_wait_policy_{result['date']}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
