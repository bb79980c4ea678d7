"""The eval stage: the paper's measurements of one generator, its tables, and an HTML report.

Inputs: the manifest (default: the filter stage's, so the real reference
images are the kept ones) and a generator (``--model``: bundle folder/URI or
``models:/diffcxr-generator@alias``; default: the diffusion stage's bundle).
Steps: load the real train and test images; get the reference classifier
(torchxrayvision's, or our DenseNet-121 trained here on Ray Train); generate
``images_per_report`` images for each of ``num_reports`` test-split reports
with a Ray Data actor pool; per-disease AUC, mAUC, domain FID (+ its real
train-vs-test floor) and Inception FID when available; GFLOPs and latency;
the ablation variants; the downstream experiment; calibration controls
(shuffled labels, noise); tables II/IV/V/VI; ``report.html`` with figures.
Outputs under ``out`` (default ``<run_root>/eval/``): ``results.json``,
``tables.json``, ``report.html``, ``figures/``, ``classifier/``,
``generated/``. With a tracker: every number, the classifier and dataset ids
as params, the report and figures as artifacts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from diffcxr import manifest, storage
from diffcxr.bundle import provenance, read_bundle_spec, resolve_bundle
from diffcxr.config import DiffCXRConfig, EvalVariant
from diffcxr.constants import EVAL_DISEASES
from diffcxr.contracts.images import decode_image
from diffcxr.errors import DataError, DiffCXRError
from diffcxr.raycluster import init_ray
from diffcxr.stages import DEFAULT_CALL, StageCall, StageDir, content_key
from diffcxr.tracking import Tracker
from services.eval import report, tables
from services.eval.classifier import OWN_KIND, OwnDenseNet, ReferenceClassifier, load_classifier
from services.eval.classifier_train import data_id, train_classifier
from services.eval.fid import InceptionFeatures, find_inception_weights, frechet_distance
from services.eval.generate import Generated, generate_with_ray, latency, requests
from services.eval.labels import LabelPolicy, label_matrix, per_disease_auc
from services.eval.metrics import image_metrics

log = logging.getLogger(__name__)
STAGE = "eval"


def default_inputs(cfg: DiffCXRConfig) -> dict[str, str]:
    return {
        "manifest": StageDir(cfg.run_root, "filter").path("manifest.parquet"),
        "model": StageDir(cfg.run_root, "diffusion").path("generator"),
    }


def resolve_model(ref: str, tracker: Tracker | None, cfg: DiffCXRConfig) -> Path:
    """A local generator folder for ``ref``, or an error that names ``ref``."""
    if tracker is None and ref.startswith("models:/"):
        tracker = Tracker.from_config(cfg)
    try:
        return resolve_bundle(ref, tracker)
    except DiffCXRError as exc:
        raise DataError(f"model '{ref}' does not resolve to a generator: {exc}") from None
    except Exception as exc:  # registry/network errors from MLflow
        raise DataError(f"model '{ref}' does not resolve to a generator: {type(exc).__name__}: {exc}") from None


def _bundle_digest(folder: Path) -> str:
    return hashlib.sha256((folder / "generator.json").read_bytes()).hexdigest()[:16]


def stage_key(cfg: DiffCXRConfig, manifest_bytes: bytes, model_digests: dict[str, str]) -> str:
    config = cfg.to_dict()
    digest = hashlib.sha256(manifest_bytes).hexdigest()[:16]
    flags = {"lnfs": cfg.filter.enabled, "ava_tls": bool(cfg.text.squeeze_tokens)}  # Table II's flags of --model
    return content_key(
        STAGE, config["eval"], config["data"]["image_size"], config["ray"]["num_workers"], cfg.project.seed, digest,
        model_digests, flags,
    )  # fmt: skip


def read_images(rows: list[dict[str, Any]], size: int) -> tuple[np.ndarray, list[dict[str, Any]], list[dict[str, str]]]:
    """uint8 (N, size, size) grayscale images of ``rows``, decoded exactly as the filter decoded them for
    training (:func:`diffcxr.contracts.images.decode_image`); rows whose image cannot be read are returned
    separately with the reason (accounted for, never silently dropped)."""
    images, ok, unreadable = [], [], []
    for row in rows:
        try:
            images.append(decode_image(storage.read_bytes(row["image_uri"]), size))
            ok.append(row)
        except Exception as exc:  # unreadable or missing file: report it with the row
            unreadable.append({"sample_id": row["sample_id"], "reason": f"{type(exc).__name__}: {exc}"[:200]})
    return (np.stack(images) if images else np.zeros((0, size, size), np.uint8)), ok, unreadable


def one_row_per_report(rows: list[dict[str, Any]]) -> np.ndarray:
    """Index of the first row of each distinct report, in row order.

    ``eval.num_reports`` counts reports: with ``data.phantom_seeds`` > 1 a report has several test rows
    (the same findings drawn again), and taking the first N rows made 64 eval rows of only ~21 reports.
    """
    seen: set[str] = set()
    picked = []
    for i, row in enumerate(rows):
        if row["report_id"] not in seen:
            seen.add(row["report_id"])
            picked.append(i)
    return np.asarray(picked, dtype=int)


def machine() -> str:
    import torch

    from diffcxr.machine import cpu_description

    threads = torch.get_num_threads()
    return f"{cpu_description()}, {os.cpu_count()} CPUs, {threads} torch threads, torch {torch.__version__}"


@dataclass
class EvalData:
    """The real side of an evaluation: readable train and held-out images, their labels, and the held-out
    rows (one per report) that the generators are asked to draw."""

    train_rows: list[dict[str, Any]]
    test_rows: list[dict[str, Any]]
    eval_idx: np.ndarray
    train_images: np.ndarray
    test_images: np.ndarray
    train_targets: np.ndarray
    test_targets: np.ndarray
    policy: LabelPolicy
    dataset: dict[str, Any]  # what results.json says about the data, every row accounted for

    @property
    def eval_rows(self) -> list[dict[str, Any]]:
        return [self.test_rows[i] for i in self.eval_idx]


def load_eval_data(cfg: DiffCXRConfig, manifest_bytes: bytes, manifest_uri: str) -> EvalData:
    """Read and decode the manifest's kept train and held-out images; refuse a set too small to compare."""
    table = manifest.parse(manifest_bytes, manifest_uri)
    all_rows = table.to_pylist()
    rows = manifest.kept_rows(table, with_image=True)
    size = cfg.data.image_size
    train_rows = sorted((r for r in rows if r["split"] == "train"), key=lambda r: r["sample_id"])
    test_rows = sorted(manifest.heldout_rows(rows), key=lambda r: r["sample_id"])
    if not test_rows:
        raise DataError(f"manifest '{manifest_uri}' has no kept test-split rows with images to evaluate against")
    if not train_rows:
        raise DataError(f"manifest '{manifest_uri}' has no kept train-split rows with images")
    policy = LabelPolicy.from_config(cfg.eval)
    train_images, train_rows, unreadable_train = read_images(train_rows, size)
    test_images, test_rows, unreadable_test = read_images(test_rows, size)
    eval_idx = one_row_per_report(test_rows)[: cfg.eval.num_reports or None]
    unreadable = unreadable_train + unreadable_test
    if len(eval_idx) < 2 or len(train_rows) < 2:
        raise DataError(
            f"manifest '{manifest_uri}': {len(eval_idx)} readable test and {len(train_rows)} readable train "
            f"images; the evaluation needs at least 2 of each (FID compares sets)"
            + (f"; unreadable: {unreadable[:3]}" if unreadable else "")
        )
    dataset = {
        "manifest": manifest_uri,
        "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest()[:16],
        "rows": len(all_rows),
        "train_images": len(train_rows),
        "test_images": len(test_rows),
        "eval_reports": len(eval_idx),
        "images_per_report": cfg.eval.images_per_report,
        "not_used": {
            "not kept or no image": len(all_rows) - len(rows),
            "other splits": len(rows) - len(train_rows) - len(test_rows) - len(unreadable),
        },
        "unreadable": unreadable,
        "label_policy": policy.describe(),
    }
    return EvalData(train_rows, test_rows, eval_idx, train_images, test_images, label_matrix(train_rows, policy),
                    label_matrix(test_rows, policy), policy, dataset)  # fmt: skip


