#!/usr/bin/env python
"""Train an unconditional image diffusion model (DDPM) with 🤗 Accelerate.

The command-line names follow Diffusers' examples/unconditional_image_generation/train_unconditional.py.
Read from the top: the training step (how a batch of clean images becomes a loss, as in notebooks 01 and 02),
``train()`` and its phases (set-up, resume, the loop, finish), then the bookkeeping, the arguments and their
checks. Examples (unit1/TRAINING.md has more):

    python unit1/train_unconditional.py --resolution 32 --model_size tiny --num_epochs 5   # CPU or one GPU
    accelerate launch --multi_gpu --num_processes 2 unit1/train_unconditional.py --mixed_precision fp16
    torchrun --nproc_per_node 2 unit1/train_unconditional.py --cpu ...   # several CPU processes (gloo)

Bad input (unknown dataset or column, empty folder, impossible resolution, missing checkpoint, pushing
without a login, ...) stops before training with a one-line message and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

if __package__ in (None, ""):  # run as a script: make the course's utils importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils import checkpoints, metrics, training
from utils.data import DataError, load_training_images
from utils.environment import cuda_usable, describe_device, is_online, library_versions
from utils.hub import is_logged_in, push_folder, write_model_card
from utils.recipe import command_line, write_recipe
from utils.sampling import FAST_SAMPLER, SAMPLERS, generate, make_scheduler, network_evaluations
from utils.training import EMA, ConfigError, ShardedBatches, TrainingClock, seed_for, settings_used_by
from utils.viz import make_grid


class UploadError(RuntimeError):
    """--push_to_hub could not upload the finished run (the run itself is saved)."""


LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")


# ---------------------------------------------------------------- the training step
def to_model_input(pixels: torch.Tensor, random_flip: bool, generator: torch.Generator, device,
                   memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """A batch of uint8 pixels (B, C, H, W) -> clean images in [-1, 1] on ``device``, as notebook 01 scales them
    (pixel / 127.5 - 1); with ``random_flip`` each image is mirrored left-right with probability 1/2."""
    if random_flip:
        mirror = torch.rand(len(pixels), generator=generator) < 0.5
        pixels = torch.where(mirror.view(-1, 1, 1, 1), pixels.flip(-1), pixels)
    clean_images = pixels.to(device, non_blocking=True).float() / 127.5 - 1
    return clean_images.contiguous(memory_format=memory_format)


def diffusion_loss(model, noise_scheduler, clean_images: torch.Tensor, generator: torch.Generator,
                   snr_weights: torch.Tensor | None = None,
                   memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """The DDPM training objective, written as notebooks 01 and 02 teach it.

    Each image gets a random timestep t and Gaussian noise ε; ``add_noise`` makes x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε.
    The model sees (x_t, t) and is trained to predict, by mean squared error, the target of
    ``noise_scheduler.config.prediction_type``: ε ("epsilon"), x_0 ("sample") or v = √ᾱ_t ε - √(1-ᾱ_t) x_0
    ("v_prediction", ``get_velocity``). With ``snr_weights`` (one weight per timestep, see min_snr_weights) each
    image's error is weighted by the weight of its timestep.
    """
    num_timesteps = noise_scheduler.config.num_train_timesteps
    device = clean_images.device
    timesteps = torch.randint(0, num_timesteps, (clean_images.shape[0],), device=device, generator=generator)
    noise = torch.randn(clean_images.shape, device=device, generator=generator)
    noisy_images = noise_scheduler.add_noise(clean_images, noise, timesteps)
    prediction_type = noise_scheduler.config.prediction_type
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(clean_images, noise, timesteps)
    else:  # "sample": the clean image itself
        target = clean_images
    prediction = model(noisy_images.contiguous(memory_format=memory_format), timesteps).sample
    if snr_weights is None:
        return F.mse_loss(prediction.float(), target.float())
    per_image = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    return (snr_weights[timesteps] * per_image).mean()


def min_snr_weights(alphas_cumprod: torch.Tensor, prediction_type: str, gamma: float,
                    plus_one: bool = False) -> torch.Tensor:
    """Per-timestep loss weights of Min-SNR-γ (Hang et al., 2023), one per entry of ``alphas_cumprod``.

    Each timestep's error is weighted as if the loss were on the clean image with weight min(SNR, γ), where
    SNR = ᾱ / (1 - ᾱ): for ε-prediction that is min(SNR, γ) / SNR, for v-prediction min(SNR, γ) / (SNR + 1).
    Nearly clean timesteps then stop dominating the gradient, which speeds up training.

    For v-prediction that formula also turns the noisiest timesteps down towards 0, where plain v-prediction
    weighs them fully. ``plus_one`` (v-prediction only) uses min(SNR + 1, γ) / (SNR + 1) instead, the form of
    diffusers PR #5238: the plain v-loss, clipped only where the image is nearly clean, as Min-SNR-γ does for ε.
    check_snr_gamma says which combinations are valid.
    """
    alphas_cumprod = alphas_cumprod.double()
    snr = alphas_cumprod / (1 - alphas_cumprod)
    if plus_one:
        return ((snr + 1).clamp(max=gamma) / (snr + 1)).float()
    clipped = snr.clamp(max=gamma)
    weights = {"epsilon": (gamma / snr).clamp(max=1), "sample": clipped,  # min(SNR, γ) / SNR, also at SNR 0
               "v_prediction": clipped / (snr + 1)}[prediction_type]
    return weights.float()


# ---------------------------------------------------------------- training
@dataclass
class Run:
    """What a training run holds besides its settings: built by set_up, advanced by the loop, saved in checkpoints."""

    accelerator: object
    model: torch.nn.Module  # as prepared by Accelerate (wrapped for several processes, compiled, autocast)
    unwrapped: torch.nn.Module  # the plain UNet2DModel under those wrappers
    optimizer: torch.optim.Optimizer
    lr_scheduler: object
    noise_scheduler: object
    ema: EMA | None
    batches: ShardedBatches
    images: torch.Tensor  # every training image, uint8 (N, C, H, W)
    data_info: dict
    snr_weights: torch.Tensor | None
    memory_format: torch.memory_format
    max_steps: int
    output_dir: Path
    resume_path: Path | None
    command: str
    step: int = 0  # optimizer steps taken
    micro: int = 0  # micro-batches taken (step * gradient_accumulation_steps)
    images_seen: int = 0
    train_seconds: float = 0.0
    loss: float | None = None
    guide: torch.nn.Module | None = None  # autoguidance: a frozen copy of the weights at --guide_step
    first_batch: list[int] | None = None  # image indices of this process's first batch (the replica report)
    epochs_done: int = 0


def train(args, argv=()) -> dict:
    """Train as ``args`` say; returns the recipe (on the main process; {} on the others)."""
    run = set_up(args, argv)
    resume(run, args)
    training_loop(run, args)
    return finish(run, args)


def training_loop(run: Run, args, num_steps: int | None = None) -> None:
    """Train up to --max_train_steps (or ``num_steps`` more optimizer steps: the throughput benchmark times that).

    The position in the data, the noise and the flips are functions of (seed, micro-batch, rank), so a resumed
    run continues exactly where its checkpoint was taken, without replaying batches.
    """
    from tqdm.auto import tqdm

    accelerator, model, optimizer, lr_scheduler, ema = run.accelerator, run.model, run.optimizer, run.lr_scheduler, run.ema
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    accumulation = args.gradient_accumulation_steps
    stop = run.max_steps if num_steps is None else min(run.max_steps, run.step + num_steps)
    if run.first_batch is None:
        run.first_batch = run.batches.indices(*divmod(run.micro, len(run.batches))).tolist()
    run.epochs_done = run.micro // len(run.batches)
    data_generator, noise_generator = torch.Generator(), torch.Generator(device=device)
    loss_sum, loss_count = torch.zeros((), device=device), 0
    clock = TrainingClock(run.train_seconds)
    progress = tqdm(total=run.max_steps, initial=run.step, desc="training", disable=not accelerator.is_local_main_process)
    model.train()
    while run.step < stop:
        epoch, index = divmod(run.micro, len(run.batches))
        data_generator.manual_seed(seed_for(args.seed, run.micro, rank, 0))
        noise_generator.manual_seed(seed_for(args.seed, run.micro, rank, 1))
        clean_images = to_model_input(run.batches.batch(epoch, index), args.random_flip, data_generator, device,
                                      run.memory_format)
        update = (run.micro + 1) % accumulation == 0  # the last micro-batch of this optimizer step
        with contextlib.nullcontext() if update else accelerator.no_sync(model):  # gradients are averaged then
            loss = diffusion_loss(model, run.noise_scheduler, clean_images, noise_generator, run.snr_weights,
                                  run.memory_format)
            accelerator.backward(loss / accumulation)
        loss_sum += loss.detach()  # added up on the device: no waiting for the GPU at every step
        loss_count += 1
        run.images_seen += len(clean_images) * world
        run.micro += 1
        if not update:
            continue

        if args.max_grad_norm > 0:
            accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        if not accelerator.optimizer_step_was_skipped:  # fp16 skips a step whose gradients overflowed
            lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(run.unwrapped)
        run.step += 1
        if run.step == args.guide_step:  # autoguidance: this earlier, weaker model becomes the guide
            run.guide = checkpoints.make_guide(run.ema.model if run.ema is not None else run.unwrapped)
        progress.update()
        if run.step % args.logging_steps == 0 or run.step == run.max_steps:
            log_loss(run, loss_sum / loss_count, progress)
            loss_sum.zero_()
            loss_count = 0
        run.train_seconds = clock.seconds()
        with clock.paused():  # checkpoints and previews do not count as training time
            save_along_the_way(run, args)
    progress.close()


def set_up(args, argv=()) -> Run:
    """Check the settings, then build the accelerator, the data, the model, the optimizer and the schedules."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from diffusers.optimization import get_scheduler

    check_args(args)
    config = training.unet_config(args.model_size, args.model_config_name_or_path)
    training.check_resolution(args.resolution, config)
    noise_scheduler = make_noise_scheduler(args)
    output_dir = Path(args.output_dir)
    resume_path = checkpoints.checkpoint_to_resume(output_dir, args.resume_from_checkpoint, args.overwrite_output_dir)
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        dynamo_backend="inductor" if args.torch_compile else "no",  # torch.compile inside prepare()
        cpu=args.cpu or not (cuda_usable() or torch.backends.mps.is_available()),
        log_with=None if args.logger == "none" else args.logger,
        project_config=ProjectConfiguration(project_dir=str(output_dir),
                                            logging_dir=str(output_dir / args.logging_dir)))
    if accelerator.is_main_process:
        checkpoints.prepare_output_dir(output_dir, resume_path, args.overwrite_output_dir)
    accelerator.wait_for_everyone()

    # Data: decoded once, then every process reads its own shard straight from memory.
    with accelerator.main_process_first():  # one process downloads, the others read its cache
        images, data_info = load_training_images(
            resolution=args.resolution, dataset_name=args.dataset_name, train_data_dir=args.train_data_dir,
            config_name=args.dataset_config_name, image_column=args.image_column, max_samples=args.max_train_samples,
            channels=args.channels, crop_to_square=args.crop_to_square, storage=args.data_storage,
            decode_threads=args.decode_threads, cache_folder=output_dir / ".image-cache",
            verbose=accelerator.is_local_main_process)
    batches = ShardedBatches(images, args.train_batch_size, seed=args.seed, rank=accelerator.process_index,
                             world_size=accelerator.num_processes)
    accumulation = args.gradient_accumulation_steps
    max_steps = args.max_train_steps or (args.num_epochs * len(batches)) // accumulation
    if max_steps < 1:
        raise ConfigError(f"One epoch has {len(batches)} batch(es) per process, fewer than "
                          f"--gradient_accumulation_steps {accumulation}: train longer or accumulate less.")
    if args.guide_step is not None and args.guide_step >= max_steps:  # up front only with --max_train_steps
        raise ConfigError(training.guide_step_too_late(args.guide_step, max_steps))

    # Model, noise schedule, loss weights, EMA, optimizer and learning-rate schedule.
    set_seed(args.seed)
    unet = training.build_unet(config, args.resolution, data_info["channels"])
    memory_format = training.memory_format_for(accelerator.device, args.channels_last)
    unet = unet.to(accelerator.device, memory_format=memory_format)
    snr_weights = None if args.snr_gamma is None else min_snr_weights(
        noise_scheduler.alphas_cumprod, args.prediction_type, args.snr_gamma, args.snr_plus_one).to(accelerator.device)
    ema = EMA(unet, args.ema_max_decay, args.ema_inv_gamma, args.ema_power, args.ema_min_decay) if args.use_ema else None
    with settings_used_by("torch.optim.AdamW", args, "learning_rate", "adam_beta1", "adam_beta2", "adam_epsilon",
                          "adam_weight_decay"):
        optimizer = training.make_optimizer(unet.parameters(), args.learning_rate, (args.adam_beta1, args.adam_beta2),
                                            args.adam_weight_decay, args.adam_epsilon, accelerator.device)
    # Not passed to accelerator.prepare, which would step it once per process: it steps once per update.
    with settings_used_by("diffusers' learning-rate schedule", args, "lr_scheduler", "learning_rate",
                          "lr_warmup_steps"):
        lr_scheduler = get_scheduler(args.lr_scheduler, optimizer=optimizer, num_warmup_steps=args.lr_warmup_steps,
                                     num_training_steps=max_steps)
    model, optimizer = accelerator.prepare(unet, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    unwrapped = getattr(unwrapped, "_orig_mod", unwrapped)  # the plain module under torch.compile

    if accelerator.is_main_process:
        settings = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in recorded_args(args).items()}
        accelerator.init_trackers("train_unconditional", config=settings)
        print(f"{training.count_parameters(unet) / 1e6:.2f} M parameters | {accelerator.num_processes} process(es) on "
              f"{accelerator.device} | {len(batches)} batch(es) of {args.train_batch_size} per process and epoch | "
              f"{max_steps} optimizer steps")
    return Run(accelerator=accelerator, model=model, unwrapped=unwrapped, optimizer=optimizer,
               lr_scheduler=lr_scheduler, noise_scheduler=noise_scheduler, ema=ema, batches=batches, images=images,
               data_info=data_info, snr_weights=snr_weights, memory_format=memory_format, max_steps=max_steps,
               output_dir=output_dir, resume_path=resume_path,
               command=command_line(os.path.relpath(__file__), argv=argv))


