"""Per-stage progress lines with an ETA, so a person watching ``ray job logs -f`` knows how long is left.

Expected stage times come from the last run of each stage under the same run
root (``<run_root>/_timings.json``), else from times measured on this project's 2-core
reference machines for the shipped profiles, else there is no estimate (and the line says so).
While a stage runs, a heartbeat line is printed every ``interval`` seconds.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from diffcxr import storage
from diffcxr.errors import StorageError

#: Seconds per stage of a first run, measured on 2-core CPUs: tiny is README command 1 on the AVX2-only AMD
#: EPYC (2026-12-05, 2981c85); small is run J on the AVX-512 Xeon (2026-12-03). A first run's ETA uses these.
MEASURED: dict[str, dict[str, float]] = {
    "tiny": {"data": 11, "filter": 47, "text": 113, "diffusion": 428, "eval": 105, "register": 1},
    "small": {"data": 18, "filter": 311, "text": 358, "diffusion": 1332, "eval": 1071, "register": 1},
}
TIMINGS_FILE = "_timings.json"


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """Knows how long each stage took before and prints where the pipeline is."""

    def __init__(self, run_root: str, profile: str, stages: list[str], interval: float = 30.0) -> None:
        self.uri = storage.join(run_root, TIMINGS_FILE)
        self.stages = stages
        self.interval = interval
        self.expected = dict(MEASURED.get(profile, {}))
        with contextlib.suppress(StorageError, ValueError):
            self.expected.update(json.loads(storage.read_text(self.uri)))

    def remaining_after(self, name: str) -> float | None:
        """Expected seconds of the stages after ``name`` (None when one has no estimate)."""
        later = self.stages[self.stages.index(name) + 1 :]
        if any(s not in self.expected for s in later):
            return None
        return sum(self.expected[s] for s in later)

    def line(self, prefix: str, name: str, elapsed: float) -> str:
        expected = self.expected.get(name)
        if expected is None:
            return f"{prefix}: running {_clock(elapsed)} (no estimate yet for this stage)"
        left = max(expected - elapsed, 0.0)
        rest = self.remaining_after(name)
        eta = ""
        if rest is not None:
            eta = f", pipeline ETA {time.strftime('%H:%M:%S', time.localtime(time.time() + left + rest))}"
        over = " (longer than expected)" if elapsed > expected else ""
        return f"{prefix}: running {_clock(elapsed)} of ~{_clock(expected)}{over}{eta}"

    @contextmanager
    def stage(self, prefix: str, name: str) -> Iterator[None]:
        """Print the start line and a heartbeat every ``interval`` seconds; the caller :meth:`record` s the time
        of a stage that ran (not of a skipped or failed one)."""
        started = time.time()
        print(self.line(prefix, name, 0.0).replace("running 0s of", "running, expected"), flush=True)
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.interval):
                print(self.line(prefix, name, time.time() - started), flush=True)

        thread = threading.Thread(target=beat, name=f"progress-{name}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def record(self, name: str, seconds: float) -> None:
        """Keep a stage's wall time for the next run's estimates (best effort: never fails the pipeline)."""
        self.expected[name] = round(seconds, 1)
        with contextlib.suppress(StorageError):
            storage.write_text(self.uri, json.dumps(self.expected, indent=2, sort_keys=True))