def run(cfg: DiffCXRConfig, call: StageCall = DEFAULT_CALL) -> dict[str, Any]:
    """The whole stage: ``inputs["model"]`` (a bundle folder/URI or ``models:/NAME@ALIAS``) evaluated against
    ``inputs["manifest"]``. Skipped when the manifest, the models and the eval config are unchanged."""
    paths, tracker = call.paths(default_inputs(cfg)), call.tracker
    model_ref = paths["model"]
    folder = resolve_model(model_ref, tracker, cfg)
    variants = {v.name: (v, resolve_model(v.model, tracker, cfg)) for v in cfg.eval.variants}
    stage, out = call.folder(cfg.run_root, STAGE)
    manifest_bytes = storage.read_bytes(paths["manifest"])
    key = stage_key(cfg, manifest_bytes, {"model": _bundle_digest(folder),
                                          **{n: _bundle_digest(f) for n, (_, f) in variants.items()}})  # fmt: skip
    reused = call.reuse(stage, key)
    if reused:
        return reused
    started = time.perf_counter()
    data = load_eval_data(cfg, manifest_bytes, paths["manifest"])
    init_ray(cfg)
    work = Path(tempfile.mkdtemp(prefix="diffcxr-eval-"))
    try:
        results, built, figures = _evaluate(cfg, data, model_ref, folder, variants, out, work, key)
        html = report.render_html(results, built, figures)
        outputs = _write(out, results, built, figures, html)
        results["seconds"] = round(time.perf_counter() - started, 1)
        if tracker is not None:
            _track(tracker, cfg, results, out, figures, html, built)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    main = results["models"]["model"]
    if stage:
        stage.complete(key, outputs, {"summary": {"mAUC": main["mAUC"], "fid_domain": main["fid_domain"]}})
    return {"skipped": False, **outputs, "summary": results, "key": key}