def make_noise_scheduler(args):
    """The training noise schedule; the sampler of the previews and metrics is tried on it now, not after training."""
    from diffusers import DDPMScheduler

    with settings_used_by("diffusers' DDPMScheduler", args, "ddpm_num_steps", "ddpm_beta_schedule", "prediction_type"):
        noise_scheduler = DDPMScheduler(num_train_timesteps=args.ddpm_num_steps, beta_schedule=args.ddpm_beta_schedule,
                                        prediction_type=args.prediction_type)
    with settings_used_by(f"The sampler {args.sampler}", args, "sampler", "num_inference_steps", "ddpm_num_steps"):
        make_scheduler(args.sampler, noise_scheduler).set_timesteps(args.num_inference_steps)
    return noise_scheduler


def resume(run: Run, args) -> None:
    """Continue from --resume_from_checkpoint: weights, optimizer, RNG states, EMA, guide and the data position."""
    main_process = run.accelerator.is_main_process
    if run.resume_path is None:
        if args.resume_from_checkpoint == "latest" and main_process:
            print(f"No checkpoint in {str(run.output_dir)!r} yet: starting a new run.")
        return
    path = run.resume_path
    run.accelerator.load_state(str(path))
    saved = checkpoints.read_training_state(path)
    run.lr_scheduler.load_state_dict(saved["lr_scheduler"])
    if run.ema is not None:
        run.ema.load(path / "ema.safetensors")
    if (path / checkpoints.GUIDE_FILE).exists():
        run.guide = checkpoints.make_guide(run.unwrapped, path / checkpoints.GUIDE_FILE)
    elif args.guide_step is not None and args.guide_step <= saved["step"]:
        raise ConfigError(f"{path} comes after --guide_step {args.guide_step} but holds no guide: resume from an "
                          "earlier checkpoint or start a new run.")
    changed = [k for k, v in checkpoint_settings(run, args).items() if saved.get(k) != v]
    if changed and main_process:
        print(f"Warning: {', '.join(changed)} differ from the checkpoint; the run continues but will not match an "
              "uninterrupted one.")
    run.step, run.images_seen, run.train_seconds, run.loss = (saved["step"], saved["images_seen"],
                                                              saved["train_seconds"], saved["loss"])
    run.micro = run.step * args.gradient_accumulation_steps
    if main_process:
        print(f"Resumed from {path} at step {run.step}.")


