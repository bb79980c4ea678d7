"""The eval service: label policy, weights checks, evaluator calibration, the Ray Data generation job, the
stage end to end (report, tables, MLflow) and its bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from diffcxr import storage
from diffcxr.config import load_config
from diffcxr.constants import EVAL_DISEASES
from diffcxr.errors import ConfigError, DataError, DiffCXRError
from diffcxr.stages import StageCall
from services.eval.labels import LabelPolicy, label_matrix, per_disease_auc
from services.eval.stage import one_row_per_report


# ----------------------------------------------------------------------------- labels and AUC
def test_missing_labels_are_excluded_and_one_class_diseases_are_undefined() -> None:
    rows = [
        {"Atelectasis": 1, "Edema": None, "Cardiomegaly": 1, "Fracture": 1},
        {"Atelectasis": 0, "Edema": -1, "Cardiomegaly": 1, "Fracture": None},
        {"Atelectasis": None, "Edema": 1, "Cardiomegaly": 1, "Fracture": 0},
        {"Atelectasis": 1, "Edema": 0, "Cardiomegaly": 1, "Fracture": 1},
    ]
    targets = label_matrix(rows, LabelPolicy())
    col = {name: i for i, name in enumerate(EVAL_DISEASES)}
    assert np.isnan(targets[2, col["Atelectasis"]]) and np.isnan(targets[1, col["Edema"]])
    scores = np.full(targets.shape, 0.5, np.float32)
    scores[:, col["Atelectasis"]] = [0.9, 0.1, 0.0, 0.8]  # the excluded row would break a perfect ranking
    scores[:, col["Edema"]] = [0.0, 1.0, 0.9, 0.2]  # the uncertain row (−1) would, too
    result = per_disease_auc(targets, scores)
    per = result["per_disease"]
    assert per["Atelectasis"] == {"n_pos": 2, "n_neg": 1, "n_excluded": 1, "auc": 1.0, "reason": None}
    assert per["Edema"]["auc"] == 1.0 and per["Edema"]["n_excluded"] == 2
    assert per["Cardiomegaly"]["auc"] is None and "only positives" in per["Cardiomegaly"]["reason"]
    assert per["Pneumothorax"]["auc"] is None and per["Pneumothorax"]["n_excluded"] == 4
    assert result["defined"] == 3
    assert result["mAUC"] == pytest.approx(np.mean([1.0, 1.0, per["Fracture"]["auc"]]), abs=1e-4)

    assert "ci95" not in per["Atelectasis"] and "mAUC_ci95" not in result  # intervals only when asked

    negative = label_matrix(rows, LabelPolicy(unmentioned="negative", uncertain="positive"))
    assert negative[2, col["Atelectasis"]] == 0 and negative[1, col["Edema"]] == 1
    with pytest.raises(ValueError, match="label value 2"):
        label_matrix([{"Atelectasis": 2}], LabelPolicy())


def test_bootstrap_intervals_cover_the_estimate_and_shrink_with_more_images() -> None:
    from sklearn.metrics import roc_auc_score

    from services.eval.labels import _rank_auc

    rng = np.random.default_rng(0)
    widths = []
    for n in (60, 600):
        targets = (rng.random((n, len(EVAL_DISEASES))) < 0.3).astype(np.float32)
        scores = np.round(targets * 0.6 + rng.random(targets.shape), 1)  # ties on purpose
        result = per_disease_auc(targets, scores, bootstrap=400, seed=1)
        for entry in result["per_disease"].values():
            lo, hi = entry["ci95"]
            assert lo <= entry["auc"] <= hi
        lo, hi = result["mAUC_ci95"]
        assert lo <= result["mAUC"] <= hi
        widths.append(hi - lo)
        assert _rank_auc(targets[:, 0], scores[:, 0]) == pytest.approx(roc_auc_score(targets[:, 0], scores[:, 0]))
    assert widths[1] < widths[0] / 2  # ten times the images: an interval about a third as wide


def test_eval_counts_reports_not_rows() -> None:
    """With several phantoms per report, ``eval.num_reports`` still means distinct reports (first row of each)."""
    rows = [{"report_id": r, "sample_id": f"{r}-{k}"} for r in ("a", "b", "c") for k in range(3)]
    assert one_row_per_report(rows).tolist() == [0, 3, 6]
    assert one_row_per_report(rows[::-1]).tolist() == [0, 3, 6]  # the first met, whatever the order
    assert one_row_per_report([]).tolist() == []


def test_variant_option_names_what_is_wrong() -> None:
    from services.eval.cli import parse_variant

    assert parse_variant("base:none=runs/a/generator") == {
        "name": "base", "model": "runs/a/generator", "lnfs": False, "ava_tls": False, "dkim": False,
    }  # fmt: skip
    assert parse_variant("full:lnfs+dkim=models:/g@v")["dkim"] is True
    with pytest.raises(DiffCXRError, match="NAME:FLAGS=URI"):
        parse_variant("runs/a/generator")
    with pytest.raises(DiffCXRError, match="unknown flags \\['lnf'\\]"):
        parse_variant("x:lnf=runs/a")
    with pytest.raises(ConfigError, match="'without adapter'.*name the evaluated model's own rows"):
        load_config("tiny", ['eval.variants=[{"name": "without adapter", "model": "m", "lnfs": true, '
                             '"ava_tls": true, "dkim": false}]'])  # fmt: skip


# ----------------------------------------------------------------------------- reference weights
def test_xrv_classifier_needs_verified_weights_and_maps_outputs_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    import torchxrayvision as xrv

    from diffcxr.hashing import sha256_file
    from services.eval import classifier as classifier_module
    from services.eval.classifier import XRV_FILE, XRVDenseNet, find_xrv_weights, load_classifier

    cfg = load_config("tiny", ["eval.classifier=xrv-densenet121-res224-all", f"eval.classifier_weights={tmp_path}"])
    with pytest.raises(ConfigError, match="eval.classifier: no .*allow_download"):
        find_xrv_weights(cfg.eval)
    (tmp_path / XRV_FILE).write_bytes(b"not the release file")
    with pytest.raises(ConfigError, match="has sha256 .* not the pinned 56524913"):
        find_xrv_weights(cfg.eval)

    torch.manual_seed(0)
    net = xrv.models.DenseNet(weights=None)
    net.pathologies = xrv.models.model_urls["all"]["labels"]
    clf = XRVDenseNet(net, {"kind": "xrv-test"})
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 64), dtype=np.uint8)
    probs, feats = clf.run(images)
    assert probs.shape == (3, 11) and feats.shape == (3, 1024)
    x = torch.nn.functional.interpolate(
        torch.from_numpy(images).float()[:, None] / 255 * 2048 - 1024, size=(224, 224), mode="bilinear",
        antialias=True,
    )  # fmt: skip
    with torch.no_grad():
        logits = net.classifier(torch.nn.functional.adaptive_avg_pool2d(torch.relu(net.features(x)), 1).flatten(1))
    effusion = net.pathologies.index("Effusion")
    np.testing.assert_allclose(probs[:, EVAL_DISEASES.index("Pleural Effusion")], torch.sigmoid(logits[:, effusion]),
                               rtol=1e-5)  # fmt: skip

    # a release-format file (a pickled module) under any name loads without torchxrayvision's downloader,
    # once its hash is the pinned one (pinned here to this stand-in file's hash: the real one is not obtainable)
    release = tmp_path / "densenet121-res224-all.pt"
    torch.save(net, release)
    monkeypatch.setattr(classifier_module, "XRV_SHA256", sha256_file(release))
    cfg = load_config("tiny", ["eval.classifier=xrv-densenet121-res224-all", f"eval.classifier_weights={release}"])
    loaded = load_classifier(cfg.eval)
    assert loaded.id["kind"] == "xrv-densenet121-res224-all" and loaded.id["file"] == release.name
    np.testing.assert_allclose(loaded.predict(images), probs, rtol=1e-5)


def test_inception_weights_are_optional_but_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from services.eval.fid import INCEPTION_FILE, find_inception_weights

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    assert find_inception_weights(load_config("tiny").eval) is None
    bad = tmp_path / INCEPTION_FILE
    bad.write_bytes(b"random bytes")
    with pytest.raises(ConfigError, match="does not match the pinned hash prefix 6726825d"):
        find_inception_weights(load_config("tiny", [f"eval.inception_weights={bad}"]).eval)
    with pytest.raises(ConfigError, match="eval.inception_weights: no"):
        find_inception_weights(load_config("tiny", [f"eval.inception_weights={tmp_path / 'nowhere'}"]).eval)


# ----------------------------------------------------------------------------- calibration
@pytest.fixture(scope="module")
def calibration(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A DenseNet-121 trained on Ray Train on 600 phantoms (random findings), and three more phantom sets."""
    from services.data.phantom.learnability import make_dataset
    from services.eval.classifier import OwnDenseNet
    from services.eval.classifier_train import data_id, train_classifier

    work = tmp_path_factory.mktemp("calibration")
    x_train, y_train = make_dataset(1_000_000, 600, 64, workers=1)
    cfg = load_config("tiny", ["ray.cpus_per_worker=2"])
    trained = train_classifier(
        cfg, x_train, y_train, work / "classifier", str(work / "ray"), "calibration", 100, data_id(["x"], {})
    )
    held_a, held_b = make_dataset(2_000_000, 200, 64, workers=1), make_dataset(3_000_000, 200, 64, workers=1)
    return {"classifier": OwnDenseNet.load(trained.folder), "train": x_train[:200], "a": held_a, "b": held_b,
            "spec": trained.spec}  # fmt: skip


