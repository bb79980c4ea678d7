"""Fault injection for tests, from one place: the ``DIFFCXR_FAULTS`` environment variable of the driver.

``DIFFCXR_FAULTS='{"uvit": {"crash_after_step": 3}, "text": {"kill_after_step": 4}}'`` makes the named
Ray Train fit (``text``, ``uvit``, ``adapter``, ``classifier``) misbehave right after that step:

- ``crash_after_step``: the worker raises right after that step's checkpoint (a fit that resumed past it
  does not crash again), so Ray Train's restart or a re-run must resume;
- ``kill_after_step``: rank 0 SIGKILLs its own process after that checkpoint, on the fit's first attempt
  only, as an OOM kill would;
- ``poison_after_step`` (``uvit`` and ``adapter``, the loops with a divergence stop): the weights become NaN
  after that step, so the next loss is non-finite.

The driver reads the plan when it starts a fit (:func:`plan_for`) and hands it to the workers in the loop
config; production code paths take no fault parameters.
"""

from __future__ import annotations

import json
import os

from diffcxr.errors import ConfigError

ENV = "DIFFCXR_FAULTS"
KINDS = ("crash_after_step", "kill_after_step", "poison_after_step")


def plan_for(fit: str) -> dict[str, int]:
    """The faults planned for the fit named ``fit`` (empty when none, the normal case)."""
    text = os.environ.get(ENV, "").strip()
    if not text:
        return {}
    try:
        plan = json.loads(text).get(fit, {})
    except (ValueError, AttributeError) as exc:
        raise ConfigError(f"{ENV}: not a JSON object of fit name → {{fault: step}}: {exc}") from None
    if not isinstance(plan, dict):
        raise ConfigError(f"{ENV}: '{fit}' must map to {{fault: step}}, got {plan!r}")
    unknown = set(plan) - set(KINDS)
    if unknown:
        raise ConfigError(f"{ENV}: unknown fault kinds {sorted(unknown)} for '{fit}'; known: {list(KINDS)}")
    return {k: int(v) for k, v in plan.items()}
