"""Diffusion service: U-ViT + adapter (zero init, gradients), FLOPs vs the paper, checkpoint checks,
seeded sampling, and a real two-stage Ray Train run with crash/resume, NaN stop, MLflow registry round trip."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from diffcxr import storage
from diffcxr.config import DiffusionConfig, load_config
from diffcxr.errors import DataError, DiffCXRError
from diffcxr.stages import MARKER, StageCall, StageDir
from services.diffusion.adapter import AdaptedUViT
from services.diffusion.sampling import check_request, sample_latents
from services.diffusion.schedulers import schedule_of
from services.diffusion.uvit import UViT, UViTConfig
from services.diffusion.weights import load_adapted, load_uvit, save_model

SMALL = UViTConfig(
    latent_channels=8, latent_size=8, patch_size=2, embed_dim=64, depth=4, num_heads=4, context_tokens=6, context_dim=24
)


def _inputs(cfg: UViTConfig, batch: int = 3) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, *cfg.latent_shape, generator=g)
    t = torch.tensor([1, 500, 999][:batch])
    context = torch.randn(batch, cfg.context_tokens, cfg.context_dim, generator=g)
    hint = torch.randn(batch, cfg.context_tokens, cfg.context_dim, generator=g)
    return x, t, context, hint


def _trained_like(cfg: UViTConfig) -> UViT:
    """A U-ViT whose weights are not the init (as after training): every tensor perturbed."""
    torch.manual_seed(0)
    model = UViT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.mark.parametrize("pooled", [False, True])
def test_adapter_changes_nothing_at_initialisation(pooled: bool) -> None:
    cfg = dataclasses.replace(SMALL, pooled_context=pooled)
    uvit = _trained_like(cfg)
    x, t, context, hint = _inputs(cfg)
    with torch.no_grad():
        frozen = uvit(x, t, context)
        adapted = AdaptedUViT(uvit).eval()
        out = adapted(x, t, context, hint)
    assert torch.equal(out, frozen)  # exactly: every injection is a zero Linear
    zero_layers = [adapted.adapter.hint_embed, adapted.adapter.mid_out, *adapted.adapter.skip_out]
    zero_layers += [adapted.adapter.hint_pooled] if pooled else []
    assert all(not layer.weight.any() and not layer.bias.any() for layer in zero_layers)
    # the copy starts from the trained weights, not from a fresh init
    assert torch.equal(adapted.adapter.in_blocks[0].attn.qkv.weight, uvit.in_blocks[0].attn.qkv.weight)
    assert adapted.adapter.in_blocks[0].attn.qkv.weight is not uvit.in_blocks[0].attn.qkv.weight


def test_the_pooled_path_makes_every_patch_depend_on_the_condition() -> None:
    """With ``pooled_context`` the condition reaches each patch token before any attention (the paper's U-ViT
    reaches them only through attention to the context tokens, which a briefly trained model learns to ignore)."""
    cfg = dataclasses.replace(SMALL, pooled_context=True)
    model = _trained_like(cfg)
    x, t, context, _ = _inputs(cfg)
    with torch.no_grad():
        embed = model.embed(x, t, context)[:, 1 + cfg.context_tokens :]
        other = model.embed(x, t, context.flip(0))[:, 1 + cfg.context_tokens :]
        plain = dataclasses.replace(cfg, pooled_context=False)
        assert not torch.allclose(embed, other)
        assert UViT(plain).embed.pooled_embed is None and "pooled_embed.weight" in dict(model.embed.named_parameters())


def test_only_the_adapter_receives_gradients() -> None:
    adapted = AdaptedUViT(_trained_like(SMALL)).train()
    x, t, context, hint = _inputs(SMALL)
    adapted(x, t, context, hint).square().mean().backward()
    assert all(p.grad is None for p in adapted.uvit.parameters())
    assert all(p.requires_grad for p in adapted.adapter.parameters())
    assert adapted.adapter.mid_out.weight.grad.abs().sum() > 0
    assert adapted.adapter.skip_out[0].weight.grad.abs().sum() > 0
    optimizer = torch.optim.SGD(adapted.adapter.parameters(), lr=0.1)
    optimizer.step()  # after one step the hint path is open and the output moves
    with torch.no_grad():
        assert not torch.equal(adapted(x, t, context, hint), adapted.uvit(x, t, context))


def test_flops_reproduce_the_paper_to_the_third_decimal() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "orchestration.cli", "flops", "-p", "paper"], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["gmacs_thop"] == 29.641 and abs(out["relative_difference"]) < 0.01
    assert {r["tokens"]: r["gmacs_thop"] for r in out["uvit_by_tokens"]} == {
        32: 16.705,
        77: 19.322,
        128: 22.287,
        256: 29.729,
    }
    assert all(r["gflops_full"] > 2 * r["gmacs_thop"] for r in out["uvit_by_tokens"])  # attention included
    res = subprocess.run(
        [sys.executable, "-m", "orchestration.cli", "flops", "-p", "paper", "--no-adapter", "--tokens", "77"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert json.loads(res.stdout)["gmacs_thop"] == 19.322


def test_checkpoint_that_does_not_fit_its_config_fails_naming_both_shapes(tmp_path: Path) -> None:
    model = _trained_like(SMALL)
    meta = {"config": SMALL.to_dict()}
    save_model(model, tmp_path / "uvit", "uvit", meta)
    loaded, _ = load_uvit(tmp_path / "uvit")
    x, t, context, _ = _inputs(SMALL)
    with torch.no_grad():
        assert torch.equal(loaded(x, t, context), model(x, t, context))

    spec_path = tmp_path / "uvit" / "uvit.json"
    spec = json.loads(spec_path.read_text())
    spec["config"]["context_dim"] = 32
    spec_path.write_text(json.dumps(spec))
    with pytest.raises(DataError, match=r"'embed.context_embed.weight' has shape \(64, 24\).*builds \(64, 32\)"):
        load_uvit(tmp_path / "uvit")

    save_model(model.half(), tmp_path / "half", "uvit", meta)
    with pytest.raises(DataError, match="dtype torch.float16 in the checkpoint but the model uses torch.float32"):
        load_uvit(tmp_path / "half")


def test_adapter_refuses_a_different_uvit(tmp_path: Path) -> None:
    a, b = _trained_like(SMALL), UViT(SMALL)
    save_model(a, tmp_path / "a", "uvit", {"config": SMALL.to_dict()})
    save_model(b, tmp_path / "b", "uvit", {"config": SMALL.to_dict()})
    sha_a = json.loads((tmp_path / "a" / "uvit.json").read_text())["weights_sha256"]
    save_model(AdaptedUViT(a).adapter, tmp_path / "ad", "adapter", {"uvit_sha256": sha_a})
    assert load_adapted(tmp_path / "a", tmp_path / "ad")[0] is not None
    with pytest.raises(DataError, match="was trained on U-ViT"):
        load_adapted(tmp_path / "b", tmp_path / "ad")


#: tiny's denoiser shape (32×8×8 latents, 1×1 patches, pooled condition): where batched kernels rounded differently
TINY_LIKE = UViTConfig(latent_channels=32, latent_size=8, patch_size=1, embed_dim=128, depth=4, num_heads=4,
                       context_tokens=16, context_dim=48, pooled_context=True)  # fmt: skip


@pytest.mark.parametrize("threads", [1, 2])
def test_seeded_sampling_is_reproducible_and_bit_identical_alone_or_in_a_batch(threads: int) -> None:
    """A request's latent is the same bits whichever requests share its sampler batch (a served image must not
    depend on its batch-mates): oneDNN convolutions and the one-row-per-image Linears round by batch size, so
    the model runs those one image at a time outside training (``per_image``)."""
    model = AdaptedUViT(_trained_like(TINY_LIKE))
    with torch.no_grad():
        for p in model.adapter.parameters():  # a trained adapter: its zero Linears are no longer zero
            p.add_(torch.randn_like(p) * 0.05)
    model.eval()
    schedule = schedule_of(DiffusionConfig())
    g = torch.Generator().manual_seed(3)
    context, hint = (torch.randn(8, TINY_LIKE.context_tokens, TINY_LIKE.context_dim, generator=g) for _ in range(2))
    uncond = torch.zeros(TINY_LIKE.context_tokens, TINY_LIKE.context_dim)

    def run(rows: list[int], seeds: list[int]) -> torch.Tensor:
        return sample_latents(model, schedule, context[rows], uncond, seeds, TINY_LIKE.latent_shape, 4, 3.0,
                              hint=hint[rows], uncond_hint=uncond)  # fmt: skip

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        first = run([0, 1, 2, 3, 4, 5, 6, 7], [10, 11, 12, 13, 14, 15, 16, 17])
        assert torch.equal(first, run([0, 1, 2, 3, 4, 5, 6, 7], [10, 11, 12, 13, 14, 15, 16, 17]))
        for i in (0, 5, 7):
            assert torch.equal(run([i], [10 + i])[0], first[i]), f"row {i} alone differs from row {i} in the batch"
        assert torch.equal(run([3, 5, 3], [99, 15, 7])[1], first[5])
    finally:
        torch.set_num_threads(before)
    assert not torch.allclose(first[0], run([0], [20])[0])  # the seed matters


@pytest.mark.parametrize("prediction", ["v_prediction", "epsilon"])
@pytest.mark.parametrize("kind", ["dpm-solver++", "ddim"])
def test_sampler_draws_the_right_distribution_for_an_exact_denoiser(kind: str, prediction: str) -> None:
    """For Gaussian latents N(0, s²) the optimal ε- and v-predictors are known in closed form; fed to the sampler
    on the training schedule they must give latents with standard deviation s (schedule, timesteps, prediction
    type and solver wired right)."""
    from services.diffusion.schedulers import training_scheduler

    schedule = schedule_of(DiffusionConfig(prediction_type=prediction))
    assert schedule["prediction_type"] == prediction
    alphas = training_scheduler(schedule).alphas_cumprod
    s = 0.8

    def exact(x, t, c, h):  # noqa: ANN001, ANN202
        a = alphas[t].view(-1, 1, 1, 1)
        eps = (1 - a).sqrt() * x / (a * s**2 + 1 - a)  # E[ε | x_t]
        if prediction == "epsilon":
            return eps
        x0 = a.sqrt() * s**2 * x / (a * s**2 + 1 - a)  # E[x0 | x_t]
        return a.sqrt() * eps - (1 - a).sqrt() * x0  # v = sqrt(ᾱ)·ε − sqrt(1−ᾱ)·x0

    context = torch.zeros(64, 4, 8)
    latents = sample_latents(
        exact, schedule, context, context[0], list(range(64)), (8, 8, 8), 50, 1.0, scheduler_kind=kind
    )
    assert abs(float(latents.std()) - s) < 0.04


@pytest.mark.parametrize(
    ("steps", "guidance", "message"),
    [(0, 3.0, r"steps: must be an integer in \[1, 1000\], got 0"), (10, 31.0, r"guidance: .*\[0.0, 30.0\], got 31.0"),
     (2.5, 3.0, "steps: must be an integer"), (10, float("nan"), "guidance")],
)  # fmt: skip
def test_sampler_settings_out_of_range_are_refused(steps: object, guidance: object, message: str) -> None:
    with pytest.raises(DataError, match=message):
        check_request(steps, guidance)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- Ray Train, end to end
QUICK = [
    "data.max_reports=60",
    "data.noise_rate=0",
    "filter.lae_steps=20",
    "filter.disc_steps=20",
    "text.steps=4",
    "text.batch_size=8",
    "text.checkpoint_every=2",
    "diffusion.steps=6",
    "diffusion.batch_size=8",
    "diffusion.checkpoint_every=3",
    "diffusion.log_every=2",
    "diffusion.sample_every=3",
    "diffusion.preview_reports=2",
    "adapter.steps=4",
    "adapter.batch_size=8",
    "adapter.checkpoint_every=2",
    "sampling.steps=3",
    "ray.num_workers=1",
]


@pytest.fixture(scope="module")
def upstream(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> str:
    """data → filter → text outputs for 60 tiny phantom reports; returns the run root."""
    from services.data import stage as data_stage
    from services.filter import stage as filter_stage
    from services.text import stage as text_stage

    root = str(tmp_path_factory.mktemp("diffusion-run"))
    cfg = load_config("tiny", [*QUICK, f"project.run_root={root}"])
    for stage in (data_stage, filter_stage, text_stage):
        stage.run(cfg)
    return root


def _cfg(root: str, *extra: str):  # noqa: ANN202
    return load_config("tiny", [*QUICK, f"project.run_root={root}", *extra])


def test_two_stage_training_crash_resume_registry_and_seeded_generation(
    upstream: str, tmp_path: Path, mlflow_server: str, experiment_name: str, home: Path
) -> None:
    import mlflow
    import pandas as pd
    from mlflow.tracking import MlflowClient
    from PIL import Image

    from diffcxr.tracking import Tracker
    from services.diffusion import stage
    from services.diffusion.generator import Generator

    cfg = _cfg(upstream, f"tracking.uri={mlflow_server}", "ray.num_workers=2", "ray.cpus_per_worker=0.5")
    out = StageDir(cfg.run_root, stage.STAGE).uri  # the run folder: trained once here, the skip checked at the end
    tracker = Tracker(mlflow_server, experiment_name)
    with pytest.MonkeyPatch.context() as faults, tracker.run("crash"):
        faults.setenv("DIFFCXR_FAULTS", json.dumps({"uvit": {"crash_after_step": 3}}))
        with pytest.raises(DiffCXRError, match="injected crash after step 3.*re-run"):
            stage.run(cfg, StageCall(tracker))
    assert not storage.exists(storage.join(out, MARKER))  # no marker after a crash: the re-run resumes
    with tracker.run("resume") as run:
        result = stage.run(cfg, StageCall(tracker))
    summary = result["summary"]
    assert summary["uvit"]["resumed_from_step"] == 3 and summary["uvit"]["trained_steps"] == 6
    assert summary["adapter"]["trained_steps"] == 4 and summary["adapter"]["resumed_from_step"] == 0
    # ray.train_niceness 0 (the default): the workers did not lower themselves to Ray's 15
    assert summary["uvit"]["worker_niceness"] == 0 and summary["adapter"]["worker_niceness"] == 0
    assert summary["training_pairs"] > 20 and summary["not_trained_on"] == {}
    assert all(np.isfinite(h["loss"]) for h in summary["uvit"]["history"])
    client = MlflowClient(mlflow_server)
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "uvit.loss")) == [4, 6]
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "adapter.loss")) == [2, 4]
    previews = [a.path for a in client.list_artifacts(run.info.run_id, "diffusion/samples")]
    assert "diffusion/samples/uvit_step_0000006.png" in previews
    assert "diffusion/samples/adapter_step_0000004.png" in previews
    assert storage.exists(f"{out}/figures/samples_per_disease.png")

    registered = summary["registered"]
    assert {registered[k]["name"] for k in registered} == {"diffcxr-uvit", "diffcxr-adapter", "diffcxr-generator"}
    for name in ("diffcxr-uvit", "diffcxr-adapter", "diffcxr-generator"):
        assert tracker.alias_version(name, cfg.tracking.candidate_alias) is not None

    # the generator pins every part
    local = Generator(storage.get_folder(result["generator"]))
    spec = local.spec
    assert spec["adapter"]["weights_sha256"] == summary["adapter"]["weights_sha256"]
    assert spec["uvit"]["weights_sha256"] == summary["uvit"]["weights_sha256"]
    assert spec["autoencoder"]["id"].startswith("taef2@") and spec["autoencoder"]["scale_factor"] == 1.0
    assert spec["registry"]["uvit"]["version"] == registered["uvit"]["version"]

    # registry round trip: the pyfunc returns the same images as the local bundle, seeded
    reports = ["Large right pleural effusion.", "Heart size is normal. Lungs are clear."]
    pyfunc = mlflow.pyfunc.load_model(f"models:/diffcxr-generator@{cfg.tracking.candidate_alias}")
    frame = pyfunc.predict(pd.DataFrame({"report": reports, "seed": [7, 7]}))
    assert list(frame["disease_sentence"]) == ["There is pleural effusion.", "There is no finding."]
    assert list(frame["precision"]) == [local.precision] * 2  # the row says which number format drew it
    again = local.generate(reports, [7, 7])
    for png, image in zip(frame["png"], again, strict=True):
        decoded = Image.open(io.BytesIO(png))
        assert decoded.text["diffcxr.synthetic"] == "true" and "effusion" not in decoded.text.get("Description", "")
        assert np.array_equal(np.asarray(decoded), image.pixels)
    assert not np.array_equal(again[0].pixels, local.generate(reports[:1], [8])[0].pixels)
    assert not np.array_equal(again[0].pixels, again[1].pixels)

    # the stage is current now: a re-run is skipped
    assert stage.run(cfg)["skipped"] is True


def test_generate_cli_is_seeded_and_rejects_bad_settings(upstream: str, tmp_path: Path) -> None:
    from PIL import Image

    model = f"{upstream}/diffusion/generator"
    if not storage.exists(f"{model}/generator.json"):  # this test alone: train the run folder's generator
        from services.diffusion import stage

        stage.run(_cfg(upstream))
    run = [sys.executable, "-m", "orchestration.cli", "generate", "--model", model, "--report", "Mild cardiomegaly."]
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    for path in (a, b):
        res = subprocess.run([*run, "--seed", "7", "--out", str(path)], capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)[0]["disease_sentence"] == "There is cardiomegaly."
    assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
    assert Image.open(a).text["diffcxr.synthetic"] == "true"
    assert Image.open(a).text["diffcxr.precision"] == json.loads(res.stdout)[0]["precision"] in ("fp32", "bf16")
    res = subprocess.run([*run, "--precision", "fp16", "--out", str(a)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "--precision: invalid choice: 'fp16'" in res.stderr
    res = subprocess.run([*run, "--guidance", "99", "--out", str(a)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "guidance: must be a number in [0.0, 30.0], got 99.0" in res.stderr
    assert "Traceback" not in res.stderr
    res = subprocess.run([*run, "--seeds", "1", "2", "--out", str(a)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "--seeds: 2 seeds for 1 reports" in res.stderr


def test_the_same_config_trains_the_same_generator(upstream: str, tmp_path: Path) -> None:
    """Two fits of one config (one worker) end in bit-identical weights: before the shard was held in a fixed
    order, Ray Data's block arrival order decided which rows the seeded permutation drew. The second runs its
    worker at Ray's own niceness: scheduling priority changes the speed, never the model."""
    from services.diffusion import stage

    base = ["diffusion.sample_every=100", "adapter.enabled=false"]  # the adapter reads the same way
    runs = [stage.run(_cfg(upstream, *base, *extra), StageCall(out_uri=str(tmp_path / name)))["summary"]
            for name, extra in (("a", []), ("b", ["ray.train_niceness=null"]))]  # fmt: skip
    assert runs[0]["uvit"]["weights_sha256"] == runs[1]["uvit"]["weights_sha256"]
    assert runs[0]["uvit"]["worker_niceness"] == 0 and runs[1]["uvit"]["worker_niceness"] > 0, runs


