"""The serving configuration: one explicit, validated object (also the ``args`` of the Serve application).

Every field has a default that runs the whole graph on a 2-core laptop; a GPU
cluster raises ``replicas`` and sets ``num_gpus``. Unknown keys are errors
naming the key, like the training profiles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from diffcxr.errors import ConfigError
from services.diffusion import GUIDANCE_RANGE, STEPS_RANGE

DEFAULT_MODEL = "models:/diffcxr-generator@champion"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeploymentSettings(_Section):
    """Resources and batching of one deployment (each runs on its own replicas)."""

    replicas: int = Field(1, ge=1, le=256, description="Number of replicas.")
    num_cpus: float = Field(0.25, gt=0, le=256, description="CPUs reserved per replica (fractions allowed).")
    num_gpus: float = Field(0.0, ge=0, le=16, description="GPUs per replica (fractions share a card).")
    threads: int = Field(1, ge=1, le=256, description="torch intra-op threads per replica.")
    max_batch_size: int = Field(8, ge=1, le=256, description="Dynamic batching: most requests per batch; 1 = off.")
    batch_wait_timeout_s: float = Field(0.01, ge=0, le=10, description="Longest wait for a batch to fill.")
    max_ongoing_requests: int = Field(32, ge=1, le=10_000, description="Requests a replica accepts at once.")
    graceful_shutdown_timeout_s: float = Field(
        120.0, ge=0, le=3600,
        description="A replica being replaced (rolling update, scale-down) finishes its requests for up to this "
        "long before it is killed. During a roll-out a request on an old ingress waits for the restarted text, "
        "denoiser and decoder replicas, which can exceed Serve's 20 s default on a slow machine.",
    )  # fmt: skip


class LimitsConfig(_Section):
    max_report_chars: int = Field(20_000, ge=1, le=1_000_000, description="Longest report accepted (characters).")
    max_body_bytes: int = Field(65_536, ge=1024, le=16 << 20, description="Largest request body (413 above).")
    max_images: int = Field(4, ge=1, le=64, description="Most images per request.")
    max_steps: int = Field(100, ge=STEPS_RANGE[0], le=STEPS_RANGE[1], description="Most sampler steps per request.")
    max_concurrent_per_client: int = Field(
        8, ge=1, le=10_000, description="In-flight requests per client (token or address) per ingress replica; 429."
    )


class AuthConfig(_Section):
    mode: Literal["auto", "on", "off"] = Field(
        "auto", description="auto: bearer-token auth is on exactly when a token is found; on: refuse to start without."
    )
    token_file: str | None = Field(None, description="File holding the token (a mounted secret); read by the ingress.")
    token_env: str = Field("DIFFCXR_SERVE_TOKEN", description="Environment variable holding the token.")


class ServeConfig(_Section):
    """Everything ``diffcxr serve`` and ``serve deploy`` need."""

    model: str = Field(
        DEFAULT_MODEL,
        description="Generator bundle: models:/NAME@ALIAS, models:/NAME/VERSION, or a local folder / s3:// URI.",
    )
    model_refresh_s: float = Field(
        30.0, ge=0, le=86_400,
        description="For models:/NAME@ALIAS: how often the ingress re-reads the alias and rolls to the version it "
        "points at (in place, no request dropped); 0 = only when the app is (re)deployed.",
    )  # fmt: skip
    tracking_uri: str | None = Field(None, description="MLflow URI for models:/ references; null: MLFLOW_TRACKING_URI.")
    model_cache: str | None = Field(None, description="Where registry downloads are kept per node; null: a temp dir.")
    app_name: str = Field("diffcxr", description="Serve application name (gRPC clients send it as 'application').")
    host: str = Field("127.0.0.1", description="HTTP bind address; 0.0.0.0 exposes it to the network.")
    http_port: int = Field(8000, ge=1, le=65535)
    grpc_port: int | None = Field(9000, ge=1, le=65535, description="gRPC proxy port; null disables gRPC.")
    cors_origins: list[str] = Field(default_factory=list, description="Allowed CORS origins; empty = CORS off.")
    text: DeploymentSettings = DeploymentSettings(num_cpus=0.25, threads=1, max_batch_size=8)
    denoiser: DeploymentSettings = DeploymentSettings(
        num_cpus=1.0, threads=2, max_batch_size=8, batch_wait_timeout_s=0.05
    )
    decoder: DeploymentSettings = DeploymentSettings(num_cpus=0.25, threads=1, max_batch_size=8)
    ingress: DeploymentSettings = DeploymentSettings(num_cpus=0.1, max_batch_size=1, max_ongoing_requests=256)
    limits: LimitsConfig = LimitsConfig()
    auth: AuthConfig = AuthConfig()
    precision: Literal["auto", "fp32", "bf16"] | None = Field(
        None,
        description="Number format of the denoiser and decoder (diffcxr.precision); null: the bundle's "
        "sampling.precision (auto: bf16 only where the hardware has it and the quality check allowed it).",
    )
    default_steps: int | None = Field(None, ge=STEPS_RANGE[0], le=STEPS_RANGE[1], description="null: the bundle's.")
    default_guidance: float | None = Field(
        None, ge=GUIDANCE_RANGE[0], le=GUIDANCE_RANGE[1], description="null: the bundle's."
    )

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, where: str = "serve config") -> ServeConfig:
        try:
            return cls(**(data or {}))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigError(f"{where}: {problems}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> ServeConfig:
        try:
            data = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"serve config '{path}': {exc}") from None
        if data is not None and not isinstance(data, dict):
            raise ConfigError(f"serve config '{path}': expected a mapping of keys, got {type(data).__name__}")
        return cls.from_dict(data, where=f"serve config '{path}'")

    def with_overrides(self, **changes: Any) -> ServeConfig:
        return self.from_dict({**self.model_dump(mode="json"), **{k: v for k, v in changes.items() if v is not None}})
