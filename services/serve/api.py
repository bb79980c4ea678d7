"""Request and response models of the generation API, shared by HTTP (OpenAPI) and gRPC.

The request model is built from the configured limits, so the OpenAPI schema
advertises exactly what the service accepts (steps up to ``limits.max_steps``,
at most ``limits.max_images`` images, ...), and a schema-driven client or
fuzzer never has to guess.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from services.diffusion import GUIDANCE_RANGE
from services.serve.config import ServeConfig

MAX_SEED = 2**63 - 1


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _seeds_fit(self) -> _Base:
        seed, n = getattr(self, "seed", None), getattr(self, "num_images", 1)
        if seed is not None and seed + n - 1 > MAX_SEED:
            raise ValueError(f"seed: seed + num_images - 1 must stay below 2**63 (seed {seed}, {n} images)")
        return self


def request_model(cfg: ServeConfig) -> type[BaseModel]:
    """``GenerateRequest`` with this deployment's limits in its schema."""
    lim = cfg.limits
    return create_model(
        "GenerateRequest",
        __base__=_Base,
        report=(
            str,
            Field(
                max_length=lim.max_report_chars,
                description="Free-text radiology report (findings/impression). Empty: unconditional, flagged.",
            ),
        ),
        seed=(int | None, Field(None, ge=0, le=MAX_SEED, description="Image i uses seed + i; null: drawn, returned.")),
        steps=(int | None, Field(None, ge=1, le=lim.max_steps, description="Sampler steps; null: model default.")),
        guidance=(
            float | None,
            Field(None, ge=GUIDANCE_RANGE[0], le=GUIDANCE_RANGE[1], allow_inf_nan=False, description="CFG scale."),
        ),
        num_images=(int, Field(1, ge=1, le=lim.max_images, description="Images for this report.")),
        format=(Literal["png", "dicom", "npy"], Field("png", description="png (grayscale), dicom or npy (float32).")),
        bit_depth=(Literal[8, 16], Field(8, description="Gray levels for png and dicom.")),
        disease_sentence=(
            str | None,
            Field(None, max_length=2000, description='Overrides the labeler\'s "There is {disease}." sentence.'),
        ),
    )


class ImageOut(BaseModel):
    seed: int
    content_type: str
    sha256: str
    data: str = Field(description="Base64 of the file (PNG, DICOM or .npy).")
    precision: str = Field(description="Number format the denoiser ran in: fp32 or bf16 (diffcxr.precision).")
    runtime: dict[str, Any] = Field(
        description="What the exact pixels depend on besides the request and model: precision, threads, isa."
    )


class ModelsOut(BaseModel):
    model: str = Field(description="Generator version that served the request, e.g. diffcxr-generator/3.")
    ref: str
    parts: dict[str, Any] = Field(description="Weight hashes and registry versions of every part.")
    served_by: dict[str, str] = Field(description="Version each deployment used.")


class GenerateResponse(BaseModel):
    request_id: str
    synthetic: bool = True
    images: list[ImageOut]
    labels: dict[str, float | None] = Field(description="CheXpert observations by name: 1, 0, -1 or null.")
    disease_sentence: str
    unconditional: bool
    warnings: list[str]
    steps: int
    guidance: float
    format: str
    models: ModelsOut
    timings_ms: dict[str, float]
    batch_sizes: dict[str, int] = Field(description="Largest dynamic batch each deployment ran this request in.")


class ErrorBody(BaseModel):
    status: int
    field: str | None
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


def describe(exc: ValidationError) -> tuple[str, str, list[dict[str, Any]]]:
    """(first field, "field: reason; ...", details) of a validation error."""
    return describe_errors(exc.errors())


def describe_errors(errors: list[Any]) -> tuple[str, str, list[dict[str, Any]]]:
    """Pydantic/FastAPI error entries → fields as dotted paths (no "body" prefix) with their reasons."""
    details = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ()) if p != "body"]
        if e.get("type") == "json_invalid":  # loc is a character position, not a field
            loc = []
        message = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        field = ".".join(loc)
        if not field:  # a whole-request check says "field: reason"
            field, _, rest = message.partition(": ") if ": " in message else ("body", "", message)
            message = rest or message
        details.append({"field": field, "message": message})
    text = "; ".join(f"{d['field']}: {d['message']}" for d in details)
    return (details[0]["field"] if details else "body"), text, details
