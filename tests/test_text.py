"""Text service: towers, the squeeze, tokenisation, training on Ray Train (2 workers, crash, resume),
registry round trip, embeddings through Ray Data (to S3), and bad input."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from diffcxr import manifest, storage
from diffcxr.config import load_config
from diffcxr.errors import ConfigError, DataError, DiffCXRError
from diffcxr.stages import StageCall
from services.text.model import ReportEncoder
from services.text.retrieval import recall_at_k, retrieval_metrics, sentence_auc
from services.text.squeeze import InformationSqueeze

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="module")
def tiny_encoder() -> ReportEncoder:
    torch.manual_seed(0)
    return ReportEncoder.from_config(load_config("tiny").text, 64).eval()


# ----------------------------------------------------------------------------- the squeeze
@pytest.mark.parametrize("k", [32, 77, 128])
def test_squeeze_maps_257_biomedclip_states_to_k_tokens(k: int) -> None:
    squeeze = InformationSqueeze(257, k, 768)
    out = squeeze(torch.randn(2, 257, 768))
    assert out.shape == (2, k + 1, 768) and (out >= 0).all()  # ReLU last; token 0 is the global token
    assert squeeze.conv1.weight.shape == (257, 257, 3) and squeeze.conv2.weight.shape == (k + 1, 257, 3)
    with pytest.raises(ValueError, match=r"expected \(B, 257, 768\)"):
        squeeze(torch.randn(2, 256, 768))


# ----------------------------------------------------------------------------- tokenizer
def test_long_reports_keep_their_beginning_deterministically(tiny_encoder: ReportEncoder) -> None:
    tok = tiny_encoder.tokenizer()
    long = "Heart size is normal. " + "There is a small left pleural effusion. " * 40 + "FINAL SENTENCE."
    first, second = tok([long]), tok([long])
    assert torch.equal(first.ids, second.ids)
    assert first.truncated == [True] and first.n_tokens[0] > 128
    ids = first.ids[0].tolist()
    assert ids[0] == tok.cls_id and ids[-1] == tok.sep_id and tok.pad_id not in ids
    head = tok.hf("Heart size is normal.", add_special_tokens=False)["input_ids"]
    assert ids[1 : 1 + len(head)] == head  # the beginning is kept, the end is cut
    short = tok(["Heart size is normal."])
    assert short.truncated == [False] and short.n_tokens == [len(head) + 2]
    empty = tok(["", None, "   \n "])
    assert all(row[:2].tolist() == [tok.cls_id, tok.sep_id] and (row[2:] == tok.pad_id).all() for row in empty.ids)


# ----------------------------------------------------------------------------- encoders
def test_minilm_tower_is_pretrained_and_returns_all_token_states(tiny_encoder: ReportEncoder) -> None:
    tok = tiny_encoder.tokenizer()
    ids = tok(["The heart is enlarged.", "Cardiomegaly is present.", "The stock market fell sharply today."]).ids
    with torch.no_grad():
        pooled, states = tiny_encoder.token_states(ids)
        global_token, context = tiny_encoder.encode(ids)
    assert states.shape == (3, 128, 384) and pooled.shape == (3, 384)
    k = load_config("tiny").text.squeeze_tokens
    assert global_token.shape == (3, 384) and context.shape == (3, k, 384)
    cos = torch.nn.functional.cosine_similarity
    # real pretrained weights put the two cardiac sentences closer than the unrelated one
    assert cos(pooled[0], pooled[1], dim=0) > cos(pooled[0], pooled[2], dim=0) + 0.2


def test_each_report_runs_at_its_own_length_and_alone_when_asked(tiny_encoder: ReportEncoder) -> None:
    """New bundles zero the padding states and run each token count apart: the real tokens' states match the
    full-length pass, and with ``batch_invariant`` a report's output is bit-identical alone or batched with
    reports of the same or other lengths. A bundle without ``pad_states`` (built before) keeps the full-length
    pass it was trained on (one report at a time with ``batch_invariant``)."""
    assert tiny_encoder.spec["pad_states"] == "zero"
    texts = ["The heart is enlarged.", "No acute disease. " * 6, "The lungs are clear.", "Small left effusion."]
    tok = tiny_encoder.tokenizer()
    ids = tok(texts).ids
    assert len(set((ids != tiny_encoder.pad_id).sum(1).tolist())) < len(texts)  # two reports share a length
    real = (ids != tiny_encoder.pad_id)[..., None]
    legacy = ReportEncoder(tiny_encoder.clip, {k: v for k, v in tiny_encoder.spec.items() if k != "pad_states"},
                           tiny_encoder.hf_dir).eval()  # fmt: skip
    with torch.no_grad():
        pooled, states = tiny_encoder.token_states(ids)
        inv_pooled, inv_states = tiny_encoder.token_states(ids, batch_invariant=True)
        full_pooled, full_states = legacy.token_states(ids)
        legacy_batch = legacy.encode(ids[[2, 0, 1, 3]], batch_invariant=True)[1]
        legacy_alone = legacy.encode(ids[:1], batch_invariant=True)[1]
        alone = [tiny_encoder.token_states(ids[i : i + 1], batch_invariant=True) for i in range(len(texts))]
        contexts = tiny_encoder.encode(ids[[2, 0, 1, 3, 0, 2, 1, 3]], batch_invariant=True)[1]  # a serve batch of 8
        context_alone = tiny_encoder.encode(ids[:1], batch_invariant=True)[1]
    assert (states[~real.expand_as(states)] == 0).all()
    assert (full_states[~real.expand_as(full_states)] != 0).any()  # the legacy pass keeps padding states
    for got, got_pooled in ((states, pooled), (inv_states, inv_pooled)):
        torch.testing.assert_close(got * real, full_states * real, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got_pooled, full_pooled, atol=1e-4, rtol=1e-4)
    for i, (one_pooled, one_states) in enumerate(alone):
        assert torch.equal(one_states[0], inv_states[i]) and torch.equal(one_pooled[0], inv_pooled[i])
    assert torch.equal(contexts[1], context_alone[0]) and torch.equal(contexts[4], context_alone[0])
    assert torch.equal(legacy_batch[1], legacy_alone[0])  # an older bundle's generator is batch-invariant too


def test_biomedclip_architecture_from_shared_config(home: Path) -> None:
    cfg = load_config("paper")
    torch.manual_seed(0)
    model = ReportEncoder.from_config(cfg.text, 256)
    n_params = sum(p.numel() for p in model.clip.parameters())
    assert 190e6 < n_params < 200e6  # BiomedCLIP: ViT-B/16 + BiomedBERT + heads ≈ 196 M
    proj = [m for m in model.clip.text.proj if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in proj] == [(768, 640), (640, 512)]
    assert type(model.clip.text.pooler).__name__ == "ClsLastHiddenStatePooler"
    assert model.spec["vision_size"] == 224 and model.context_shape == (77, 768)
    tok = model.tokenizer()
    batch = tok(["There is a right pneumothorax."])
    assert batch.ids.shape == (1, 256) and tok.hf.unk_token_id not in batch.ids[0].tolist()
    with torch.no_grad():
        global_token, context = model.encode(batch.ids)
        image = model.image_features(torch.zeros(1, 256, 256, dtype=torch.uint8))
    assert context.shape == (1, 77, 768) and model.text_features(global_token).shape == (1, 512)
    assert image.shape == (1, 512)


def test_pretrained_weights_load_verified_by_sha256(tiny_encoder: ReportEncoder, tmp_path: Path) -> None:
    path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(tiny_encoder.clip.state_dict(), path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    cfg = load_config("tiny", [f"text.encoder_weights={path}", f"text.encoder_weights_sha256={sha}"])
    torch.manual_seed(123)  # a different random image tower, overwritten by the checkpoint
    loaded = ReportEncoder.from_config(cfg.text, 64)
    assert torch.equal(loaded.clip.visual.conv1.weight, tiny_encoder.clip.visual.conv1.weight)
    bad = load_config("tiny", [f"text.encoder_weights={path}", "text.encoder_weights_sha256=" + "f" * 64])
    with pytest.raises(ConfigError, match="sha256 .* does not match"):
        ReportEncoder.from_config(bad.text, 64)
    with pytest.raises(ConfigError, match="does not exist"):
        ReportEncoder.from_config(load_config("tiny", [f"text.encoder_weights={tmp_path}/nope.bin"]).text, 64)


def test_train_parts_choose_what_learns(tiny_encoder: ReportEncoder) -> None:
    model = tiny_encoder
    n = {parts: sum(p.numel() for p in model.set_trainable(parts)) for parts in model_parts()}
    squeeze = sum(p.numel() for p in model.squeeze.parameters())
    assert n["squeezer"] == squeeze
    assert n["squeezer+heads"] == squeeze + _count(model.clip.text.proj) + _count(model.clip.visual)
    assert n["squeezer+text"] == squeeze + _count(model.clip.text)
    assert n["all"] == squeeze + _count(model.clip) - 1  # the logit scale is fixed, never learned
    model.requires_grad_(False)
    from services.text.stage import check_trainable

    with pytest.raises(ConfigError, match="needs pretrained towers"):
        check_trainable(load_config("tiny", ["text.train_parts=squeezer"]))


def model_parts() -> tuple[str, ...]:
    from services.text.model import TRAIN_PARTS

    return TRAIN_PARTS


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_bundle_round_trip_gives_identical_embeddings(tiny_encoder: ReportEncoder, tmp_path: Path) -> None:
    tiny_encoder.save_bundle(tmp_path / "bundle")
    loaded = ReportEncoder.load_bundle(tmp_path / "bundle")
    ids = tiny_encoder.tokenizer()(["Mild cardiomegaly.", ""]).ids
    with torch.no_grad():
        assert torch.equal(tiny_encoder.encode(ids)[1], loaded.encode(ids)[1])
    assert torch.equal(tiny_encoder.unconditional(), loaded.unconditional())
    with pytest.raises(ConfigError, match="not a text-model bundle"):
        ReportEncoder.load_bundle(tmp_path)


def test_features_from_one_shared_tower_pass_equal_the_full_encode(tiny_encoder: ReportEncoder) -> None:
    """The text stage scores the trained and the untrained squeezer from one pass of the frozen tower."""
    from services.text.evaluate import features_from_states, text_features, tower_states

    texts = ["Mild cardiomegaly.", "", "No acute cardiopulmonary abnormality. " * 20, "Small left effusion."]
    other = ReportEncoder.from_config(load_config("tiny").text, 64).eval()  # same tower, another squeeze init
    pooled, states = tower_states(tiny_encoder, texts, batch=3)
    for model in (tiny_encoder, other):
        np.testing.assert_allclose(features_from_states(model, pooled, states), text_features(model, texts),
                                   atol=1e-5)  # fmt: skip
    assert not np.allclose(features_from_states(other, pooled, states), text_features(tiny_encoder, texts), atol=1e-3)


# ----------------------------------------------------------------------------- metrics
def test_retrieval_and_sentence_auc_metrics() -> None:
    eye = np.eye(20)
    assert recall_at_k(eye) == {"R@1": 1.0, "R@5": 1.0, "R@10": 1.0}
    anti = -np.eye(20)  # every partner ranks last
    assert recall_at_k(anti)["R@10"] == 0.0
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(50, 8))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    assert retrieval_metrics(feats, feats)["mean_R@1"] == 1.0
    labels = {"Edema": [1] * 25 + [0] * 25, "Fracture": [0] * 50}
    images = np.r_[np.ones((25, 2)), -np.ones((25, 2))] / np.sqrt(2)
    auc = sentence_auc(images, labels, {"Edema": np.array([1.0, 1.0]), "Fracture": np.array([1.0, 0.0])})
    assert auc == {"Edema": 1.0, "Fracture": None}


# ----------------------------------------------------------------------------- bad input
def test_non_utf8_report_bytes_are_rejected_naming_the_row(tmp_path: Path) -> None:
    from services.data.phantom.dataset import build_phantom_dataset

    cfg = load_config("tiny", ["data.max_reports=6"])
    table = build_phantom_dataset(cfg, str(tmp_path / "d"), workers=1).table
    values = [v.encode() if v else None for v in table.column("report_text").to_pylist()]
    values[2] = b"Heart size \xff normal."
    bad = table.set_column(table.column_names.index("report_text"), "report_text", pa.array(values, pa.binary()))
    buf = io.BytesIO()
    pq.write_table(bad, buf)
    sample = table.column("sample_id")[2].as_py()
    with pytest.raises(DataError, match=rf"sample_id '{sample}': column 'report_text'.*0xff at offset 11"):
        manifest.parse(buf.getvalue())


def test_cli_rejects_non_utf8_report_file_with_its_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from orchestration.cli import main

    path = tmp_path / "reports.txt"
    path.write_bytes(b"Heart size normal.\nLeft \xfe effusion.\n")
    assert main(["text", "embed", "--model", str(tmp_path), "--reports", str(path)]) == 2
    assert "not a text-model bundle" in capsys.readouterr().err  # the model is checked first
    tiny = tmp_path / "bundle"
    torch.manual_seed(0)
    ReportEncoder.from_config(load_config("tiny").text, 64).save_bundle(tiny)
    assert main(["text", "embed", "--model", str(tiny), "--reports", str(path)]) == 2
    assert "line 2: report text is not valid UTF-8: bad byte 0xfe at offset 5" in capsys.readouterr().err
    out = tmp_path / "ctx.npy"
    path.write_text("Heart size normal.\n\n")
    assert main(["text", "embed", "--model", str(tiny), "--reports", str(path), "--out", str(out)]) == 0
    context = np.load(out)
    assert context.shape == (2, load_config("tiny").text.squeeze_tokens, 384)
    model = ReportEncoder.load_bundle(tiny)
    assert np.array_equal(context[1], model.unconditional().numpy())  # the empty line is the unconditional context


# ----------------------------------------------------------------------------- Ray Train + Ray Data
@pytest.fixture(scope="module")
def phantom_manifest(tmp_path_factory: pytest.TempPathFactory) -> str:
    """120 phantom pairs, plus one kept row with an empty report and one with a very long report."""
    from services.data.phantom.dataset import build_phantom_dataset

    root = tmp_path_factory.mktemp("text-data")
    cfg = load_config("tiny", ["data.max_reports=120", "data.noise_rate=0"])
    rows = build_phantom_dataset(cfg, str(root), workers=2).table.to_pylist()
    kept = [r for r in rows if r["status"] == "kept"]
    empty = {**kept[0], "sample_id": "extra:empty", "report_text": "", "findings": None, "impression": None}
    long = {**kept[1], "sample_id": "extra:long", "report_text": "No acute disease. " * 60}
    uri = str(root / "manifest.parquet")
    manifest.write(manifest.to_table([*rows, empty, long]), uri)
    return uri


def _train_cfg(**extra: str) -> object:
    overrides = [
        "text.steps=12",
        "text.checkpoint_every=4",
        "text.batch_size=16",
        "text.log_every=2",
        "ray.num_workers=2",
        "ray.cpus_per_worker=0.5",
        *(f"{k}={v}" for k, v in extra.items()),
    ]
    return load_config("tiny", overrides)


def test_two_worker_training_survives_a_killed_worker_then_a_crash_resumes_and_registers(
    ray_local: None, phantom_manifest: str, tmp_path: Path, mlflow_server: str, experiment_name: str, home: Path
) -> None:
    """One fit, two faults. The rank-0 Train worker process SIGKILLs itself after the step-4 checkpoint (first
    attempt only): Ray Train (text.max_failures=1) restarts the worker group from the last checkpoint the
    controller had registered (step 4, or step 2 when the kill beat the registration). The restarted run then
    raises after step 8, which uses up max_failures: the stage fails naming the cause and how to resume. The
    re-run resumes from step 8, ends at 12, and its bundle round-trips through the MLflow registry."""
    from mlflow.tracking import MlflowClient

    from diffcxr.tracking import Tracker
    from services.text import stage

    cfg = _train_cfg(**{"text.max_failures": "1", "text.checkpoint_every": "2"})
    out = str(tmp_path / "text")
    tracker = Tracker(mlflow_server, experiment_name)
    with pytest.MonkeyPatch.context() as faults, tracker.run("text-crash"):
        faults.setenv("DIFFCXR_FAULTS", json.dumps({"text": {"crash_after_step": 8, "kill_after_step": 4}}))
        with pytest.raises(DiffCXRError, match="injected crash after step 8.*re-run"):
            stage.run_train(cfg, StageCall(tracker, {"manifest": phantom_manifest}, out))
    checkpoints = [u for u in storage.list_files(f"{out}/ray") if u.endswith("state.pt")]
    assert checkpoints, "the crashed run left its checkpoints"

    with tracker.run("text-resume") as run:
        result = stage.run_train(cfg, StageCall(tracker, {"manifest": phantom_manifest}, out))
    summary = result["summary"]
    assert summary["resumed_from_step"] == 8 and summary["steps"] == 12
    starts = summary["attempt_starts"]
    assert len(starts) == 3 and starts[0] == 0 and starts[1] in (2, 4) and starts[2] == 8, starts
    assert summary["samples_per_second"] > 0 and summary["heldout_pairs"] > 10
    for name in ("trained", "untrained"):
        assert 0 <= summary["evaluation"][name]["retrieval"]["mean_R@10"] <= 1
    history = MlflowClient(mlflow_server).get_metric_history(run.info.run_id, "text.loss")
    assert sorted(m.step for m in history) == [10, 12]  # rank 0 logged after the resume, every log_every steps
    assert storage.exists(f"{out}/figures/loss.png")

    registered = summary["registered"]
    assert registered["name"] == "diffcxr-text" and registered["alias"] == cfg.tracking.candidate_alias
    assert tracker.alias_version("diffcxr-text", cfg.tracking.candidate_alias) == registered["version"]
    from_registry = stage.load_registered(tracker, cfg.tracking.candidate_alias)
    from_storage = ReportEncoder.load_bundle(storage.get_folder(result["model"]))
    ids = from_storage.tokenizer()(["Small right pleural effusion.", "There is cardiomegaly.", ""]).ids
    with torch.no_grad():
        assert torch.equal(from_registry.encode(ids)[1], from_storage.encode(ids)[1])
    tags = MlflowClient(mlflow_server).get_model_version("diffcxr-text", str(registered["version"])).tags
    k = cfg.text.squeeze_tokens
    assert tags["context_shape"] == f"[{k}, 384]" and tags["squeeze_tokens"] == str(k)


def test_embeddings_through_ray_data_to_s3(
    ray_local: None, phantom_manifest: str, s3_bucket: str, tmp_path: Path
) -> None:
    from diffcxr.contracts.embeddings import read_embeddings, sentence_id
    from services.text.stage import run_embed

    torch.manual_seed(0)
    model = ReportEncoder.from_config(load_config("tiny").text, 64).eval()
    bundle = str(model.save_bundle(tmp_path / "bundle"))
    cfg = load_config("tiny", ["text.embed_batch_size=16"])
    out = f"{s3_bucket}/embeddings"
    result = run_embed(cfg, bundle, phantom_manifest, out)
    rows = [r for r in manifest.read(phantom_manifest).to_pylist() if r["status"] == "kept"]
    k = cfg.text.squeeze_tokens
    assert result["counts"]["reports"] == len(rows) and result["context_shape"] == [k, 384]

    emb = read_embeddings(out)
    assert emb.sample_ids == sorted(r["sample_id"] for r in rows)  # every kept row, once
    assert emb.contexts.shape == (len(rows), k, 384) and emb.contexts.dtype == np.float16
    index = emb.index()
    # one computation: the empty report's stored context is unconditional.npy's, whatever thread count the
    # embedding actors ran at; and that is the model's own unconditional context
    assert np.array_equal(emb.contexts[index["extra:empty"]], emb.unconditional.astype(np.float16))
    assert np.array_equal(emb.unconditional, model.unconditional().numpy())
    assert emb.truncated["extra:long"] and not emb.truncated[rows[0]["sample_id"]]
    assert emb.meta["truncated_sample_ids"] == sorted(k for k, t in emb.truncated.items() if t)
    sentences = {r["disease_sentence"] for r in rows}
    assert set(emb.sentences) == {sentence_id(s) for s in sentences}
    assert all(emb.sentence_of[r["sample_id"]] == sentence_id(r["disease_sentence"]) for r in rows)
    # the Ray Data path matches a direct forward pass of the same model
    some = rows[5]
    with torch.no_grad():
        direct = model.encode(model.tokenizer()([some["report_text"]]).ids)[1][0].numpy()
    assert np.allclose(
        emb.contexts[index[some["sample_id"]]].astype(np.float32), direct, rtol=2e-3, atol=2e-3
    )  # float16 storage

    # the stage's one frozen-tower pass gives the same embeddings, training pairs and held-out states
    from services.text.data import states_of, tower_pass, train_pairs
    from services.text.stage import disease_sentences, embed_manifest

    shared = tower_pass(rows, disease_sentences(rows), cfg, bundle)
    embed_manifest(cfg, rows, bundle, str(tmp_path / "shared"), shared)
    again = read_embeddings(str(tmp_path / "shared"))
    assert again.sample_ids == emb.sample_ids and set(again.sentences) == set(emb.sentences)
    gap = np.abs(again.contexts.astype(np.float32) - emb.contexts.astype(np.float32))  # float16 states, squeezed
    assert gap.max() < 2e-2 and gap.mean() < 1e-3
    assert np.array_equal(again.contexts[index["extra:empty"]], emb.contexts[index["extra:empty"]])
    assert again.truncated == emb.truncated and again.sentence_of == emb.sentence_of
    pairs = shared.map_batches(train_pairs, batch_format="numpy").take_all()
    train = [r for r in rows if r["split"] == "train"]
    assert len(pairs) == len(train) and all(p["image"].any() for p in pairs)
    pooled, states = states_of(shared, [some["sample_id"], "extra:long"])
    with torch.no_grad():
        expected = model.token_states(model.tokenizer()([some["report_text"], "No acute disease. " * 60]).ids)
    assert torch.allclose(pooled, expected[0], atol=1e-2) and torch.allclose(states, expected[1], atol=1e-2)
    with pytest.raises(DataError, match="missing from the text tower pass"):
        states_of(shared, ["no-such-row"])
    assert tower_pass(rows, {}, load_config("tiny", ["text.train_parts=all"]), bundle) is None  # states would move


def test_an_actor_pool_that_takes_every_cpu_is_refused(ray_local: None) -> None:
    from diffcxr.raycluster import check_pool_leaves_room

    check_pool_leaves_room(load_config("tiny"))  # 1 × 0.5 of 2 CPUs
    greedy = load_config("tiny", ["ray.data_pool_size=2", "ray.data_cpus_per_actor=1"])
    with pytest.raises(ConfigError, match="= 2 CPUs leaves less than 0.25 of this cluster's 2 CPUs"):
        check_pool_leaves_room(greedy)