def _evaluate(
    cfg: DiffCXRConfig, data: EvalData, model_ref: str, folder: Path,
    variants: dict[str, tuple[EvalVariant, Path]], out: str, work: Path, key: str,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, bytes]]:  # fmt: skip
    """(results, tables, figures) of one evaluation: reference classifier, generation, controls, tables."""
    spec = read_bundle_spec(folder)
    eval_idx, eval_rows = data.eval_idx, data.eval_rows
    rng = np.random.default_rng(cfg.project.seed)
    ref = _reference(cfg, data, out, work, rng)
    classifier, eval_feats = ref["classifier"], ref["eval_feats"]

    # ---- generation and metrics for the model and its variants
    models: dict[str, tuple[EvalVariant | None, Path]] = {"model": (None, folder)}
    job_uris = {"model": _job_uri(model_ref, folder, out, "model")}
    if cfg.eval.without_adapter and spec.get("adapter"):
        bare = bundle_without_adapter(folder, out, work)
        models["without adapter"] = (None, bare[0])
        job_uris["without adapter"] = bare[1]
    models.update(variants)
    job_uris.update({n: _job_uri(v.model, f, out, n) for n, (v, f) in variants.items()})
    items = requests(eval_rows, cfg.eval.images_per_report, cfg.project.seed)
    image_targets = np.repeat(label_matrix(eval_rows, data.policy), cfg.eval.images_per_report, axis=0)
    generated: dict[str, Generated] = {}
    generated_probs: dict[str, np.ndarray] = {}
    results_by_model: dict[str, dict[str, Any]] = {}
    for name in models:
        gen = generate_with_ray(items, job_uris[name], storage.join(out, "generated", _slug(name)), cfg,
                                cfg.eval.steps, cfg.eval.guidance)  # fmt: skip
        generated[name] = gen
        first = np.array([i for i, r in enumerate(gen.repeats) if r == 0])  # FID at equal set sizes
        scores = classifier.run(gen.images)
        generated_probs[name] = scores[0]
        metrics = image_metrics(classifier, gen.images, image_targets, eval_feats, ref["inception"],
                                ref["ref_inception"], first, scores, bootstrap=cfg.eval.bootstrap)  # fmt: skip
        metrics.update(seconds=round(gen.seconds, 2), images_per_second=round(gen.images_per_second, 3))
        results_by_model[name] = metrics
        log.info("eval %s: mAUC %s, domain FID %s", name, metrics["mAUC"], metrics["fid_domain"])
    real_auc = per_disease_auc(data.test_targets[eval_idx], ref["test_probs"][eval_idx], bootstrap=cfg.eval.bootstrap)
    real_eval = {"n_images": len(eval_idx), "auc": real_auc, "fid_domain": None, "mAUC": real_auc["mAUC"]}
    calibration = _calibration(ref, real_eval, image_targets, generated_probs["model"], generated["model"], rng)
    compute = _compute(spec)
    timing = latency(folder, eval_rows[0].get("report_text") or "", cfg.eval.latency_images, cfg.eval.steps,
                     cfg.eval.guidance)  # fmt: skip
    downstream_rows = _downstream(cfg, data, job_uris["model"], out, work, key) if cfg.eval.downstream else []

    # ---- tables, figures, report
    lnfs, ava = cfg.filter.enabled, bool(cfg.text.squeeze_tokens)
    ablation = []
    for name, (variant, _) in models.items():
        m = results_by_model[name]
        flags = _flags(variant, name, lnfs, ava, bool(spec.get("adapter")))
        ablation.append({"variant": name, **flags, "fid": m.get("fid_inception"), "fid_domain": m["fid_domain"],
                         "mAUC": m["mAUC"]})  # fmt: skip
    sets = {f"generated ({n})": results_by_model[n] for n in models}
    sets["real test images (same reports)"] = real_eval
    main = results_by_model["model"]
    measured = {
        "model": model_ref, "fid_inception": main.get("fid_inception"), "fid_domain": main["fid_domain"],
        "fid_floor": ref["fid_floor"], "gflops": compute["gmacs_thop"],
        "seconds_per_image": timing["seconds_per_image"], "images_per_second": main["images_per_second"],
    }  # fmt: skip
    built = {
        "table_v": tables.table_v(sets, classifier.id),
        "table_iv": tables.table_iv(measured, machine()),
        "table_ii": tables.table_ii(ablation),
    }
    if downstream_rows:
        built["table_vi"] = tables.table_vi(
            [{k: v for k, v in r.items() if k not in ("real_only", "with_synthetic")} for r in downstream_rows],
            OWN_KIND,
        )
    figures = {"auc": report.auc_chart(sets), "grid": _grid(eval_rows, generated["model"], data.test_images[eval_idx],
                                                           cfg.eval.grid_per_disease)}  # fmt: skip
    results = {
        "model": model_ref,
        "provenance": {
            "model": provenance(spec),
            **{n: provenance(read_bundle_spec(f)) for n, (_, f) in variants.items()},
        },  # fmt: skip
        "classifier": classifier.id,
        "classifier_test": ref["classifier_test"],
        "dataset": data.dataset,
        "models": results_by_model,
        "real_test_same_reports": real_eval,
        "fid_floor": ref["fid_floor"],
        "fid_floor_sizes": ref["fid_floor_sizes"],
        "calibration": calibration,
        "compute": compute,
        "latency": timing,
        "downstream": downstream_rows,
        "machine": machine(),
        "config": cfg.to_dict()["eval"],
        "key": key,
    }
    return results, built, figures


