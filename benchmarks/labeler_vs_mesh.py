"""Benchmark: the rule labeler against IU-Xray's MeSH annotations (torchxrayvision's Open-i mapping).

Run by hand: ``.venv/bin/python benchmarks/labeler_vs_mesh.py [--examples N]``.
Reference labels come from ``torchxrayvision.datasets.Openi_Dataset`` (MeSH
"automatic" terms mapped to 18 pathologies), one row per report. Our labels
come from FINDINGS + IMPRESSION. A report counts as positive for us when the
class is 1 (uncertain counted as negative; the ``uncertain_as_positive`` block
shows the other choice). Writes ``benchmarks/results/labeler_vs_mesh_<date>.json``.
``--examples`` prints disagreeing sentences to the terminal only: IU text is
CC BY-NC-ND and is never written to the repository.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffcxr.labeling import RuleLabeler  # noqa: E402
from services.data.iu_xray import iter_wheel_xml, parse_report  # noqa: E402

#: Our class → the torchxrayvision Open-i pathologies that mean the same finding.
MAPPING: dict[str, tuple[str, ...]] = {
    "Atelectasis": ("Atelectasis",),
    "Cardiomegaly": ("Cardiomegaly",),
    "Edema": ("Edema",),
    "Pleural Effusion": ("Effusion",),
    "Pneumonia": ("Pneumonia",),
    "Pneumothorax": ("Pneumothorax",),
    "Fracture": ("Fracture",),
    "Lung Lesion": ("Lung Lesion", "Mass", "Nodule", "Granuloma", "Calcified Granuloma"),
    "Lung Opacity": ("Lung Opacity", "Infiltration"),
    "Pleural Other": ("Pleural_Thickening",),
}


def mesh_labels() -> dict[str, set[str]]:
    """report uid → set of our class names positive in the MeSH-derived labels."""
    import torchxrayvision as xrv

    ds = xrv.datasets.Openi_Dataset(imgpath="", views=["*"], unique_patients=True)
    names = [str(p) for p in ds.pathologies]
    out: dict[str, set[str]] = {}
    for uid, row in zip(ds.csv["uid"], ds.labels, strict=True):
        positives = {names[i] for i, value in enumerate(row) if value == 1}
        out[str(uid)] = {ours for ours, theirs in MAPPING.items() if positives & set(theirs)}
    return out


def prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": round(p, 3), "recall": round(r, 3), "f1": round(f, 3), "tp": tp, "fp": fp, "fn": fn}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=0, help="print N disagreements per class (terminal only)")
    args = parser.parse_args()
    reference = mesh_labels()
    reports = {r.uid: r for r in (parse_report(x) for _, x in iter_wheel_xml())}
    labeler = RuleLabeler()
    started = time.perf_counter()
    ours = {uid: labeler.label_text(reports[uid].text) for uid in reference if uid in reports}
    seconds = time.perf_counter() - started
    results: dict[str, dict[str, dict[str, float]]] = {"uncertain_as_negative": {}, "uncertain_as_positive": {}}
    shown: dict[tuple[str, str], int] = {}
    for mode, wanted in (("uncertain_as_negative", {1}), ("uncertain_as_positive", {1, -1})):
        for name in MAPPING:
            tp = fp = fn = 0
            for uid, labels in ours.items():
                mine = labels.labels[name] in wanted
                theirs = name in reference[uid]
                tp += mine and theirs
                fp += mine and not theirs
                fn += theirs and not mine
                if args.examples and mode == "uncertain_as_negative" and mine != theirs:
                    kind = "FP" if mine else "FN"
                    if shown.get((name, kind), 0) < args.examples:
                        shown[(name, kind)] = shown.get((name, kind), 0) + 1
                        print(f"[{name} {kind} ours={labels.labels[name]}] {uid}: {reports[uid].text[:400]}")
            results[mode][name] = prf(tp, fp, fn)
        results[mode]["macro_f1"] = round(sum(r["f1"] for r in results[mode].values()) / len(MAPPING), 3)
    record = {
        "benchmark": "labeler_vs_iu_mesh",
        "labeler": labeler.name,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "reports": len(ours),
        "label_seconds": round(seconds, 3),
        "reports_per_second": round(len(ours) / seconds, 1),
        **results,
    }
    out = Path(__file__).parent / "results" / f"labeler_vs_mesh_{dt.date.today().isoformat()}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
