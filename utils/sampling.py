"""Samplers for a trained UNet: build a scheduler by name, and a sampling loop that is right for all of them."""

from __future__ import annotations

import torch

SAMPLERS = ("ddpm", "ddim", "dpm++", "euler")
GUIDE_FOLDER = "guide_unet"  # where a pipeline folder keeps its autoguidance guide (see generate)


def make_scheduler(name: str, train_config):
    """A sampling scheduler called ``name`` (one of SAMPLERS) built from the training scheduler or its config.

    The noise schedule and prediction type come from ``train_config`` (a DDPMScheduler or its ``.config``).
    Timesteps are spaced "trailing", so that the first sampling step starts from pure noise (t = T - 1)
    even with few steps.
    """
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

    classes = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpm++": DPMSolverMultistepScheduler,
               "euler": EulerDiscreteScheduler}
    key = str(name).lower()
    if key not in classes:
        raise ValueError(f"Unknown sampler {name!r}: choose one of {', '.join(SAMPLERS)}.")
    config = getattr(train_config, "config", train_config)
    extra = {"algorithm_type": "dpmsolver++", "solver_order": 2} if key == "dpm++" else {}
    return classes[key].from_config(config, timestep_spacing="trailing", **extra)


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
             guidance_scale: float = 1.0) -> torch.Tensor:
    """Sample ``num_images`` images with ``scheduler`` in ``num_inference_steps`` steps.

    Returns a float32 CPU tensor (N, C, H, W) clamped to [-1, 1]. The starting noise is scaled by
    ``scheduler.init_noise_sigma`` and every model input goes through ``scheduler.scale_model_input``,
    which sigma-based samplers such as Euler need (DDPMPipeline skips both). Noise is drawn from
    ``generator`` on the CPU, so a seeded generator gives the same images on any device.

    Autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself"): with a
    ``guide`` -- a weaker model of the same kind, e.g. an early checkpoint of the same run -- each step uses
    ``guide_prediction + guidance_scale * (prediction - guide_prediction)``, which pushes the samples away
    from the guide's typical mistakes. ``guidance_scale=1`` is plain sampling; each step then costs one
    forward pass, with a guide two.
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
    images = []
    for n in chunks:
        scheduler.set_timesteps(num_inference_steps, device=device)  # also resets multistep solver state
        x = torch.randn((n, *_sample_shape(unet)), generator=generator, dtype=torch.float32)
        x = (x * scheduler.init_noise_sigma).to(device=device, dtype=dtype)
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(x, t)
            prediction = unet(model_input, t).sample
            if guide is not None:
                weak = guide(model_input, t).sample
                prediction = weak + guidance_scale * (prediction - weak)
            x = scheduler.step(prediction, t, x, generator=generator).prev_sample
            if bar is not None:
                bar.update()
        images.append(x.float().clamp(-1, 1).cpu())
    if bar is not None:
        bar.close()
    return torch.cat(images)