def _reference(cfg: DiffCXRConfig, data: EvalData, out: str, work: Path, rng: np.random.Generator) -> dict[str, Any]:
    """The reference classifier on the real images: its test AUCs, the held-out features generated images are
    compared with, and the real-vs-real domain FID floor."""
    classifier = _classifier(cfg, out, work, data.dataset["manifest_sha256"], data.train_images, data.train_targets,
                             data.train_rows, data.policy)  # fmt: skip
    test_probs, test_feats = classifier.run(data.test_images)
    eval_feats = test_feats[data.eval_idx]
    floor_idx = rng.choice(len(data.train_rows), size=min(len(data.train_rows), len(data.eval_idx)), replace=False)
    _, train_feats = classifier.run(data.train_images[floor_idx])
    inception = _inception(cfg)
    return {
        "classifier": classifier,
        "classifier_test": per_disease_auc(data.test_targets, test_probs),
        "test_probs": test_probs,
        "eval_feats": eval_feats,
        "fid_floor": round(frechet_distance(train_feats, eval_feats), 4),
        "fid_floor_sizes": [len(floor_idx), len(data.eval_idx)],
        "inception": inception,
        "ref_inception": inception(data.test_images[data.eval_idx]) if inception is not None else None,
    }


def _calibration(
    ref: dict[str, Any], real_eval: dict[str, Any], image_targets: np.ndarray, gen_probs: np.ndarray,
    generated: Generated, rng: np.random.Generator,
) -> dict[str, Any]:  # fmt: skip
    """Where chance and the ceiling lie for this classifier and these reports: shuffled labels, real images
    scored as if generated, uniform noise."""
    # one permutation of a few positives is noisy: the mean and spread over 20 show where chance lies
    shuffled = [per_disease_auc(image_targets[rng.permutation(len(image_targets))], gen_probs)["mAUC"]
                for _ in range(20)]  # fmt: skip
    shuffled = [v for v in shuffled if v is not None]
    noise = rng.integers(0, 256, size=(len(ref["eval_feats"]), *generated.images.shape[1:]), dtype=np.uint8)
    _, noise_feats = ref["classifier"].run(noise)
    return {
        "classifier test mAUC (all real test images)": ref["classifier_test"]["mAUC"],
        "real held-out images as generated: mAUC": real_eval["mAUC"],
        "domain FID floor (real train vs real test)": ref["fid_floor"],
        "domain FID floor set sizes (train, test)": ref["fid_floor_sizes"],
        "generated, report labels shuffled: mAUC (mean of 20)": round(float(np.mean(shuffled)), 4)
        if shuffled
        else None,
        "generated, report labels shuffled: mAUC spread (sd)": round(float(np.std(shuffled)), 4) if shuffled else None,
        "uniform noise as generated: domain FID": round(frechet_distance(noise_feats, ref["eval_feats"]), 4),
    }


