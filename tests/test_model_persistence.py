"""Model folders (diffcxr.modelio): U-ViT, adapter and report encoder save as JSON + safetensors and rebuild
from their folder alone with identical outputs; ``.pt``-era folders still load; a tampered file or a config
that does not fit its weights fails naming the file or the tensor. No Ray; a few seconds on 2 cores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from diffcxr import modelio
from diffcxr.config import load_config
from diffcxr.errors import ConfigError, DataError
from diffcxr.hashing import sha256_file
from services.diffusion.adapter import AdaptedUViT
from services.diffusion.uvit import UViT, uvit_config
from services.diffusion.weights import ADAPTER, UVIT, load_adapted, load_adapter, load_uvit, model_meta, save_model
from services.text.model import LEGACY_FORMAT, ReportEncoder

TINY = load_config("tiny")
CONTEXT = (TINY.text.squeeze_tokens, TINY.text.hidden_dim)


def _perturbed(model: nn.Module, seed: int = 0) -> nn.Module:
    """Weights unlike any init (zero-initialised adapter outputs included), as after training."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def uvit() -> UViT:
    torch.manual_seed(0)
    return _perturbed(UViT(uvit_config(TINY, CONTEXT)))


@pytest.fixture(scope="module")
def encoder() -> ReportEncoder:
    torch.manual_seed(0)
    return _perturbed(ReportEncoder.from_config(TINY.text, TINY.data.image_size))


def _inputs(model: UViT) -> tuple[torch.Tensor, ...]:
    g, cfg = torch.Generator().manual_seed(1), model.config
    x = torch.randn(2, *cfg.latent_shape, generator=g)
    context, hint = (torch.randn(2, cfg.context_tokens, cfg.context_dim, generator=g) for _ in range(2))
    return x, torch.tensor([3, 700]), context, hint


def _meta(model: UViT) -> dict:
    return {**model_meta(TINY, model.config, CONTEXT, "taef2-test"), "trained_steps": 7}


def _legacy_pt(folder: Path, name: str, weights: str) -> None:
    """Rewrite a folder as the ``.pt`` era wrote it: torch.save'd state, no model_format/weights_file keys."""
    state, spec = modelio.load_state(folder, name)
    (folder / f"{name}.safetensors").unlink()
    torch.save(state, folder / weights)
    old = {k: v for k, v in spec.items() if k not in ("model_format", "weights_file")}
    if name == "text_model":  # v1 kept the encoder spec flat
        old = {**{k: v for k, v in old.pop("config").items()}, "format": LEGACY_FORMAT}
    (folder / f"{name}.json").write_text(json.dumps({**old, "weights_sha256": sha256_file(folder / weights)}))


def test_uvit_and_adapter_rebuild_from_their_folders_alone(uvit: UViT, tmp_path: Path) -> None:
    x, t, context, hint = _inputs(uvit)
    save_model(uvit, tmp_path / UVIT, UVIT, _meta(uvit))
    assert sorted(p.name for p in (tmp_path / UVIT).iterdir()) == ["uvit.json", "uvit.safetensors"]
    spec = json.loads((tmp_path / UVIT / "uvit.json").read_text())
    assert spec["config"] == uvit.config.to_dict() and spec["model_format"] == modelio.MODEL_FORMAT
    assert spec["dtype"] == "float32" and spec["weights_file"] == "uvit.safetensors" and spec["trained_steps"] == 7
    assert spec["weights_sha256"] == sha256_file(tmp_path / UVIT / "uvit.safetensors")
    loaded, _ = load_uvit(tmp_path / UVIT)
    with torch.no_grad():
        assert torch.equal(loaded(x, t, context), uvit(x, t, context))

    adapted = AdaptedUViT(uvit)
    _perturbed(adapted.adapter, seed=1)
    save_model(adapted.adapter, tmp_path / ADAPTER, ADAPTER, {**_meta(uvit), "uvit_sha256": spec["weights_sha256"]})
    alone, adapter_spec = load_adapter(tmp_path / ADAPTER)  # nothing but its folder
    both, _ = load_adapted(tmp_path / UVIT, tmp_path / ADAPTER)
    with torch.no_grad():
        want = adapted.adapter(x, t, context, hint)
        got = alone(x, t, context, hint)
        assert all(torch.equal(a, b) for a, b in zip(got[0], want[0], strict=True)) and torch.equal(got[1], want[1])
        assert torch.equal(both(x, t, context, hint), adapted(x, t, context, hint))
    assert adapter_spec["uvit_sha256"] == spec["weights_sha256"]
    with pytest.raises(ValueError, match="is not the model's config"):
        save_model(uvit, tmp_path / "bad", UVIT, {"config": {**uvit.config.to_dict(), "depth": 2}})


def test_report_encoder_bundle_is_safetensors_and_reloads_identically(encoder: ReportEncoder, tmp_path: Path) -> None:
    folder = encoder.save_bundle(tmp_path / "text")
    assert not (folder / "weights.pt").exists() and (folder / "text_model.safetensors").is_file()
    spec = json.loads((folder / "text_model.json").read_text())
    assert spec["config"] == encoder.spec and spec["squeeze_tokens"] == TINY.text.squeeze_tokens  # readers' keys
    loaded = ReportEncoder.load_bundle(folder)
    ids = encoder.tokenizer()(["Mild cardiomegaly.", "", "Small left pleural effusion."]).ids
    with torch.no_grad():
        for a, b in zip(loaded.encode(ids), encoder.encode(ids), strict=True):
            assert torch.equal(a, b)