def finish(run: Run, args) -> dict:
    """Check the replicas, then save the pipeline, the final samples, recipe.json and the card; evaluate; upload."""
    accelerator, output_dir = run.accelerator, run.output_dir
    processes = training.check_replicas(accelerator, run.unwrapped, run.first_batch)
    recipe, upload_failed = {}, False
    if accelerator.is_main_process:
        pipeline = published_pipeline(run)
        checkpoints.save_pipeline_atomically(pipeline, output_dir, run.guide)
        save_preview(pipeline.unet, run, args, output_dir / "samples" / "final.png", run.guide)
        recipe = build_recipe(run, args, pipeline.unet, processes)
        repo_id = args.hub_model_id or output_dir.resolve().name
        write_recipe_and_card(output_dir, recipe, repo_id)
        if args.eval_num_samples > 0:  # only once the model and its recipe are safe on disk
            recipe["metrics"] = evaluate(pipeline, run.images, args, run.guide)
            write_recipe_and_card(output_dir, recipe, repo_id)
        print(f"Saved the pipeline, samples/final.png and recipe.json in {output_dir} "
              f"({run.step} steps, {recipe['train_minutes']:.1f} min, final loss {run.loss:.4f}).")
        if args.push_to_hub:
            upload_failed = push_folder(output_dir, repo_id, private=args.hub_private_repo,
                                        ignore_patterns=["checkpoint-*", ".*", f"{args.logging_dir}/*"]) is None
    accelerator.wait_for_everyone()
    accelerator.end_training()
    training.end_process_group()
    if upload_failed:
        raise UploadError(f"--push_to_hub: the upload failed (see above). The trained pipeline is saved in "
                          f"{output_dir}; upload it later with: hf upload {args.hub_model_id or output_dir.resolve().name} "
                          f"{output_dir}")
    return recipe


