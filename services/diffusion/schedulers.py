"""Noise schedules from diffusers: one place that turns the config into schedulers.

Training adds noise with ``DDPMScheduler`` (SD's scaled-linear betas, v- or
ε-prediction as configured); sampling uses ``DPMSolverMultistepScheduler`` (DPM-Solver++,
order 2) or DDIM on the *same* betas, so a model is always sampled on the
schedule and prediction type it was trained with (both are saved with the model).
"""

from __future__ import annotations

from typing import Any

from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from diffcxr.config import DiffusionConfig

#: Sampler steps and guidance scales a request may ask for.
STEPS_RANGE: tuple[int, int] = (1, 1000)
GUIDANCE_RANGE: tuple[float, float] = (0.0, 30.0)


def schedule_of(cfg: DiffusionConfig) -> dict[str, Any]:
    """The training schedule as plain values (stored with every U-ViT)."""
    return {
        "num_train_timesteps": cfg.num_train_timesteps,
        "beta_start": cfg.beta_start,
        "beta_end": cfg.beta_end,
        "beta_schedule": cfg.beta_schedule,
        "prediction_type": cfg.prediction_type,
    }


def training_scheduler(schedule: dict[str, Any]) -> DDPMScheduler:
    return DDPMScheduler(**schedule, clip_sample=False)


def sampling_scheduler(schedule: dict[str, Any], kind: str = "dpm-solver++") -> Any:
    if kind == "dpm-solver++":
        return DPMSolverMultistepScheduler(**schedule, algorithm_type="dpmsolver++", solver_order=2)
    if kind == "ddim":
        return DDIMScheduler(**schedule, clip_sample=False, set_alpha_to_one=False)
    raise ValueError(f"sampling.scheduler must be 'dpm-solver++' or 'ddim', got '{kind}'")