def test_pt_era_folders_still_load_with_the_same_checks(uvit: UViT, encoder: ReportEncoder, tmp_path: Path) -> None:
    x, t, context, _ = _inputs(uvit)
    save_model(uvit, tmp_path / UVIT, UVIT, _meta(uvit))
    _legacy_pt(tmp_path / UVIT, UVIT, "uvit.pt")
    loaded, spec = load_uvit(tmp_path / UVIT)
    assert "model_format" not in spec
    with torch.no_grad():
        assert torch.equal(loaded(x, t, context), uvit(x, t, context))

    folder = encoder.save_bundle(tmp_path / "text")
    _legacy_pt(folder, "text_model", "weights.pt")
    old = ReportEncoder.load_bundle(folder)
    ids = encoder.tokenizer()(["Mild cardiomegaly."]).ids
    with torch.no_grad():
        assert torch.equal(old.encode(ids)[1], encoder.encode(ids)[1])
    old.save_bundle(folder)  # re-saved in place: v2, and the stale weights.pt is gone
    assert not (folder / "weights.pt").exists()
    assert json.loads((folder / "text_model.json").read_text())["format"] == "diffcxr-text-v2"
    with torch.no_grad():
        assert torch.equal(ReportEncoder.load_bundle(folder).encode(ids)[1], encoder.encode(ids)[1])

    (tmp_path / UVIT / "uvit.pt").write_bytes((tmp_path / UVIT / "uvit.pt").read_bytes()[:-8])
    with pytest.raises(DataError, match=r"uvit\.pt': sha256 differs.*corrupt or replaced file"):
        load_uvit(tmp_path / UVIT)
    (tmp_path / UVIT / "uvit.pt").unlink()
    with pytest.raises(DataError, match=rf"'{tmp_path / UVIT}' holds uvit.json but no weights"):
        load_uvit(tmp_path / UVIT)
    with pytest.raises(DataError, match="is not a uvit model folder"):
        load_uvit(tmp_path)
    with pytest.raises(ConfigError, match="not a text-model bundle"):
        ReportEncoder.load_bundle(tmp_path)


def test_tampered_weights_fail_on_their_sha256(uvit: UViT, encoder: ReportEncoder, tmp_path: Path) -> None:
    save_model(uvit, tmp_path / UVIT, UVIT, _meta(uvit))
    path = tmp_path / UVIT / "uvit.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # one weight's bits: still a valid safetensors file
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"uvit\.safetensors': sha256 differs.*corrupt or replaced file"):
        load_uvit(tmp_path / UVIT)
    folder = encoder.save_bundle(tmp_path / "text")
    modelio.save(nn.Linear(2, 2), tmp_path / "other", "text_model", {}, {})  # another model's file swapped in
    (tmp_path / "other" / "text_model.safetensors").replace(folder / "text_model.safetensors")
    with pytest.raises(DataError, match="corrupt or replaced file"):
        ReportEncoder.load_bundle(folder)


def test_config_that_does_not_fit_the_weights_fails_naming_the_tensor(
    uvit: UViT, encoder: ReportEncoder, tmp_path: Path
) -> None:
    save_model(uvit, tmp_path / UVIT, UVIT, _meta(uvit))
    spec_path = tmp_path / UVIT / "uvit.json"
    spec = json.loads(spec_path.read_text())
    spec["config"]["context_dim"] += 8
    spec_path.write_text(json.dumps(spec))
    d, e = CONTEXT[1], uvit.config.embed_dim
    with pytest.raises(
        DataError, match=rf"'embed.context_embed.weight' has shape \({e}, {d}\).*builds \({e}, {d + 8}\)"
    ):
        load_uvit(tmp_path / UVIT)

    folder = encoder.save_bundle(tmp_path / "text")
    spec = json.loads((folder / "text_model.json").read_text())
    spec["config"]["squeeze_tokens"] += 1
    (folder / "text_model.json").write_text(json.dumps(spec))
    with pytest.raises(DataError, match=r"'squeeze.conv2.weight' has shape"):
        ReportEncoder.load_bundle(folder)


class Tied(nn.Module):
    """An encoder/decoder pair sharing one matrix, as language models tie embeddings."""

    def __init__(self) -> None:
        super().__init__()
        self.encode, self.decode = nn.Linear(4, 3, bias=False), nn.Linear(4, 3, bias=False)
        self.decode.weight = self.encode.weight


def test_tied_weights_are_written_once_and_restored(tmp_path: Path) -> None:
    model = _perturbed(Tied())
    modelio.save(model, tmp_path, "tied", {"dim": 4}, {})
    spec = json.loads((tmp_path / "tied.json").read_text())
    assert spec["shared"] == {"decode.weight": "encode.weight"} and spec["config"] == {"dim": 4}
    state, _ = modelio.load_state(tmp_path, "tied")
    fresh = modelio.fill(Tied(), state, "tied")
    assert torch.equal(fresh.decode.weight, model.encode.weight) and fresh.decode.weight is fresh.encode.weight