# ---------------------------------------------------------------- bookkeeping of the loop
def published_unet(run: Run):
    """A fresh float32 copy of the weights to publish: the EMA weights when --use_ema is on."""
    return training.copy_unet(run.ema.model if run.ema is not None else run.unwrapped)


def published_pipeline(run: Run):
    from diffusers import DDPMPipeline

    return DDPMPipeline(unet=published_unet(run), scheduler=run.noise_scheduler)


def log_loss(run: Run, mean_loss: torch.Tensor, progress) -> None:
    """Average the loss over the processes (the loop's only host sync) and log it with the learning rate."""
    run.loss = run.accelerator.reduce(mean_loss, "mean").item()
    logs = {"loss": run.loss, "lr": run.lr_scheduler.get_last_lr()[0], "epoch": run.micro / len(run.batches)}
    if run.ema is not None:
        logs["ema_decay"] = run.ema.decay()
    progress.set_postfix(loss=f"{run.loss:.4f}", lr=f"{logs['lr']:.2e}")
    run.accelerator.log(logs, step=run.step)


def save_along_the_way(run: Run, args) -> None:
    """A checkpoint every --checkpointing_steps; a preview grid and the pipeline every few finished epochs."""
    if args.checkpointing_steps and run.step % args.checkpointing_steps == 0:
        save_checkpoint_of(run, args)
    epochs_done = run.micro // len(run.batches)
    if epochs_done > run.epochs_done and run.step < run.max_steps:
        run.epochs_done = epochs_done
        main_process = run.accelerator.is_main_process
        if main_process and epochs_done % args.save_images_epochs == 0:
            save_preview(run.ema.model if run.ema is not None else run.unwrapped, run, args,
                         run.output_dir / "samples" / f"epoch_{epochs_done:04d}.png")
        if main_process and epochs_done % args.save_model_epochs == 0:
            checkpoints.save_pipeline_atomically(published_pipeline(run), run.output_dir, run.guide)
        run.accelerator.wait_for_everyone()