def _downstream(
    cfg: DiffCXRConfig, data: EvalData, model_uri: str, out: str, work: Path, key: str
) -> list[dict[str, Any]]:
    """Table VI: the classifier trained on real images with and without images generated for train reports."""
    from services.eval.downstream import run_downstream

    synth_items = requests(data.train_rows, 1, cfg.project.seed + 1)
    synth = generate_with_ray(synth_items, model_uri, storage.join(out, "generated", "train-reports"), cfg,
                              cfg.eval.steps, cfg.eval.guidance)  # fmt: skip
    return run_downstream(
        cfg, (data.train_images, data.train_targets, [r["sample_id"] for r in data.train_rows]),
        (_fit_size(synth.images, cfg.data.image_size), data.train_targets), (data.test_images, data.test_targets),
        work / "downstream", storage.join(out, "ray"), key, data.policy.describe(),
    )  # fmt: skip


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-") or "model"


def _flags(variant: EvalVariant | None, name: str, lnfs: bool, ava: bool, dkim: bool) -> dict[str, bool]:
    if variant is not None:
        return {"lnfs": variant.lnfs, "ava_tls": variant.ava_tls, "dkim": variant.dkim}
    return {"lnfs": lnfs, "ava_tls": ava, "dkim": dkim and name != "without adapter"}


def bundle_without_adapter(folder: Path, out: str, work: Path) -> tuple[Path, str]:
    """The same bundle with its adapter removed: the U-ViT alone (the DKIM ablation at no training cost).
    Written under ``out/bundles/`` so that generation actors on any node can read it: (local folder, URI)."""
    uri = storage.join(out, "bundles", "without-adapter")
    here = storage.local_path(uri)
    dest = here if here is not None else work / "without-adapter"
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(folder, dest, ignore=shutil.ignore_patterns("adapter"))
    spec = json.loads((dest / "generator.json").read_text())
    spec["adapter"] = None
    (dest / "generator.json").write_text(json.dumps(spec, indent=2, sort_keys=True))
    return dest, storage.put_folder(dest, uri)


