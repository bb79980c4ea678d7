"""The register stage: the promotion gate between a trained generator and the ``champion`` alias.

The training stages register every new version under ``tracking.candidate_alias``.
This stage reads the eval stage's results for the generator just trained and
compares them with the current champion's (:mod:`services.register.gate`):

* no champion yet, or the new generator wins → ``tracking.alias`` (champion) on the
  generator and on the parts it was built from (text model, U-ViT, adapter), so the
  champion of every registered model is one consistent set;
* below the absolute floor ``promotion.min_mauc`` → stays ``tracking.candidate_alias``
  (never champion, even when no champion exists);
* otherwise → ``tracking.challenger_alias``, and the champion stays.

Either way the version's description and tags say why (``promotion.reason``), and
its eval metrics are stored on it with the id of the evaluation set they came
from. A champion scored on another set (other held-out reports, classifier or
sampling settings) is first scored on this one (``promotion.reevaluate_champion``),
so the comparison is always like for like. Output: ``<run_root>/register/promotion.json``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from mlflow.exceptions import MlflowException

from diffcxr import storage
from diffcxr.config import DiffCXRConfig
from diffcxr.errors import DataError, TrackingError
from diffcxr.stages import DEFAULT_CALL, StageCall, StageDir, content_key, read_marker
from diffcxr.tracking import Tracker
from services.register.gate import Decision, below_floor, decide

log = logging.getLogger(__name__)
STAGE = "register"
COMPARED = ("mAUC", "fid_domain")


def eval_set_id(results: dict[str, Any]) -> str:
    """What makes two evaluations comparable: the held-out reports, classifier, label policy and sampling."""
    dataset, config = results["dataset"], results["config"]
    return content_key(
        dataset["manifest_sha256"],
        dataset["eval_reports"],
        dataset["images_per_report"],
        dataset["label_policy"],
        results["classifier"],
        {k: config.get(k) for k in ("steps", "guidance", "num_reports")},
    )


#: The eval's shuffled-labels control (services/eval/stage.py), as the gate reads it.
CHANCE = {
    "mAUC_chance_mean": "generated, report labels shuffled: mAUC (mean of 20)",
    "mAUC_chance_sd": "generated, report labels shuffled: mAUC spread (sd)",
}


def eval_metrics(results: dict[str, Any]) -> dict[str, float | None]:
    """The compared metrics of the evaluated generator, and its eval's chance control (None when absent)."""
    main, calibration = results["models"]["model"], results.get("calibration") or {}
    return {**{name: main.get(name) for name in COMPARED}, **{k: calibration.get(v) for k, v in CHANCE.items()}}


def _tag_value(value: float | None) -> str:
    return "none" if value is None else repr(float(value))


def _from_tag(text: str | None) -> float | None:
    return None if text in (None, "none", "") else float(text)


def default_inputs(cfg: DiffCXRConfig) -> dict[str, str]:
    """What the gate reads when run alone: the run folder's text, diffusion and eval stage folders (their
    markers say what was registered and evaluated)."""
    return {name: StageDir(cfg.run_root, name).uri for name in ("text", "diffusion", "eval")}