def checkpoint_settings(run: Run, args) -> dict:
    """The settings a checkpoint must share with the run that resumes it, for the batches to line up."""
    return {"world_size": run.accelerator.num_processes, "train_batch_size": args.train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps, "seed": args.seed}


def save_checkpoint_of(run: Run, args) -> None:
    record = {"step": run.step, "images_seen": run.images_seen, "train_seconds": run.train_seconds, "loss": run.loss,
              "lr_scheduler": run.lr_scheduler.state_dict(), **checkpoint_settings(run, args)}

    def write_extras(folder: Path) -> None:
        if run.ema is not None:
            run.ema.save(folder / "ema.safetensors")
        if run.guide is not None:
            save_file(run.guide.state_dict(), str(folder / checkpoints.GUIDE_FILE))

    checkpoints.save_checkpoint(run.accelerator, run.output_dir, run.step, record, write_extras,
                                args.checkpoints_total_limit)


def save_preview(unet, run: Run, args, path: Path, guide=None) -> None:
    """Sample a grid with the run's sampler (autoguided when a guide is given); write it as PNG and to the tracker."""
    was_training = unet.training
    unet.eval()
    images = generate(unet, make_scheduler(args.sampler, run.noise_scheduler), args.eval_batch_size,
                      args.num_inference_steps, generator=torch.Generator().manual_seed(args.seed),
                      batch_size=args.eval_batch_size, guide=guide,
                      guidance_scale=args.guidance_scale if guide is not None else 1.0,
                      guide_interval=args.guide_interval)
    unet.train(was_training)
    grid = make_grid(images)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    training.log_images(run.accelerator, grid, run.step)


def recorded_args(args) -> dict:
    """The command-line settings as recipe.json and the tracker record them (never the refused --hub_token)."""
    return {k: v for k, v in vars(args).items() if k != "hub_token"}


