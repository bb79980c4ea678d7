"""Benchmark: building the IU-Xray manifest from the torchxrayvision wheel (all 3,955 reports).

Run by hand: ``.venv/bin/python benchmarks/bench_manifest.py``. Writes
``benchmarks/results/manifest_build_<date>.json`` with the machine and the timings.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffcxr.config import load_config  # noqa: E402
from services.data import iu_xray  # noqa: E402
from services.data.build import build_manifest  # noqa: E402


def main() -> None:
    cfg = load_config("small", ["data.max_reports=null"])
    iu_xray.view_table()  # the view table is cached per process; time it separately
    started = time.perf_counter()
    iu_xray.view_table.cache_clear()
    iu_xray.view_table()
    view_table_s = time.perf_counter() - started
    times = []
    for _ in range(3):
        started = time.perf_counter()
        result = build_manifest(cfg.data)
        times.append(time.perf_counter() - started)
    summary = result.summary
    record = {
        "benchmark": "manifest_build_iu_xray_wheel",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "accelerator": None,
        },
        "reports": summary["reports_read"],
        "rows": summary["rows"],
        "status": summary["status"],
        "kept_by_split": summary["kept_by_split"],
        "view_table_load_s": round(view_table_s, 3),
        "build_s": {"median": round(statistics.median(times), 3), "runs": [round(t, 3) for t in times]},
        "reports_per_s": round(summary["reports_read"] / statistics.median(times), 1),
    }
    out = Path(__file__).parent / "results" / f"manifest_build_{dt.date.today().isoformat()}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