def test_a_diverging_loss_stops_training_naming_step_and_batch(
    upstream: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.diffusion import stage

    monkeypatch.setenv("DIFFCXR_FAULTS", json.dumps({"uvit": {"poison_after_step": 2}}))
    with pytest.raises(DiffCXRError, match=r"diverged: loss is nan at step 3 \(batch sample ids \['phantom:"):
        stage.run(_cfg(upstream), StageCall(out_uri=str(tmp_path / "nan")))


def test_latent_stats_standardise_each_channel_and_round_trip() -> None:
    from services.diffusion.latents import LatentStats

    g = torch.Generator().manual_seed(0)
    offsets, scales = torch.linspace(-0.9, 1.1, 8).view(1, 8, 1, 1), torch.linspace(0.4, 1.2, 8).view(1, 8, 1, 1)
    latents = torch.randn(64, 8, 4, 4, generator=g) * scales + offsets  # TAEF2-like: unstandardised channels
    stats = LatentStats.of(latents.numpy())
    z = stats.normalize(latents)
    assert torch.allclose(z.mean((0, 2, 3)), torch.zeros(8), atol=1e-5)
    assert torch.allclose(z.std((0, 2, 3), unbiased=False), torch.ones(8), atol=1e-4)
    assert torch.allclose(stats.denormalize(z), latents, atol=1e-5)
    restored = LatentStats.from_spec(stats.to_dict(), 8)
    assert restored == stats
    assert torch.equal(LatentStats.from_spec(None, 8).denormalize(latents), latents)  # older models: identity
    with pytest.raises(ValueError, match="latent_stats: 8 channels recorded, the latent has 4"):
        LatentStats.from_spec(stats.to_dict(), 4)


@pytest.mark.parametrize("prediction", ["v_prediction", "epsilon"])
def test_denoising_loss_targets_and_min_snr_weights(prediction: str) -> None:
    from diffusers.training_utils import compute_snr

    from services.diffusion.objective import denoising_loss, min_snr_weights
    from services.diffusion.schedulers import training_scheduler

    scheduler = training_scheduler(schedule_of(DiffusionConfig(prediction_type=prediction)))
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(6, 4, 2, 2, generator=g), torch.randn(6, 4, 2, 2, generator=g)
    t = torch.tensor([0, 10, 200, 500, 900, 999])
    target = noise if prediction == "epsilon" else scheduler.get_velocity(x0, noise, t)

    def oracle(noisy, timesteps, context):  # noqa: ANN001, ANN202 - knows the answer
        assert torch.equal(noisy, scheduler.add_noise(x0, noise, timesteps))
        return target

    assert float(denoising_loss(oracle, scheduler, x0, noise, t, torch.zeros(6, 1, 1), min_snr_gamma=5.0)) == 0.0
    snr = compute_snr(scheduler, t)
    weights = min_snr_weights(scheduler, t, 5.0)
    expected = snr.clamp(max=5.0) / (snr + 1 if prediction == "v_prediction" else snr)
    assert torch.allclose(weights, expected) and weights[0] < 1.0  # the easy low-noise steps are down-weighted
    zero = lambda noisy, timesteps, context: torch.zeros_like(noisy)  # noqa: E731
    plain = denoising_loss(zero, scheduler, x0, noise, t, torch.zeros(6, 1, 1))
    assert torch.isclose(plain, target.pow(2).mean())


def test_shard_batches_in_memory_and_streamed_cover_the_shard_alike(ray_local: None) -> None:
    """A worker's shard held in memory yields the same rows as the streamed one, in full batches, reshuffled
    per epoch by its seed, with the hint looked up from the sentence index."""
    import pyarrow as pa
    import ray.data

    from services.diffusion.data import ShardBatches

    rng = np.random.default_rng(0)
    n, latent_shape, context_shape = 50, (2, 2, 2), (3, 4)
    table = pa.table({
        "sample_id": [f"s{i}" for i in range(n)],
        "latent": [rng.normal(size=latent_shape).astype(np.float16).tobytes() for _ in range(n)],
        "context": [np.full(context_shape, i, np.float16).tobytes() for i in range(n)],
        "sentence": pa.array([i % 3 for i in range(n)], pa.int32()),
    })  # fmt: skip
    sentences = np.arange(3, dtype=np.float16)[:, None, None] * np.ones((3, *context_shape), np.float16)
    payload = {"latent_shape": list(latent_shape), "context_shape": list(context_shape), "sentences": sentences}
    shard = ray.data.from_arrow(table).iterator()

    def epoch(source: ShardBatches, e: int) -> list[dict]:
        return list(source.epoch(e, 0))

    memory = ShardBatches(shard, payload, 8, seed=1, rank=0, in_memory=True)
    streamed = ShardBatches(shard, payload, 8, seed=1, rank=0, in_memory=False)
    for source in (memory, streamed):
        batches = epoch(source, 0)
        assert len(batches) == n // 8 and all(len(b["sample_id"]) == 8 for b in batches)
        ids = [s for b in batches for s in b["sample_id"]]
        assert len(set(ids)) == len(ids) == 48
        for b in batches:
            index = np.array([int(s[1:]) for s in b["sample_id"]])
            assert torch.equal(b["context"][:, 0, 0], torch.from_numpy(index.astype(np.float32)))
            assert torch.equal(b["hint"][:, 0, 0], torch.from_numpy((index % 3).astype(np.float32)))
            assert b["latent"].shape == (8, *latent_shape) and b["latent"].dtype == torch.float32
    first, again, second = epoch(memory, 0), epoch(memory, 0), epoch(memory, 1)
    assert [b["sample_id"] for b in first] == [b["sample_id"] for b in again]
    assert [b["sample_id"] for b in first] != [b["sample_id"] for b in second]
    # rows arriving in another order (Ray Data's blocks) give the same batches: the shard is held sorted
    reversed_shard = ray.data.from_arrow(table.take(list(range(n - 1, -1, -1)))).iterator()
    arrived_reversed = ShardBatches(reversed_shard, payload, 8, seed=1, rank=0, in_memory=True)
    assert [b["sample_id"] for b in epoch(arrived_reversed, 0)] == [b["sample_id"] for b in first]
