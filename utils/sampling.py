"""Samplers for a trained UNet: build a scheduler by name, and a sampling loop that is right for all of them."""

from __future__ import annotations

import inspect

import torch

# name -> (diffusers scheduler class, settings on top of the training schedule). All are built by make_scheduler.
_SCHEDULERS = {
    "ddpm": ("DDPMScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),  # 2M
    "dpm++3m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 3}),
    "dpm++sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),  # two network evaluations per step (all but the last)
}
SAMPLERS = tuple(_SCHEDULERS)
SCHEDULE_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type")
# The course's fast setting: the training script's default for previews and metrics. Chosen by measurement
# (benchmarks/samplers.py, unit1/images/samplers.md): 25 steps of the stochastic DPM-Solver++ are 50 network
# evaluations per image with autoguidance, a tenth of DDPM's 250 guided steps, at the same FID on the
# leaderboard's best model; the deterministic solvers (DPM-Solver++ 2M/3M, UniPC) scored a 1.45x higher FID there.
FAST_SAMPLER = {"sampler": "dpm++sde", "num_inference_steps": 25, "guide_interval": None}
GUIDE_FOLDER = "guide_unet"  # where a pipeline folder keeps its autoguidance guide (see generate)


def _scheduler_spec(name: str) -> tuple[str, dict]:
    """(diffusers class name, extra settings) of the sampler ``name``; a clear error for an unknown one."""
    key = str(name).lower()
    if key not in _SCHEDULERS:
        raise ValueError(f"Unknown sampler {name!r}: choose one of {', '.join(SAMPLERS)}.")
    return _SCHEDULERS[key]


def make_scheduler(name: str, train_config):
    """A sampling scheduler called ``name`` (one of SAMPLERS) built from the training scheduler or its config.

    The noise schedule and prediction type come from ``train_config`` (a DDPMScheduler or its ``.config``).
    Timesteps are spaced "trailing", so that the first sampling step starts from pure noise (t = T - 1)
    even with few steps. "dpm++" is DPM-Solver++(2M); "dpm++3m" is third order and "dpm++sde" its stochastic
    variant; "euler-a" is Euler ancestral. (The sigma spacing of Karras et al. 2022, ``use_karras_sigmas``, is not
    offered: on the course's squaredcos_cap_v2 schedule sigma_max is so large that 10 steps land on the timesteps
    998, 998, 998, 998, 997, ..., 894, 259, 0.)
    """
    import diffusers

    class_name, extra = _scheduler_spec(name)
    config = getattr(train_config, "config", train_config)
    # Passed explicitly: from_config leaves out the values the training scheduler took by default, and a class
    # with other defaults (Heun: beta_start 0.00085) would then sample on a different noise schedule.
    schedule = {key: config[key] for key in SCHEDULE_KEYS if key in config}
    return getattr(diffusers, class_name).from_config(config, **schedule, timestep_spacing="trailing", **extra)


def scheduler_code(name: str, config_expression: str = "pipeline.scheduler.config") -> tuple[str, str]:
    """(the diffusers class, a Python expression building it from ``config_expression``) for the sampler ``name``,
    as make_scheduler builds it: for usage code in model cards."""
    class_name, extra = _scheduler_spec(name)
    arguments = "".join(f", {k}={v!r}" for k, v in extra.items())
    return class_name, f'{class_name}.from_config({config_expression}, timestep_spacing="trailing"{arguments})'


def guided_at(timestep, guide_interval: tuple[float, float] | None) -> bool:
    """Whether autoguidance applies at ``timestep``: everywhere without an interval, else where lo <= t <= hi."""
    if guide_interval is None:
        return True
    low, high = guide_interval
    return low <= float(timestep) <= high


def network_evaluations(scheduler, num_inference_steps: int, guided: bool = False,
                        guide_interval: tuple[float, float] | None = None) -> int:
    """Forward passes per generated image with ``scheduler`` in ``num_inference_steps`` steps.

    A guided step costs two (the model and the guide); Heun's steps cost two each but the last. This is the
    cost measure that compares samplers fairly ("NFE", number of function evaluations).
    """
    scheduler.set_timesteps(num_inference_steps)
    return sum(2 if guided and guided_at(t, guide_interval) else 1 for t in scheduler.timesteps)


def load_guide(pipeline_dir):
    """The autoguidance guide saved beside a pipeline (``guide_unet/``) as a UNet2DModel, or None if it has none.

    From the Hub: ``UNet2DModel.from_pretrained(repo_id, subfolder="guide_unet")``.
    """
    from pathlib import Path

    folder = Path(pipeline_dir) / GUIDE_FOLDER
    if not folder.is_dir():
        return None
    from diffusers import UNet2DModel

    return UNet2DModel.from_pretrained(folder).eval()


def _sample_shape(unet) -> tuple[int, int, int]:
    config = unet.config
    size = config.sample_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    return config.in_channels, height, width


@torch.no_grad()
def generate(unet, scheduler, num_images: int, num_inference_steps: int, generator: torch.Generator | None = None,
             batch_size: int | None = None, device=None, progress: bool = False, guide=None,
             guidance_scale: float = 1.0, guide_interval: tuple[float, float] | None = None) -> torch.Tensor:
    """Sample ``num_images`` images with ``scheduler`` in ``num_inference_steps`` steps.

    Returns a float32 CPU tensor (N, C, H, W) clamped to [-1, 1]. The starting noise is scaled by
    ``scheduler.init_noise_sigma`` and every model input goes through ``scheduler.scale_model_input``,
    which sigma-based samplers such as Euler need (DDPMPipeline skips both). Noise is drawn from
    ``generator`` on the CPU, so a seeded generator gives the same images on any device.

    Autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself"): with a
    ``guide`` -- a weaker model of the same kind, e.g. an early checkpoint of the same run -- each step uses
    ``guide_prediction + guidance_scale * (prediction - guide_prediction)``, which pushes the samples away
    from the guide's typical mistakes. ``guidance_scale=1`` is plain sampling; each step then costs one
    forward pass, with a guide two. ``guide_interval=(lo, hi)`` guides only the steps whose timestep t lies in
    [lo, hi] (Kynkaanniemi et al. 2024, "Applying guidance in a limited interval"); the others cost one pass.
    ``network_evaluations`` counts the passes.
    """
    if num_images < 1 or num_inference_steps < 1:
        raise ValueError(f"num_images and num_inference_steps must be >= 1, got {num_images} and "
                         f"{num_inference_steps}.")
    if guidance_scale != 1.0 and guide is None:
        raise ValueError(f"guidance_scale={guidance_scale:g} needs a guide model (guide=...); "
                         "without one use guidance_scale=1.")
    if guidance_scale == 1.0:
        guide = None
    elif _sample_shape(guide) != _sample_shape(unet):
        raise ValueError(f"The guide makes images of shape {_sample_shape(guide)}, the model {_sample_shape(unet)}: "
                         "use a checkpoint of the same model as the guide.")
    parameter = next(unet.parameters())
    device = parameter.device if device is None else torch.device(device)
    dtype = parameter.dtype
    batch_size = batch_size or num_images
    chunks = [min(batch_size, num_images - start) for start in range(0, num_images, batch_size)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(chunks) * num_inference_steps, desc="サンプリング")
    # stochastic samplers (DDPM, SDE, ancestral) draw their noise from ``generator``; the others take no generator
    step_kwargs = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    images = []
    for n in chunks:
        scheduler.set_timesteps(num_inference_steps, device=device)  # also resets multistep solver state
        x = torch.randn((n, *_sample_shape(unet)), generator=generator, dtype=torch.float32)
        x = (x * scheduler.init_noise_sigma).to(device=device, dtype=dtype)
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(x, t)
            prediction = unet(model_input, t).sample
            if guide is not None and guided_at(t, guide_interval):
                weak = guide(model_input, t).sample
                prediction = weak + guidance_scale * (prediction - weak)
            x = scheduler.step(prediction, t, x, **step_kwargs).prev_sample
            if bar is not None:
                bar.update()
        images.append(x.float().clamp(-1, 1).cpu())
    if bar is not None:
        bar.close()
    return torch.cat(images)
