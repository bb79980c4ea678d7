"""Profiles load and validate; bad keys and values fail at load time naming the key and reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from diffcxr.config import available_profiles, load_config
from diffcxr.errors import ConfigError


def test_shipped_profiles_are_tiny_small_paper() -> None:
    assert {"tiny", "small", "paper"} <= set(available_profiles())


@pytest.mark.parametrize("profile", ["tiny", "small", "paper"])
def test_every_profile_loads_and_records_its_name(profile: str) -> None:
    cfg = load_config(profile)
    assert cfg.project.profile == profile
    assert cfg.run_root.endswith(f"var/runs/{profile}")


def test_paper_profile_has_the_papers_sizes() -> None:
    cfg = load_config("paper")
    assert cfg.data.image_size == 256
    assert (cfg.diffusion.depth, cfg.diffusion.embed_dim, cfg.diffusion.num_heads, cfg.diffusion.patch_size) == (
        16,
        512,
        8,
        2,
    )
    assert cfg.text.encoder == "biomedclip" and cfg.text.context_length == 256 and cfg.text.squeeze_tokens == 77
    assert cfg.text.hidden_dim == 768
    assert cfg.latent_shape == (4, 32, 32) and cfg.autoencoder.scale_factor == pytest.approx(0.18215)
    assert (cfg.diffusion.beta_start, cfg.diffusion.beta_end, cfg.diffusion.beta_schedule) == (
        0.00085,
        0.012,
        "scaled_linear",
    )
    assert cfg.sampling.steps == 50 and cfg.sampling.scheduler == "dpm-solver++"


def test_tiny_and_small_use_taef2_latents() -> None:
    assert load_config("tiny").latent_shape == (32, 8, 8)
    assert load_config("small").latent_shape == (32, 16, 16)


def test_overrides_are_parsed_as_typed_values() -> None:
    cfg = load_config("tiny", ["diffusion.depth=8", "text.lr=3e-4", "data.max_reports=null", "ray.use_gpu=true"])
    assert cfg.diffusion.depth == 8 and isinstance(cfg.diffusion.depth, int)
    assert cfg.text.lr == pytest.approx(3e-4)
    assert cfg.data.max_reports is None
    assert cfg.ray.use_gpu is True


def test_unknown_profile_names_the_valid_choices() -> None:
    with pytest.raises(ConfigError, match=r"unknown profile 'huge'.*paper, small, tiny"):
        load_config("huge")


def test_unknown_key_is_named_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'diffusion\.dpeth' \(did you mean 'diffusion\.depth'"):
        load_config("tiny", ["diffusion.dpeth=8"])


def test_unknown_section_lists_sections() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'difusion'.*diffusion"):
        load_config("tiny", ["difusion.depth=8"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.image_size=100", r"data\.image_size: .*64, 128 or 256.*got 100"),
        ("diffusion.depth=7", r"depth must be even"),
        ("diffusion.num_heads=3", r"embed_dim 128 must be divisible by num_heads 3"),
        ("data.split_fractions=[0.5, 0.1, 0.1]", r"split_fractions must .* sum to 1"),
        ("text.lr=-1", r"text\.lr: .*greater than 0"),
        ("text.squeeze_tokens=500", r"squeeze_tokens 500 exceeds text.context_length 128"),
        ("autoencoder.latent_channels=4", r"taef2 has 32 latent channels"),
        ("data.source=iu_xray", r"set data\.root"),
        ("text.encoder=bert", r"text\.encoder: .*'biomedclip' or 'minilm'"),
    ],
)
def test_bad_values_fail_at_load_time_naming_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", [override])


def test_malformed_override_is_explained() -> None:
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config("tiny", ["diffusion"])
    with pytest.raises(ConfigError, match="must be section.key"):
        load_config("tiny", ["depth=3"])


def test_profile_from_a_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("data:\n  image_size: 128\ndiffusion:\n  depth: 6\n")
    cfg = load_config(str(path))
    assert cfg.project.profile == "mine" and cfg.data.image_size == 128 and cfg.diffusion.depth == 6
    path.write_text("data: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(path))
    path.write_text("data:\n  imagesize: 128\n")
    with pytest.raises(ConfigError, match=r"data\.imagesize.*did you mean 'data\.image_size'"):
        load_config(str(path))


def test_config_is_immutable_and_round_trips() -> None:
    from diffcxr.config import config_from_dict

    cfg = load_config("small")
    with pytest.raises(Exception, match="frozen"):
        cfg.diffusion.depth = 4  # type: ignore[misc]
    assert config_from_dict(cfg.to_dict()) == cfg


def test_fingerprint_follows_only_the_named_sections() -> None:
    a = load_config("tiny")
    b = load_config("tiny", ["diffusion.depth=8"])
    assert a.fingerprint("data") == b.fingerprint("data")
    assert a.fingerprint("diffusion") != b.fingerprint("diffusion")
    assert a.fingerprint() != b.fingerprint()


def test_cli_reports_a_bad_key_without_a_traceback() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "orchestration.cli", "config", "show", "--set", "sampling.stpes=3"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "unknown config key 'sampling.stpes'" in result.stderr
    assert "Traceback" not in result.stderr


def test_thread_counts_follow_reservations_and_never_oversubscribe_the_machine() -> None:
    """Ray Data actors and the driver get torch threads from config, capped at this machine's cores."""
    import os

    cores = os.cpu_count() or 1
    assert load_config("tiny", ["ray.threads_per_actor=null", "ray.data_cpus_per_actor=0.5"]).ray.actor_threads == 1
    assert load_config("tiny", ["ray.threads_per_actor=64"]).ray.actor_threads == max(1, cores)
    assert load_config("tiny", ["ray.threads_per_actor=64", "ray.data_pool_size=2"]).ray.actor_threads == max(
        1, cores // 2
    )
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    assert load_config("tiny").ray.main_threads == affinity
    assert load_config("tiny", ["ray.driver_threads=1"]).ray.main_threads == 1
    assert load_config("tiny", ["ray.driver_threads=512"]).ray.main_threads == affinity