def build_recipe(run: Run, args, unet, processes: list[dict]) -> dict:
    """recipe.json's content (the fields of utils/recipe.py plus every setting)."""
    info, world = run.data_info, run.accelerator.num_processes
    return {
        "command": run.command, **recorded_args(args), "dataset": info["dataset"], "dataset_fallback": info["fallback"],
        "num_train_images": info["num_train_images"], "skipped_images": info["skipped_images"],
        "image_storage": info["storage"],
        "channels": info["channels"], "model_size": "custom" if args.model_config_name_or_path else args.model_size,
        "model_config": {k: v for k, v in unet.config.items() if not k.startswith("_")},
        "num_parameters": training.count_parameters(unet),
        "effective_batch_size": args.train_batch_size * args.gradient_accumulation_steps * world,
        "device": describe_device(run.accelerator.device), "num_processes": world,
        "train_minutes": round(run.train_seconds / 60, 3), "images_seen": run.images_seen,
        "optimizer_steps": run.step, "epochs": round(run.micro / len(run.batches), 3), "final_loss": run.loss,
        "network_evaluations": sampling_cost(run, args), "versions": library_versions(), "processes": processes,
        "metrics": {},
    }


def sampling_cost(run: Run, args) -> int:
    """Network evaluations per image of the final samples and the metrics (a guided step counts two)."""
    guided = run.guide is not None and args.guidance_scale != 1
    return network_evaluations(make_scheduler(args.sampler, run.noise_scheduler), args.num_inference_steps, guided,
                               args.guide_interval)


def write_recipe_and_card(output_dir: Path, recipe: dict, repo_id: str) -> None:
    """recipe.json and the model card (README.md) that carries it and the metrics."""
    write_recipe(output_dir, recipe)
    write_model_card(output_dir, recipe, recipe["metrics"], repo_id=repo_id, sample_image="samples/final.png")


def evaluate(pipeline, images: torch.Tensor, args, guide=None) -> dict[str, float]:
    """utils.metrics.evaluate_pipeline; RGB models are compared with (up to 5 000) training images."""
    kwargs = dict(num_samples=args.eval_num_samples, batch_size=args.eval_batch_size, sampler=args.sampler,
                  num_inference_steps=args.num_inference_steps, seed=args.seed, guide=guide,
                  guidance_scale=args.guidance_scale, guide_interval=args.guide_interval)
    if images.shape[1] == 3:
        kwargs["reference"] = images[:5000].float() / 127.5 - 1
    return metrics.evaluate_pipeline(pipeline, **kwargs)


