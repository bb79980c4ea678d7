"""Benchmark: do the report contexts the denoiser is conditioned on carry the report's findings?

Run after the text stage of a profile: ``.venv/bin/python benchmarks/text_label_probe.py -p tiny``.

A logistic-regression probe per disease on the mean of each report's squeezed context tokens, fitted on
the train split's contexts and scored (AUC) on the held-out ones. High AUC: the label reaches the U-ViT
through its context, so a generator that ignores it has a training problem, not a text problem.
Writes ``benchmarks/results/text_label_probe_<profile>_<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffcxr.env import apply_defaults  # noqa: E402

apply_defaults()

import numpy as np  # noqa: E402
from diffusion_flops import machine_info  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from diffcxr import manifest, storage  # noqa: E402
from diffcxr.config import load_config  # noqa: E402
from diffcxr.constants import EVAL_DISEASES  # noqa: E402
from diffcxr.contracts.embeddings import read_embeddings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-p", "--profile", default="tiny")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    cfg = load_config(args.profile, args.overrides)
    embeddings = read_embeddings(storage.join(cfg.run_root, "text", "embeddings"))
    index = embeddings.index()
    rows = [r for r in manifest.read(storage.join(cfg.run_root, "filter", "manifest.parquet")).to_pylist()
            if r["sample_id"] in index]  # fmt: skip
    train = [r for r in rows if r["split"] == "train"]
    heldout = [r for r in rows if r["split"] != "train"]

    def features(part: list[dict]) -> np.ndarray:
        return np.stack([embeddings.contexts[index[r["sample_id"]]].astype(np.float32).mean(0) for r in part])

    x_train, x_heldout = features(train), features(heldout)
    per = {}
    for name in EVAL_DISEASES:
        y_train = np.array([r.get(name) == 1 for r in train], dtype=int)
        y_heldout = np.array([r.get(name) == 1 for r in heldout], dtype=int)
        entry = {"positives_train": int(y_train.sum()), "positives_heldout": int(y_heldout.sum())}
        if y_train.sum() >= 3 and 0 < y_heldout.sum() < len(y_heldout):
            probe = LogisticRegression(max_iter=3000).fit(x_train, y_train)
            entry["auc"] = round(float(roc_auc_score(y_heldout, probe.predict_proba(x_heldout)[:, 1])), 4)
        else:
            entry["auc"] = None
        per[name] = entry
        print(name, entry, flush=True)
    record = {
        "benchmark": "text_label_probe",
        "profile": args.profile,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "command": "python benchmarks/text_label_probe.py " + " ".join(sys.argv[1:]),
        "contexts": {"train": len(train), "heldout": len(heldout), "shape": list(embeddings.meta["context_shape"])},
        "per_disease": per,
    }
    today = dt.date.today().isoformat()
    out = args.out or Path(__file__).parent / "results" / f"text_label_probe_{args.profile}_{today}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
