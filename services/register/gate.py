"""The promotion rule: does a new generator's evaluation beat the champion's?

Kept apart from the registry calls so the rule reads in one place and can be
checked on numbers alone. Both sides must come from the same evaluation set
(same held-out reports, classifier, label policy and sampling settings); the
stage makes sure of that before it asks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from diffcxr.config import PromotionConfig

#: The metrics the gate reads, and whether a higher value is better.
HIGHER_IS_BETTER: dict[str, bool] = {"mAUC": True, "fid_domain": False}


@dataclass(frozen=True)
class Decision:
    """The gate's answer: promote or not, and the sentence that says why (stored in MLflow)."""

    promote: bool
    reason: str
    below_floor: bool = False  # refused by the absolute floor: the version stays candidate, not challenger


def _fmt(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.4f}"


def below_floor(new: Mapping[str, float | None], rules: PromotionConfig) -> Decision | None:
    """The floor's refusal, else None: the new generator's mAUC is undefined, below ``min_mauc``, or not
    ``min_sd_over_chance`` standard deviations above its eval's shuffled-labels control (``mAUC_chance_mean``,
    ``mAUC_chance_sd``; skipped when the results lack it)."""
    mauc, floor = new.get("mAUC"), rules.min_mauc
    if floor is not None and (mauc is None or mauc < floor):
        return Decision(
            False,
            f"mAUC {_fmt(mauc)} is below the floor {floor:g} (promotion.min_mauc): a generator whose "
            "images do not follow their reports is never promoted",
            below_floor=True,
        )
    mean, sd, k = new.get("mAUC_chance_mean"), new.get("mAUC_chance_sd"), rules.min_sd_over_chance
    if k is None or mean is None or sd is None:
        return None
    if mauc is None or mauc <= mean + k * sd:
        return Decision(
            False,
            f"mAUC {_fmt(mauc)} is within {k:g} sd of chance on this eval set (shuffled labels: {mean:.4f} ± "
            f"{sd:.4f}; promotion.min_sd_over_chance): its images may not follow their reports",
            below_floor=True,
        )
    return None


def decide(
    new: Mapping[str, float | None],
    champion: Mapping[str, float | None] | None,
    rules: PromotionConfig,
    champion_label: str = "the champion",
) -> Decision:
    """Compare ``new`` with ``champion`` (metric name → value; None when the eval could not define it).

    A generator below ``min_mauc`` (or with an undefined mAUC) is refused first, whatever the champion:
    a model that draws noise must not become champion just because none exists yet. No champion → promote.
    Otherwise the configured metric must be better than the
    champion's by more than ``min_improvement`` (a tie keeps the champion), and with
    mAUC as the metric the domain FID may not grow by more than ``max_fid_regression``
    (relative), so a generator cannot win on labels while its images drift away.
    """
    metric = rules.metric
    refused = below_floor(new, rules)
    if refused is not None:
        return refused
    if champion is None:
        return Decision(True, f"no champion yet; {metric} {_fmt(new.get(metric))}")
    mine, theirs = new.get(metric), champion.get(metric)
    if mine is None:
        return Decision(False, f"{metric} is undefined for the new generator; {champion_label} keeps the alias")
    if theirs is None:
        return Decision(True, f"{metric} {_fmt(mine)}; {champion_label} has no {metric} on this evaluation set")
    higher = HIGHER_IS_BETTER[metric]
    margin = (mine - theirs) if higher else (theirs - mine)
    word = "higher" if higher else "lower"
    if margin <= rules.min_improvement:
        need = f" by more than {rules.min_improvement:g}" if rules.min_improvement else ""
        return Decision(
            False,
            f"{metric} {_fmt(mine)} vs {champion_label}'s {_fmt(theirs)}: not {word}{need}",
        )
    fid_new, fid_old = new.get("fid_domain"), champion.get("fid_domain")
    limit = rules.max_fid_regression
    guarded = metric != "fid_domain" and limit is not None and fid_new is not None and fid_old is not None
    if guarded and fid_new > fid_old * (1.0 + limit):
        return Decision(
            False,
            f"{metric} {_fmt(mine)} beats {champion_label}'s {_fmt(theirs)}, but domain FID {_fmt(fid_new)} is "
            f"more than {limit:.0%} above its {_fmt(fid_old)} (promotion.max_fid_regression)",
        )
    return Decision(True, f"{metric} {_fmt(mine)} beats {champion_label}'s {_fmt(theirs)}")