def _job_uri(ref: str, folder: Path, out: str, name: str) -> str:
    """A URI every node of the cluster can read: the given folder/URI itself, or, for a registry model, a
    copy under ``out/bundles/`` (the driver's download folder is private to this machine)."""
    if not ref.startswith("models:/"):
        here = storage.local_path(ref)  # actors may not share the driver's working directory
        return str(here.resolve()) if here is not None else ref
    return storage.put_folder(folder, storage.join(out, "bundles", _slug(name)))


def _fit_size(images: np.ndarray, size: int) -> np.ndarray:
    """Images resized to size × size (a generator trained at another resolution than the real images)."""
    if images.shape[1:] == (size, size):
        return images
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(i).resize((size, size), Image.BILINEAR)) for i in images])


def _classifier(
    cfg: DiffCXRConfig,
    out: str,
    work: Path,
    manifest_digest: str,
    images: np.ndarray,
    targets: np.ndarray,
    rows: list[dict[str, Any]],
    policy: LabelPolicy,
) -> ReferenceClassifier:
    """xrv (verified weights), a given trained folder, or our DenseNet trained now (kept under out/classifier,
    reused when its training data and settings are unchanged)."""
    if cfg.eval.classifier != OWN_KIND or cfg.eval.classifier_weights:
        return load_classifier(cfg.eval)
    settings = {
        "steps": cfg.eval.classifier_steps,
        "lr": cfg.eval.classifier_lr,
        "batch_size": cfg.eval.classifier_batch_size,
        "image_size": cfg.eval.classifier_image_size or cfg.data.image_size,
        "data_image_size": cfg.data.image_size,
        "workers": cfg.ray.num_workers,
        "cpus": cfg.eval.classifier_cpus or cfg.ray.cpus_per_worker,
        "seed": cfg.project.seed,
        "manifest_sha256": manifest_digest,
    }
    ident = data_id([r["sample_id"] for r in rows], policy.describe(), settings)
    uri = storage.join(out, "classifier")
    spec_uri = storage.join(uri, "classifier.json")
    if storage.exists(spec_uri) and json.loads(storage.read_text(spec_uri)).get("train_data") == ident:
        return OwnDenseNet.load(storage.get_folder(uri, work / "classifier"))
    with tempfile.TemporaryDirectory() as tmp:
        trained = train_classifier(cfg, images, targets, Path(tmp, "classifier"), storage.join(out, "ray"),
                                   f"classifier-{content_key(ident)}", cfg.eval.classifier_steps, ident)  # fmt: skip
        storage.put_folder(trained.folder, uri)
        return OwnDenseNet.load(trained.folder)


def _inception(cfg: DiffCXRConfig) -> InceptionFeatures | None:
    """The Inception feature extractor when enabled and its verified weights exist, else None."""
    if not cfg.eval.inception_fid:
        return None
    weights = find_inception_weights(cfg.eval)
    if weights is None:
        log.info("Inception FID skipped: no weights (set eval.inception_weights or eval.allow_download)")
        return None
    return InceptionFeatures(weights)


def _compute(spec: dict[str, Any]) -> dict[str, Any]:
    from services.diffusion import UViTConfig, count_flops

    adapter = bool(spec.get("adapter"))
    counted = count_flops(UViTConfig(**spec["uvit"]["config"]), adapter=adapter)
    return {
        "model": "uvit+adapter" if adapter else "uvit",
        **{k: round(v, 3) for k, v in counted.items()},
        "convention": "thop: Linear+Conv MACs (+ thop's norm count), batch 1, one forward, no CFG doubling",
    }


def _grid(rows: list[dict[str, Any]], gen: Generated, real: np.ndarray, per_disease: int) -> bytes:
    first = {}
    for i, sid in enumerate(gen.sample_ids):
        first.setdefault(sid, gen.images[i])
    return grid_for_rows(rows, [first.get(r["sample_id"]) for r in rows], real, per_disease)