def _stage_inputs(inputs: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The diffusion marker, the eval marker and the eval results, checked to belong together."""
    diffusion, evaluation = read_marker(inputs["diffusion"]), read_marker(inputs["eval"])
    if not diffusion:
        raise DataError(f"no completed diffusion stage under {inputs['diffusion']}: run the pipeline up to it first")
    if not evaluation:
        raise DataError(f"no completed eval stage under {inputs['eval']}: run it first (--from eval)")
    if not (diffusion.get("summary", {}).get("registered") or {}).get("generator"):
        raise DataError(
            f"the diffusion stage at {inputs['diffusion']} ran without MLflow tracking, so there is no registered "
            "generator to promote; re-run it tracked (diffcxr pipeline run --from diffusion --force)"
        )
    results = json.loads(storage.read_text(evaluation["outputs"]["results"]))
    if results.get("model") != diffusion["outputs"]["generator"]:
        raise DataError(
            f"the eval results at {inputs['eval']} are for '{results.get('model')}', not for the generator "
            f"trained at {inputs['diffusion']} ('{diffusion['outputs']['generator']}'); re-run --from eval"
        )
    return diffusion, evaluation, results


def _check_version(tracker: Tracker, name: str, version: int, diffusion: dict[str, Any], results: dict[str, Any]):
    """The registry version must be the generator trained (and evaluated) in this run folder."""
    try:
        found = tracker.client.get_model_version(name, str(version))
    except MlflowException:
        raise DataError(
            f"registered model {name} version {version} (recorded by the diffusion stage) is not in the registry at "
            f"{tracker.tracking_uri}; re-run the diffusion stage against this server (--from diffusion --force)"
        ) from None
    if found.tags.get("stage_key") != diffusion["key"]:
        raise DataError(
            f"{name} version {version} at {tracker.tracking_uri} was not trained by this run folder's diffusion stage "
            "(its stage_key tag differs); re-run --from diffusion --force"
        )
    evaluated = (results.get("provenance", {}).get("model") or {}).get("uvit") or ""
    if not found.tags.get("uvit_sha256", "").startswith(evaluated):
        raise DataError(f"the eval results are for another U-ViT than {name} version {version}; re-run --from eval")
    return found


def _champion_metrics(
    cfg: DiffCXRConfig, tracker: Tracker, name: str, version: int, set_id: str, out: str, eval_folder: str
) -> dict[str, float | None] | None:
    """The champion's metrics on this evaluation set: from its tags, or by evaluating it now (None when the
    sets differ and re-evaluation is off)."""
    tags = tracker.client.get_model_version(name, str(version)).tags
    if tags.get("eval.set") == set_id:
        return {m: _from_tag(tags.get(f"eval.{m}")) for m in COMPARED}
    if not cfg.promotion.reevaluate_champion:
        return None
    from services.eval import run_eval

    log.info("champion %s v%s has no result on evaluation set %s: evaluating it now", name, version, set_id)
    target = storage.join(out, f"champion-v{version}")
    classifier = storage.join(eval_folder, "classifier")
    if storage.exists(storage.join(classifier, "classifier.json")):  # the same classifier, not a second training
        for uri in storage.list_files(classifier):
            storage.copy(uri, storage.join(target, "classifier", uri[len(classifier) :].lstrip("/")))
    quick = cfg.eval.model_copy(update={"downstream": False, "variants": [], "without_adapter": False})
    call = StageCall(inputs={"model": f"models:/{name}/{version}"}, out_uri=target)
    outcome = run_eval(cfg.model_copy(update={"eval": quick}), call)
    results = outcome["summary"]
    if eval_set_id(results) != set_id:
        raise DataError(f"re-evaluating {name} v{version} gave evaluation set {eval_set_id(results)}, not {set_id}")
    metrics = eval_metrics(results)
    _record_eval(tracker, name, version, set_id, metrics, outcome["key"])
    return metrics


def _record_eval(
    tracker: Tracker, name: str, version: int, set_id: str, metrics: dict[str, float | None], eval_key: str
) -> None:
    tags = {"eval.set": set_id, "eval.key": eval_key, **{f"eval.{m}": _tag_value(v) for m, v in metrics.items()}}
    for key, value in tags.items():
        tracker.client.set_model_version_tag(name, str(version), key, value)


def _parts(diffusion: dict[str, Any], text_folder: str) -> dict[str, int]:
    """Registered parts of the generator (model name → version): U-ViT, adapter, and the text model."""
    parts = {}
    for key, entry in (diffusion["summary"].get("registered") or {}).items():
        if key != "generator" and isinstance(entry, dict) and entry.get("name"):
            parts[entry["name"]] = int(entry["version"])
    text = (read_marker(text_folder) or {}).get("summary", {}).get("registered") or {}
    if text.get("name"):
        parts[text["name"]] = int(text["version"])
    return parts


def _apply(
    tracker: Tracker,
    name: str,
    version: int,
    alias: str,
    description: str,
    parts: dict[str, int],
    tags: dict[str, str],
) -> None:
    """Record a decision on the version (``promotion.decision`` plus ``tags``, the description), move ``alias``
    to it, and the same alias to ``parts`` (model name → version): the gate's and an operator's path alike."""
    for tag, value in {"promotion.decision": alias, **tags}.items():
        tracker.client.set_model_version_tag(name, str(version), tag, value[:5000])
    tracker.client.update_model_version(name, str(version), description=description)
    tracker.set_alias(name, alias, version)
    for part, part_version in parts.items():
        tracker.set_alias(part, alias, part_version)


def _still_holds(tracker: Tracker, record: dict[str, Any], champion: int | None) -> bool:
    """A recorded decision stays current while its alias still points at the version and, for a challenger,
    the champion it lost to is still the champion."""
    name, version = record.get("model"), record.get("version")
    if not name or tracker.alias_version(name, record.get("alias", "")) != version:
        return False
    return bool(record.get("promoted")) or champion == record.get("previous_champion")


def run(cfg: DiffCXRConfig, call: StageCall = DEFAULT_CALL) -> dict[str, Any]:
    """Promote the generator trained at ``inputs["diffusion"]`` and evaluated at ``inputs["eval"]`` (stage
    folders) to champion, or make it challenger; say why in MLflow."""
    tracker = call.tracker
    if tracker is None:
        raise TrackingError("the register stage needs MLflow tracking (the registry is where it acts)")
    paths = call.paths(default_inputs(cfg))
    diffusion, evaluation, results = _stage_inputs(paths)
    generator = diffusion["summary"]["registered"]["generator"]
    name, version = generator["name"], int(generator["version"])
    _check_version(tracker, name, version, diffusion, results)
    champion = tracker.alias_version(name, cfg.tracking.alias)
    stage, out = call.folder(cfg.run_root, STAGE)
    key = content_key(
        STAGE, name, version, evaluation["key"], cfg.to_dict()["promotion"],
        [cfg.tracking.alias, cfg.tracking.challenger_alias],
    )  # fmt: skip
    reused = call.reuse(stage, key)
    if reused and _still_holds(tracker, reused["summary"], champion):
        return reused

    set_id, metrics = eval_set_id(results), eval_metrics(results)
    _record_eval(tracker, name, version, set_id, metrics, evaluation["key"])
    champion_metrics: dict[str, float | None] | None = None
    refused = below_floor(metrics, cfg.promotion)
    if champion == version:
        decision = Decision(True, f"version {version} is already the champion")
    elif refused is not None:  # no need to score the champion against a model below the floor
        decision = refused
    elif champion is None:
        decision = decide(metrics, None, cfg.promotion)
    else:
        label = f"champion v{champion}"
        champion_metrics = _champion_metrics(cfg, tracker, name, champion, set_id, out, paths["eval"])
        if champion_metrics is None:
            decision = Decision(
                False,
                f"{label} was evaluated on another evaluation set and promotion.reevaluate_champion is false, so "
                "the two cannot be compared; the champion stays",
            )
        else:
            decision = decide(metrics, champion_metrics, cfg.promotion, label)

    if decision.promote:
        alias = cfg.tracking.alias
    else:
        alias = cfg.tracking.candidate_alias if decision.below_floor else cfg.tracking.challenger_alias
    parts = _parts(diffusion, paths["text"])
    _apply(tracker, name, version, alias, f"{alias}: {decision.reason}", parts if decision.promote else {}, {
        "promotion.reason": decision.reason, "promotion.compared_with": str(champion) if champion else "none",
        "promotion.parts": json.dumps(parts, sort_keys=True)})  # fmt: skip
    log.info("register: %s v%s -> @%s (%s)", name, version, alias, decision.reason)

    record = {
        "model": name,
        "version": version,
        "alias": alias,
        "promoted": decision.promote,
        "reason": decision.reason,
        "previous_champion": champion,
        "metric": cfg.promotion.metric,
        "eval_set": set_id,
        "new": metrics,
        "champion": champion_metrics,
        "parts": parts,
        "tracking_uri": tracker.tracking_uri,
    }
    uri = storage.join(out, "promotion.json")
    storage.write_text(uri, json.dumps(record, indent=2))
    tracker.log_params({"promotion": cfg.to_dict()["promotion"], "register.version": version})
    tracker.log_metrics(
        {f"register.new_{m}": v for m, v in metrics.items() if v is not None}
        | {f"register.champion_{m}": v for m, v in (champion_metrics or {}).items() if v is not None}
        | {"register.promoted": float(decision.promote)}
    )
    tracker.set_tags({"promotion.decision": alias, "promotion.reason": decision.reason[:5000]})
    tracker.log_dict(record, "register/promotion.json")
    if stage:
        stage.complete(key, {"promotion": uri}, {"summary": record})
    return {"skipped": False, "promotion": uri, "summary": record, "key": key, **record}


def promote_manually(tracker: Tracker, name: str, version: int, alias: str, reason: str, champion_alias: str) -> dict:
    """An operator's decision (a rollback, an override of the gate): ``alias`` on ``name`` version ``version``,
    and, for the champion alias, on the parts recorded with it, with ``reason`` on the version like the gate's."""
    if not reason.strip():
        raise DataError("reason: say why the gate is overridden (it is stored on the model version)")
    try:
        found = tracker.client.get_model_version(name, str(version))
    except MlflowException:
        raise DataError(f"version: {name} has no version {version} in the registry at {tracker.tracking_uri}") from None
    parts = {k: int(v) for k, v in json.loads(found.tags.get("promotion.parts") or "{}").items()}
    note = f"manual: {reason.strip()}"
    moved = parts if alias == champion_alias else {}
    _apply(tracker, name, version, alias, f"{alias} (manual): {reason.strip()}", moved, {"promotion.reason": note})
    log.info("promote: %s v%s -> @%s by hand", name, version, alias)
    return {"model": name, "version": version, "alias": alias, "reason": note, "parts": moved}