def test_evaluator_is_calibrated_on_real_images_shuffled_labels_and_noise(calibration: dict) -> None:
    from services.eval.fid import frechet_distance
    from services.eval.metrics import image_metrics

    clf = calibration["classifier"]
    (x_a, y_a), (x_b, y_b) = calibration["a"], calibration["b"]
    assert calibration["spec"]["trained_steps"] == 100 and calibration["spec"]["classes"] == list(EVAL_DISEASES)
    probs_a, feats_a = clf.run(x_a)
    test_auc = per_disease_auc(y_a, probs_a)["mAUC"]
    _, feats_train = clf.run(calibration["train"])
    floor = frechet_distance(feats_train, feats_a)
    assert test_auc > 0.7  # the classifier learned something, so the controls below can fail

    as_generated = image_metrics(clf, x_b, y_b, feats_a)  # held-out real images posing as generated ones
    assert abs(as_generated["mAUC"] - test_auc) < 0.06
    assert 0.4 * floor < as_generated["fid_domain"] < 1.5 * floor

    shuffled = image_metrics(clf, x_b, y_b[np.random.default_rng(0).permutation(len(y_b))], feats_a)
    assert abs(shuffled["mAUC"] - 0.5) < 0.08

    noise = np.random.default_rng(1).integers(0, 256, x_b.shape, dtype=np.uint8)
    assert image_metrics(clf, noise, y_b, feats_a)["fid_domain"] > 20 * floor
    print(f"calibration: test mAUC {test_auc}, as generated {as_generated['mAUC']}, shuffled {shuffled['mAUC']}, "
          f"FID floor {floor:.2f}, real as generated {as_generated['fid_domain']}")  # fmt: skip