def grid_for_rows(
    rows: list[dict[str, Any]], generated: list[np.ndarray | None], real: np.ndarray, per_disease: int
) -> bytes:
    """The per-disease grid PNG: each disease's first ``per_disease`` positive rows, real image beside the
    image generated for the same report (``generated[i]`` belongs to ``rows[i]``; None when it has none).
    Shared by the eval report and the benchmarks that redraw it at another sampler setting."""
    real_by, gen_by = {}, {}
    for disease in EVAL_DISEASES:
        picks = [i for i, r in enumerate(rows) if r.get(disease) == 1][:per_disease]
        real_by[disease] = [real[i] for i in picks]
        gen_by[disease] = [generated[i] for i in picks if generated[i] is not None]
    return report.disease_grid(real_by, gen_by, per_disease)


def _write(
    out: str, results: dict[str, Any], built: dict[str, Any], figures: dict[str, bytes], html: str
) -> dict[str, str]:
    outputs = {
        "results": storage.join(out, "results.json"),
        "tables": storage.join(out, "tables.json"),
        "report": storage.join(out, "report.html"),
    }
    storage.write_text(outputs["results"], json.dumps(results, indent=2, default=str))
    storage.write_text(outputs["tables"], json.dumps(built, indent=2, default=str))
    for name, png in figures.items():
        storage.write_bytes(storage.join(out, "figures", f"{name}.png"), png)
    storage.write_text(outputs["report"], html)
    return outputs


def _track(
    tracker: Tracker, cfg: DiffCXRConfig, results: dict[str, Any], out: str, figures: dict[str, bytes], html: str,
    built: dict[str, Any],
) -> None:  # fmt: skip
    ident = results["classifier"]
    tracker.log_params({
        "eval": cfg.to_dict()["eval"], "eval.model": results["model"], "eval.classifier": ident["kind"],
        "eval.classifier_sha256": ident.get("weights_sha256"), "eval.dataset": results["dataset"]["manifest"],
        "eval.dataset_sha256": results["dataset"]["manifest_sha256"], "eval.key": results["key"],
    })  # fmt: skip
    main = results["models"]["model"]
    metrics = {"eval.mAUC": main["mAUC"], "eval.fid_domain": main["fid_domain"], "eval.fid_floor": results["fid_floor"],
               "eval.gflops": results["compute"]["gmacs_thop"],
               "eval.seconds_per_image": results["latency"]["seconds_per_image"],
               "eval.images_per_second": main["images_per_second"],
               "eval.classifier_test_mAUC": results["classifier_test"]["mAUC"]}  # fmt: skip
    if main.get("fid_inception") is not None:
        metrics["eval.fid_inception"] = main["fid_inception"]
    for disease, entry in main["auc"]["per_disease"].items():
        if entry["auc"] is not None:
            metrics[f"eval.auc.{_slug(disease)}"] = entry["auc"]
    for name, m in results["models"].items():
        if name != "model":
            metrics[f"eval.{_slug(name)}.mAUC"] = m["mAUC"]
            metrics[f"eval.{_slug(name)}.fid_domain"] = m["fid_domain"]
    for row in results["downstream"]:
        tag = f"{row['real_fraction'] * 100:g}pct"
        for kind in ("real_only", "with_synthetic"):
            if row[f"mAUC_{kind}"] is not None:
                metrics[f"eval.downstream.{tag}.{kind}.mAUC"] = row[f"mAUC_{kind}"]
    tracker.log_metrics({k: v for k, v in metrics.items() if v is not None})
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "report.html").write_text(html)
        tracker.log_artifact(str(Path(tmp, "report.html")), "eval")
        for name, png in figures.items():
            Path(tmp, f"{name}.png").write_bytes(png)
            tracker.log_artifact(str(Path(tmp, f"{name}.png")), "eval/figures")
    tracker.log_dict(built, "eval/tables.json")
    tracker.log_dict(results, "eval/results.json")