# ---------------------------------------------------------------- arguments
def parse_args(argv=None) -> argparse.Namespace:
    """The options, in four groups: data and model, training (add_training_options), output and the Hub."""
    p = argparse.ArgumentParser(description="Train an unconditional DDPM image model with 🤗 Accelerate.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_data_and_model_options(p)
    add_training_options(p)
    out = p.add_argument_group("output, samples and checkpoints")
    out.add_argument("--output_dir", default="ddpm-model-64", help="Where the pipeline, samples/, checkpoints, "
                     "logs and recipe.json go.")
    out.add_argument("--overwrite_output_dir", action="store_true",
                     help="Start over in an output_dir that has checkpoints (they are deleted).")
    out.add_argument("--save_images_epochs", type=int, default=10, help="Sample a preview grid every N epochs.")
    out.add_argument("--save_model_epochs", type=int, default=10, help="Save the pipeline every N epochs.")
    out.add_argument("--checkpointing_steps", type=int, default=500,
                     help="Save a resumable checkpoint every N optimizer steps (0: never).")
    out.add_argument("--checkpoints_total_limit", type=int, help="Keep only the newest N checkpoints.")
    out.add_argument("--resume_from_checkpoint", help="A checkpoint folder (or its name inside output_dir), or "
                     "'latest' (starts fresh when there is none yet).")
    out.add_argument("--eval_batch_size", type=int, default=16, help="Images per preview grid and per "
                     "sampling batch.")
    out.add_argument("--sampler", default=FAST_SAMPLER["sampler"], choices=SAMPLERS,
                     help="Sampler for previews and metrics (default: the course's fast setting, see "
                     "unit1/images/samplers.md).")
    out.add_argument("--num_inference_steps", type=int, default=FAST_SAMPLER["num_inference_steps"],
                     help="Sampling steps for previews and metrics.")
    out.add_argument("--guide_step", type=int, help="Autoguidance: keep the weights (EMA when on) of this optimizer "
                     "step as a weak guide model, saved as guide_unet/ beside the pipeline. Costs no training time.")
    out.add_argument("--guidance_scale", type=float, default=1.0, help="Autoguidance strength for the final "
                     "samples and metrics: guide + scale * (model - guide); 1 = plain sampling. Needs --guide_step.")
    out.add_argument("--guide_interval", type=float, nargs=2, metavar=("LO", "HI"),
                     default=FAST_SAMPLER["guide_interval"], help="Autoguidance only at the sampling timesteps "
                     "LO <= t <= HI (the others cost one network evaluation instead of two); "
                     "default: the fast setting's.")
    out.add_argument("--eval_num_samples", type=int, default=0, help="After training, generate N images and "
                     "compute the metrics of utils.metrics (0: skip).")
    out.add_argument("--logger", default="tensorboard", choices=("tensorboard", "wandb", "none"))
    out.add_argument("--logging_dir", default="logs", help="Log folder, relative to output_dir.")
    out.add_argument("--logging_steps", type=int, default=10, help="Log the mean loss every N optimizer steps.")

    hub = p.add_argument_group("🤗 Hub (log in first with `hf auth login`)")
    hub.add_argument("--push_to_hub", action="store_true", help="Upload the pipeline and model card at the end.")
    hub.add_argument("--hub_model_id", help="Repository name (default: the output_dir name).")
    hub.add_argument("--hub_private_repo", action="store_true", help="Create the repository as private.")
    hub.add_argument("--hub_token", help="Refused: a token on the command line ends up in shell histories and "
                     "logs. Run `hf auth login` instead.")
    return p.parse_args(argv)


def add_data_and_model_options(p: argparse.ArgumentParser) -> None:
    data = p.add_argument_group("data (default: the course's butterfly dataset, with an offline fallback)")
    data.add_argument("--dataset_name", help="Hub dataset name, e.g. 'mnist' or 'huggan/smithsonian_butterflies_subset' "
                      "(both also work offline through a labelled fallback).")
    data.add_argument("--dataset_config_name", help="Configuration of the Hub dataset, if it has several.")
    data.add_argument("--train_data_dir", help="A folder of your own images (any size or mode; unreadable files are "
                      "skipped and counted). Use instead of --dataset_name.")
    data.add_argument("--image_column", help="Column with the images (default: the first image column).")
    data.add_argument("--max_train_samples", type=int, help="Use only the first N images (quick experiments).")
    data.add_argument("--resolution", type=int, default=64, help="Images are resized to resolution x resolution.")
    data.add_argument("--channels", type=int, choices=(1, 3), help="1 for grayscale, 3 for RGB; default: 1 when "
                      "every image is grayscale, else 3.")
    data.add_argument("--crop_to_square", action="store_true", help="Crop a centred square before resizing "
                      "(default: squash the whole image to a square). Not the Diffusers example's --center_crop, "
                      "whose default is a random crop: here images are decoded once, before training.")
    data.add_argument("--random_flip", action="store_true", help="Mirror training images horizontally at random.")
    data.add_argument("--data_storage", default="auto", choices=("auto", "memory", "disk"), help="Where the decoded "
                      "images live: in memory, or in an on-disk cache under output_dir (memory-mapped, reused when "
                      "the run resumes). auto: on disk when they would take more than half of the free memory.")
    data.add_argument("--decode_threads", type=int, default=1, help="Threads that decode and resize the images "
                      "once before training (batches then come straight from memory, with no DataLoader workers).")

    model = p.add_argument_group("model and noise schedule")
    model.add_argument("--model_size", default="small", choices=tuple(training.MODEL_SIZES), help="Named UNet2DModel "
                       "size: "
                       "micro (~0.7 M parameters, 28 px digits on a CPU), micro-conv (micro with attention only in the middle "
                       "block, ~0.64 M, about 15 percent faster), tiny (~1.1 M, CPU), small (the course's "
                       "18.5 M model), base (the Diffusers example's model, resolution must be a multiple of 32).")
    model.add_argument("--model_config_name_or_path", help="A UNet2DModel config.json (or a folder with one) to use "
                       "instead of --model_size; sample_size and channels are set from the data.")
    model.add_argument("--prediction_type", default="epsilon", choices=training.PREDICTION_TYPES,
                       help="What the model learns to predict: the noise, the clean image, or v.")
    model.add_argument("--ddpm_num_steps", type=int, default=1000, help="Number of diffusion timesteps.")
    model.add_argument("--ddpm_beta_schedule", default="linear", choices=BETA_SCHEDULES, help="Noise schedule.")


def add_training_options(p: argparse.ArgumentParser) -> None:
    train = p.add_argument_group("training")
    train.add_argument("--train_batch_size", type=int, default=16, help="Batch size per process.")
    train.add_argument("--num_epochs", type=int, default=100)
    train.add_argument("--max_train_steps", type=int, help="Total optimizer steps; overrides --num_epochs.")
    train.add_argument("--gradient_accumulation_steps", type=int, default=1,
                       help="Micro-batches whose gradients are summed before each optimizer step.")
    train.add_argument("--learning_rate", type=float, default=1e-4, help="Peak learning rate (after warm-up).")
    train.add_argument("--lr_scheduler", default="cosine", choices=LR_SCHEDULERS)
    train.add_argument("--lr_warmup_steps", type=int, default=500, help="Optimizer steps of linear warm-up.")
    train.add_argument("--snr_gamma", type=float, help="Min-SNR-γ loss weighting (Hang et al., 2023); 5 is the "
                       "usual value. Unset: the plain mean squared error.")
    train.add_argument("--snr_plus_one", action="store_true", help="With --snr_gamma and v-prediction: weight "
                       "min(SNR+1, γ)/(SNR+1), which keeps the full v-loss at the noisiest timesteps (where the "
                       "model decides what to draw) instead of the paper's min(SNR, γ)/(SNR+1).")
    train.add_argument("--adam_beta1", type=float, default=0.95)
    train.add_argument("--adam_beta2", type=float, default=0.999)
    train.add_argument("--adam_weight_decay", type=float, default=1e-6)
    train.add_argument("--adam_epsilon", type=float, default=1e-8)
    train.add_argument("--max_grad_norm", type=float, default=1.0, help="Gradient clipping norm (0 turns it off).")
    train.add_argument("--use_ema", action="store_true", help="Keep an exponential moving average of the weights "
                       "and save it as the final model.")
    train.add_argument("--ema_inv_gamma", type=float, default=1.0, help="EMA warm-up: inverse gamma.")
    train.add_argument("--ema_power", type=float, default=0.75, help="EMA warm-up: power.")
    train.add_argument("--ema_max_decay", type=float, default=0.9999, help="Largest EMA decay.")
    train.add_argument("--ema_min_decay", type=float, default=0.0, help="Smallest EMA decay.")
    train.add_argument("--mixed_precision", default="no", choices=("no", "fp16", "bf16"),
                       help="fp16 needs a CUDA GPU; bf16 works on recent GPUs and CPUs.")
    train.add_argument("--seed", type=int, default=0, help="Seed for the model, data order and noise: the same "
                       "seed gives the same run, also when it is interrupted and resumed.")
    train.add_argument("--cpu", action="store_true", help="Train on the CPU even if a GPU is available.")
    train.add_argument("--channels_last", action=argparse.BooleanOptionalAction,
                       help="Channels-last memory layout for the convolutions (default: on for CUDA GPUs only).")
    train.add_argument("--torch_compile", action="store_true", help="Compile the model with torch.compile "
                       "(slow start, faster steps on long GPU runs).")


def check_args(args) -> None:
    """Fail fast, before any data is loaded, on settings that cannot work: each number in its range (the table
    utils.training.SETTING_BOUNDS) and the rules between the training options, then the rest."""
    args.guide_interval = None if args.guide_interval is None else tuple(args.guide_interval)
    training.check_settings(args)
    checkpoints.check_output_dir(args.output_dir)
    if args.eval_num_samples and args.eval_num_samples < metrics.MIN_SAMPLES:
        raise ConfigError(f"--eval_num_samples must be 0 (no evaluation) or at least {metrics.MIN_SAMPLES}, got "
                          f"{args.eval_num_samples}. Use about 1000 for numbers you compare.")
    if args.hub_token is not None:
        raise ConfigError("--hub_token is not accepted: a token on the command line is stored in your shell "
                          "history and in logs. Run `hf auth login` once, then use --push_to_hub.")
    if args.dataset_name and args.train_data_dir:
        raise ConfigError("Give either --dataset_name or --train_data_dir, not both.")
    if args.mixed_precision == "fp16" and (args.cpu or not cuda_usable()):
        raise ConfigError("--mixed_precision fp16 needs a CUDA GPU. On this machine use bf16 or no.")
    if args.logger == "wandb":
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise ConfigError("--logger wandb needs the wandb package: pip install wandb (or use tensorboard).") from None
    if args.push_to_hub:  # checked now, not after hours of training
        if not is_online():
            raise ConfigError("--push_to_hub: the Hugging Face Hub is not reachable (offline or HF_HUB_OFFLINE=1). "
                              "Train without --push_to_hub and upload the output_dir later.")
        if not is_logged_in():
            raise ConfigError("--push_to_hub: you are not logged in to Hugging Face. Run `hf auth login` (or "
                              "huggingface_hub.login() in a notebook) and start again.")


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        train(args, sys.argv[1:] if argv is None else list(argv))
    except (DataError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except UploadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    training.exit_process(main())