# ----------------------------------------------------------------------------- generation job and the stage
@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generator of the tiny architecture with seeded initial weights (no training needed for mechanics)."""
    from services.diffusion.generator import build_initial_bundle

    return build_initial_bundle(load_config("tiny"), tmp_path_factory.mktemp("bundle") / "generator")


def test_ray_data_generation_is_seeded_per_image(ray_local: None, bundle: Path, tmp_path: Path) -> None:
    import torch

    from services.diffusion.generator import Generator
    from services.eval.generate import generate_with_ray, requests

    cfg = load_config("tiny", ["eval.batch_size=2", "eval.steps=3"])
    rows = [{"sample_id": f"s{i}", "report_text": t} for i, t in
            enumerate(["Large right pleural effusion.", "Heart size normal.", "Cardiomegaly."])]  # fmt: skip
    items = requests(rows, 2, cfg.project.seed)
    assert len({i["seed"] for i in items}) == 6 and requests(rows, 2, 0) == items
    gen = generate_with_ray(items, str(bundle), str(tmp_path / "generated"), cfg, 3, None)
    assert gen.images.shape == (6, 64, 64) and gen.sample_ids == ["s0", "s0", "s1", "s1", "s2", "s2"]
    assert gen.sentences[0] == "There is pleural effusion." and gen.images_per_second > 0
    assert not np.array_equal(gen.images[0], gen.images[1])  # two images of one report differ
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.ray.actor_threads)  # the actor's: matmuls and convolutions are thread-count sensitive
    try:
        again = Generator(bundle).generate([r["report"] for r in items[3:5]], [r["seed"] for r in items[3:5]], 3)
    finally:
        torch.set_num_threads(threads)
    assert all(np.array_equal(a.pixels, b) for a, b in zip(again, gen.images[3:5], strict=True))


EVAL_STAGE = [
    "data.max_reports=100",
    "data.noise_rate=0",
    "eval.classifier_steps=6",
    "eval.classifier_batch_size=8",
    "eval.num_reports=8",
    "eval.images_per_report=2",
    "eval.steps=3",
    "eval.latency_images=1",
    "eval.downstream=true",  # tiny turns Table VI and the without-adapter row off; this test exercises both
    "eval.without_adapter=true",
    "eval.downstream_fractions=[0.1,1.0]",
    "eval.downstream_steps=2",
    "eval.grid_per_disease=2",
]


def test_eval_stage_writes_report_tables_and_mlflow_and_skips_when_current(
    ray_local: None, bundle: Path, tmp_path: Path, mlflow_server: str, experiment_name: str
) -> None:
    from mlflow.tracking import MlflowClient

    from diffcxr.tracking import Tracker
    from services.data import stage as data_stage
    from services.eval import stage

    cfg = load_config("tiny", [*EVAL_STAGE, f"project.run_root={tmp_path / 'run'}"])
    manifest_uri = data_stage.run(cfg)["manifest"]
    tracker = Tracker(mlflow_server, experiment_name)
    with tracker.run("eval") as run:
        out = stage.run(cfg, StageCall(tracker, {"model": str(bundle), "manifest": manifest_uri}))
    results = out["summary"]
    assert set(results["models"]) == {"model", "without adapter"}
    assert results["classifier"]["kind"] == "own-densenet121" and results["classifier"]["trained_steps"] == 6
    dataset = results["dataset"]
    main = results["models"]["model"]
    assert dataset["eval_reports"] == min(8, dataset["test_images"]) == main["n_images"] // 2 == main["fid_images"]
    assert dataset["eval_reports"] >= 4 and dataset["train_images"] > 20 and dataset["unreadable"] == []
    assert results["compute"]["gmacs_thop"] > 0 and results["latency"]["seconds_per_image"] > 0
    assert results["models"]["model"]["fid_domain"] > 0 and results["fid_floor"] > 0
    calibration = results["calibration"]
    floor = calibration["domain FID floor (real train vs real test)"]
    assert calibration["uniform noise as generated: domain FID"] > floor
    assert [r["real_fraction"] for r in results["downstream"]] == [0.1, 1.0]
    assert results["downstream"][0]["synthetic_images"] > 0 and results["downstream"][1]["mAUC_with_synthetic"] is None

    built = json.loads(storage.read_text(out["tables"]))
    assert set(built) == {"table_v", "table_iv", "table_ii", "table_vi"}
    quoted = [r for r in built["table_iv"]["rows"] if r["source"] == "quoted (paper)"]
    assert {r["method"] for r in quoted} == {"Diff-CXR", "RoentGen", "LLM-CXR", "UniXGen"}
    assert [r["variant"] for r in built["table_ii"]["rows"]][:2] == ["model", "without adapter"]
    assert built["table_ii"]["rows"][1]["dkim"] is False
    html = storage.read_text(out["report"])
    for text in ("Table V", "Table IV", "Table II", "Table VI", "data:image/png;base64", "synthetic"):
        assert text in html
    assert "pleural effusion." not in html.lower()  # no report text in the report
    from PIL import Image

    grid = Image.open(str(tmp_path / "run" / "eval" / "figures" / "grid.png"))
    assert grid.text["diffcxr.synthetic"] == "true"

    client = MlflowClient(mlflow_server)
    logged = client.get_run(run.info.run_id).data
    assert logged.metrics["eval.mAUC"] == results["models"]["model"]["mAUC"]
    assert logged.params["eval.classifier"] == "own-densenet121" and "eval.dataset_sha256" in logged.params
    assert "eval.downstream.10pct.with_synthetic.mAUC" in logged.metrics
    assert {a.path for a in client.list_artifacts(run.info.run_id, "eval")} >= {"eval/report.html", "eval/figures"}

    assert stage.run(cfg, StageCall(inputs={"model": str(bundle), "manifest": manifest_uri}))["skipped"] is True


def test_a_model_that_does_not_resolve_is_named(tmp_path: Path, mlflow_server: str, experiment_name: str) -> None:
    from diffcxr.tracking import Tracker
    from services.eval import stage

    cfg = load_config("tiny", [f"project.run_root={tmp_path}"])
    with pytest.raises(DataError, match=f"model '{tmp_path}/nowhere' does not resolve"):
        stage.run(cfg, StageCall(inputs={"model": f"{tmp_path}/nowhere"}))
    with pytest.raises(DataError, match="model 'models:/no-such-model@champion' does not resolve"):
        stage.run(cfg, StageCall(Tracker(mlflow_server, experiment_name), {"model": "models:/no-such-model@champion"}))
