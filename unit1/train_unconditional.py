#!/usr/bin/env python
"""Train an unconditional image diffusion model (DDPM) with 🤗 Accelerate.

The command-line names follow Diffusers' examples/unconditional_image_generation/train_unconditional.py.
Read from top to bottom: arguments, checks that fail fast, data, model, the training loop, and the
final save (pipeline, samples, recipe.json, model card). Examples (unit1/TRAINING.md has more):

    python unit1/train_unconditional.py --resolution 32 --model_size tiny --num_epochs 5   # CPU or one GPU
    accelerate launch --multi_gpu --num_processes 2 unit1/train_unconditional.py --mixed_precision fp16
    torchrun --nproc_per_node 2 unit1/train_unconditional.py --cpu ...   # several CPU processes (gloo)

Bad input (unknown dataset or column, empty folder, impossible resolution, missing checkpoint, pushing
without a login, ...) stops before training with a one-line message and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shlex
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

if __package__ in (None, ""):  # run as a script: make the course's utils importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils.data import BUTTERFLIES, DataError, find_images, is_fallback, load_image_dataset, preprocess_image
from utils.environment import cuda_usable, describe_device, is_online, library_versions
from utils.hub import is_logged_in, push_folder, write_model_card
from utils.sampling import SAMPLERS, generate, make_scheduler
from utils.training import (
    EMA,
    MODEL_SIZES,
    PREDICTION_TYPES,
    ConfigError,
    DiffusionLoss,
    ShardedBatches,
    build_unet,
    check_resolution,
    check_snr_gamma,
    count_parameters,
    finish_checkpoint,
    list_checkpoints,
    make_optimizer,
    memory_format_for,
    remove_unfinished,
    resolve_checkpoint,
    save_pipeline_atomically,
    seed_for,
    temporary_name,
    unet_config,
)
from utils.viz import make_grid


class UploadError(RuntimeError):
    """--push_to_hub could not upload the finished run (the run itself is saved)."""


LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
GRAYSCALE_MODES = {"1", "L", "LA", "I", "I;16", "F"}
GUIDE_FILE = "guide.safetensors"  # a checkpoint's copy of the autoguidance guide, once --guide_step has passed


# ---------------------------------------------------------------- arguments
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train an unconditional DDPM image model with 🤗 Accelerate.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
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
    data.add_argument("--center_crop", action="store_true", help="Crop to a centred square before resizing "
                      "(default: squash the whole image).")
    data.add_argument("--random_flip", action="store_true", help="Mirror training images horizontally at random.")
    data.add_argument("--dataloader_num_workers", type=int, default=0, help="Threads that decode and resize the "
                      "images once before training (batches then come straight from memory).")

    model = p.add_argument_group("model and noise schedule")
    model.add_argument("--model_size", default="small", choices=tuple(MODEL_SIZES), help="Named UNet2DModel size: "
                       "micro (~0.7 M parameters, 28 px digits on a CPU), micro-conv (micro with attention only in the middle "
                       "block, ~0.64 M, about 15 percent faster), tiny (~1.1 M, CPU), small (the course's "
                       "18.5 M model), base (the Diffusers example's model, resolution must be a multiple of 32).")
    model.add_argument("--model_config_name_or_path", help="A UNet2DModel config.json (or a folder with one) to use "
                       "instead of --model_size; sample_size and channels are set from the data.")
    model.add_argument("--prediction_type", default="epsilon", choices=PREDICTION_TYPES,
                       help="What the model learns to predict: the noise, the clean image, or v.")
    model.add_argument("--ddpm_num_steps", type=int, default=1000, help="Number of diffusion timesteps.")
    model.add_argument("--ddpm_beta_schedule", default="linear", choices=BETA_SCHEDULES, help="Noise schedule.")

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
    out.add_argument("--sampler", default="dpm++", choices=SAMPLERS, help="Sampler for previews and metrics.")
    out.add_argument("--num_inference_steps", "--ddpm_num_inference_steps", type=int, default=25,
                     help="Sampling steps for previews and metrics.")
    out.add_argument("--guide_step", type=int, help="Autoguidance: keep the weights (EMA when on) of this optimizer "
                     "step as a weak guide model, saved as guide_unet/ beside the pipeline. Costs no training time.")
    out.add_argument("--guidance_scale", type=float, default=1.0, help="Autoguidance strength for the final "
                     "samples and metrics: guide + scale * (model - guide); 1 = plain sampling. Needs --guide_step.")
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
    p.add_argument("--local_rank", type=int, default=-1, help="Set by old launchers; ignored.")
    return p.parse_args(argv)


def check_args(args) -> None:
    """Fail fast, before any data is loaded, on settings that cannot work."""
    positive = ("resolution", "train_batch_size", "eval_batch_size", "num_epochs", "gradient_accumulation_steps",
                "ddpm_num_steps", "num_inference_steps", "save_images_epochs", "save_model_epochs", "logging_steps")
    for name in positive:
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name} must be at least 1, got {getattr(args, name)}.")
    for name in ("max_train_steps", "checkpoints_total_limit", "max_train_samples"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ConfigError(f"--{name} must be at least 1, got {getattr(args, name)}.")
    check_snr_gamma(args.snr_gamma, args.prediction_type, args.snr_plus_one)
    if args.guide_step is not None and args.guide_step < 1:
        raise ConfigError(f"--guide_step must be at least 1, got {args.guide_step}.")
    if not args.guidance_scale > 0:
        raise ConfigError(f"--guidance_scale must be positive (1 = no guidance), got {args.guidance_scale}.")
    if args.guidance_scale != 1 and args.guide_step is None:
        raise ConfigError(f"--guidance_scale {args.guidance_scale:g} needs a guide: add --guide_step N, e.g. a "
                          "fifth of the training steps.")
    if args.eval_num_samples:
        try:
            from utils import metrics
        except ImportError as exc:
            raise ConfigError(f"--eval_num_samples needs utils/metrics.py, which cannot be imported ({exc}).") from exc
        minimum = getattr(metrics, "MIN_SAMPLES", 1)
        if args.eval_num_samples < minimum:
            raise ConfigError(f"--eval_num_samples must be 0 (no evaluation) or at least {minimum}, got "
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
    output_dir = Path(args.output_dir)
    if args.resume_from_checkpoint is not None:
        args.resume_path = resolve_checkpoint(args.resume_from_checkpoint, output_dir)
    else:
        args.resume_path = None
        if list_checkpoints(output_dir) and not args.overwrite_output_dir:
            raise ConfigError(f"{str(output_dir)!r} already has checkpoints from an earlier run. Continue it with "
                              "--resume_from_checkpoint latest, start over with --overwrite_output_dir (deletes "
                              "them), or choose another --output_dir.")
    if args.train_data_dir:
        find_images(args.train_data_dir)  # raises DataError for a missing or empty folder


# ---------------------------------------------------------------- data
def load_images(args, verbose: bool) -> tuple[torch.Tensor, dict]:
    """Decode and resize every training image once -> uint8 tensor (N, C, R, R) and a description."""
    if args.train_data_dir:
        paths, unreadable = find_images(args.train_data_dir)
        paths = paths[:args.max_train_samples]
        load, count = (lambda i: Image.open(paths[i])), len(paths)
        info = {"dataset": str(args.train_data_dir), "fallback": None}
    else:
        name = args.dataset_name or BUTTERFLIES
        dataset = load_image_dataset(name, "train", image_column=args.image_column, config_name=args.dataset_config_name,
                                     max_samples=args.max_train_samples, verbose=verbose)
        unreadable = []
        load, count = (lambda i: dataset[i]["image"]), len(dataset)
        info = {"dataset": name, "fallback": dataset.info.description if is_fallback(dataset) else None}

    def decode(index):
        try:
            image = load(index)
            image.load()
        except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt files
            return None, f"image {index}: {exc}"
        tensor = preprocess_image(image, args.resolution, args.channels or 3, args.center_crop)
        return tensor.add_(1).mul_(127.5).round_().to(torch.uint8), image.mode in GRAYSCALE_MODES

    with ThreadPoolExecutor(max(1, args.dataloader_num_workers)) as pool:
        results = list(pool.map(decode, range(count)))
    images = [tensor for tensor, _ in results if tensor is not None]
    skipped = len(unreadable) + len(results) - len(images)
    example = str(unreadable[0]) if unreadable else next((why for tensor, why in results if tensor is None), "")
    if not images:
        raise DataError(f"None of the {len(results) + len(unreadable)} images of {info['dataset']!r} could be read.")
    images = torch.stack(images)
    channels = args.channels or (1 if all(gray for tensor, gray in results if tensor is not None) else 3)
    images = images[:, :channels].contiguous()
    if verbose:
        print(f"{len(images)} training images, {channels} channel(s), {args.resolution} px"
              + (f"; skipped {skipped} unreadable image(s), e.g. {example}" if skipped else ""))
    return images, {**info, "num_train_images": len(images), "skipped_images": skipped, "channels": channels}


# ---------------------------------------------------------------- helpers of the loop
def launch_command(argv: list[str]) -> str:
    """The command line that started this run, with the launcher when there are several processes."""
    command = shlex.join([os.path.relpath(__file__), *argv])
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        launcher = ("accelerate launch --num_processes" if any(k.startswith("ACCELERATE_") for k in os.environ)
                    else "torchrun --nproc_per_node")
        return f"{launcher} {world} {command}"
    return f"python {command}"


def weights_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def save_preview(unet, noise_scheduler, args, path: Path, accelerator, step: int, guide=None) -> None:
    """Sample a grid with the run's sampler (autoguided when a guide is given); write it as PNG and to the tracker."""
    was_training = unet.training
    unet.eval()
    images = generate(unet, make_scheduler(args.sampler, noise_scheduler), args.eval_batch_size,
                      args.num_inference_steps, generator=torch.Generator().manual_seed(args.seed),
                      batch_size=args.eval_batch_size, guide=guide,
                      guidance_scale=args.guidance_scale if guide is not None else 1.0)
    unet.train(was_training)
    grid = make_grid(images)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({"samples": np.asarray(grid.convert("RGB"))[None]}, step, dataformats="NHWC")
        elif tracker.name == "wandb":
            tracker.log_images({"samples": [grid]}, step)


def final_unet(model: torch.nn.Module, ema: EMA | None):
    """A fresh float32 UNet with the weights to publish (EMA when on), free of training wrappers (autocast)."""
    from diffusers import UNet2DModel

    source = ema.model if ema is not None else model
    unet = UNet2DModel.from_config(source.config).to(next(source.parameters()).device)
    unet.load_state_dict(source.state_dict())
    return unet.eval()


def write_recipe(output_dir: Path, recipe: dict, repo_id: str) -> None:
    """recipe.json and the model card (README.md) that carries it and the metrics."""
    (output_dir / "recipe.json").write_text(json.dumps(recipe, indent=2, ensure_ascii=False, default=str))
    write_model_card(output_dir, recipe, recipe["metrics"], repo_id=repo_id, sample_image="samples/final.png")


def evaluate(pipeline, images: torch.Tensor, args, guide=None) -> dict[str, float]:
    """utils.metrics.evaluate_pipeline; RGB models are compared with (up to 5 000) training images."""
    from utils.metrics import evaluate_pipeline

    kwargs = dict(num_samples=args.eval_num_samples, batch_size=args.eval_batch_size, sampler=args.sampler,
                  num_inference_steps=args.num_inference_steps, seed=args.seed, guide=guide,
                  guidance_scale=args.guidance_scale)
    if images.shape[1] == 3:
        kwargs["reference"] = images[:5000].float() / 127.5 - 1
    return evaluate_pipeline(pipeline, **kwargs)


# ---------------------------------------------------------------- training
def train(args) -> dict:
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, gather_object, set_seed
    from diffusers import DDPMPipeline, DDPMScheduler
    from diffusers.optimization import get_scheduler
    from tqdm.auto import tqdm

    check_args(args)
    config = unet_config(args.model_size, args.model_config_name_or_path)
    check_resolution(args.resolution, config)
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        dynamo_backend="inductor" if args.torch_compile else "no",  # torch.compile inside prepare()
        cpu=args.cpu or not (cuda_usable() or torch.backends.mps.is_available()),
        log_with=None if args.logger == "none" else args.logger,
        project_config=ProjectConfiguration(project_dir=str(output_dir),
                                            logging_dir=str(output_dir / args.logging_dir)))
    main_process = accelerator.is_main_process
    rank, world = accelerator.process_index, accelerator.num_processes
    if main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        remove_unfinished(output_dir)
        if args.resume_path is None and args.overwrite_output_dir:
            for old in list_checkpoints(output_dir):
                shutil.rmtree(old)
    accelerator.wait_for_everyone()

    # Data: decoded once, then every process reads its own shard straight from memory.
    with accelerator.main_process_first():  # one process downloads, the others read its cache
        images, data_info = load_images(args, verbose=accelerator.is_local_main_process)
    batches = ShardedBatches(images, args.train_batch_size, seed=args.seed, rank=rank, world_size=world,
                             flip=args.random_flip)
    micro_per_epoch = len(batches)
    ga = args.gradient_accumulation_steps
    max_steps = args.max_train_steps or (args.num_epochs * micro_per_epoch) // ga
    if max_steps < 1:
        raise ConfigError(f"One epoch has {micro_per_epoch} batch(es) per process, fewer than "
                          f"--gradient_accumulation_steps {ga}: train longer or accumulate less.")
    if args.guide_step is not None and args.guide_step >= max_steps:
        raise ConfigError(f"--guide_step {args.guide_step} must come before the last of the {max_steps} optimizer "
                          "steps: the guide is an earlier, weaker state of the model.")

    # Model, noise schedule, EMA, optimizer and learning-rate schedule.
    set_seed(args.seed)
    unet = build_unet(config, args.resolution, data_info["channels"])
    memory_format = memory_format_for(accelerator.device, args.channels_last)
    unet = unet.to(accelerator.device, memory_format=memory_format)
    noise_scheduler = DDPMScheduler(num_train_timesteps=args.ddpm_num_steps, beta_schedule=args.ddpm_beta_schedule,
                                    prediction_type=args.prediction_type)
    loss_fn = DiffusionLoss(noise_scheduler, args.prediction_type, accelerator.device, memory_format,
                            args.snr_gamma, args.snr_plus_one)
    ema = EMA(unet, args.ema_max_decay, args.ema_inv_gamma, args.ema_power, args.ema_min_decay) if args.use_ema else None
    optimizer = make_optimizer(unet.parameters(), args.learning_rate, (args.adam_beta1, args.adam_beta2),
                               args.adam_weight_decay, args.adam_epsilon, accelerator.device)
    # Not passed to accelerator.prepare, which would step it once per process: it steps once per update.
    lr_scheduler = get_scheduler(args.lr_scheduler, optimizer=optimizer, num_warmup_steps=args.lr_warmup_steps,
                                 num_training_steps=max_steps)
    model, optimizer = accelerator.prepare(unet, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    unwrapped = getattr(unwrapped, "_orig_mod", unwrapped)  # the plain module under torch.compile

    state = {"step": 0, "images_seen": 0, "train_seconds": 0.0, "loss": None}
    guide = None  # the autoguidance guide: a frozen copy of the (EMA) weights at --guide_step
    if args.resume_path is not None:
        accelerator.load_state(str(args.resume_path))
        saved = json.loads((args.resume_path / "training_state.json").read_text())
        lr_scheduler.load_state_dict(saved.pop("lr_scheduler"))
        if ema is not None:
            ema.load(args.resume_path / "ema.safetensors")
        if (args.resume_path / GUIDE_FILE).exists():
            guide = final_unet(unwrapped, ema)
            guide.load_state_dict(load_file(str(args.resume_path / GUIDE_FILE), device=str(accelerator.device)))
        elif args.guide_step is not None and args.guide_step <= saved["step"]:
            raise ConfigError(f"{args.resume_path} comes after --guide_step {args.guide_step} but holds no guide: "
                              "resume from an earlier checkpoint or start a new run.")
        expected = {"world_size": world, "train_batch_size": args.train_batch_size,
                    "gradient_accumulation_steps": ga, "seed": args.seed}
        changed = [k for k, v in expected.items() if saved.get(k) != v]
        if changed and main_process:
            print(f"Warning: {', '.join(changed)} differ from the checkpoint; the run continues but will not "
                  "match an uninterrupted one.")
        state.update({k: saved[k] for k in state})
        if main_process:
            print(f"Resumed from {args.resume_path} at step {state['step']}.")
    elif args.resume_from_checkpoint == "latest" and main_process:
        print(f"No checkpoint in {str(output_dir)!r} yet: starting a new run.")

    def save_checkpoint(step: int) -> None:
        final = output_dir / f"checkpoint-{step}"
        tmp = temporary_name(final)
        accelerator.save_state(str(tmp))  # model, optimizer, grad scaler, RNG states (every process)
        if main_process:
            if ema is not None:
                ema.save(tmp / "ema.safetensors")
            if guide is not None:
                save_file(guide.state_dict(), str(tmp / GUIDE_FILE))
            record = {**state, "lr_scheduler": lr_scheduler.state_dict(), "world_size": world,
                      "train_batch_size": args.train_batch_size, "gradient_accumulation_steps": ga,
                      "seed": args.seed}
            (tmp / "training_state.json").write_text(json.dumps(record, indent=2))
        accelerator.wait_for_everyone()
        if main_process:
            finish_checkpoint(tmp, final, args.checkpoints_total_limit)
        accelerator.wait_for_everyone()

    recipe_args = {k: v for k, v in vars(args).items() if k not in ("hub_token", "resume_path", "local_rank", "argv")}
    if main_process:
        accelerator.init_trackers("train_unconditional", config={k: v if isinstance(v, (int, float, str, bool))
                                                                 else str(v) for k, v in recipe_args.items()})
        print(f"{count_parameters(unet) / 1e6:.2f} M parameters | {world} process(es) on {accelerator.device} | "
              f"{micro_per_epoch} batch(es) of {args.train_batch_size} per process and epoch | "
              f"{max_steps} optimizer steps")

    # The training loop. Position in the data, noise and flips are functions of (seed, micro-batch, rank),
    # so a resumed run continues exactly where the checkpoint was taken, without replaying batches.
    step, micro = state["step"], state["step"] * ga
    first_batch = batches.indices(micro // micro_per_epoch, micro % micro_per_epoch).tolist()
    data_generator = torch.Generator()
    noise_generator = torch.Generator(device=accelerator.device)
    loss_sum, loss_count = torch.zeros((), device=accelerator.device), 0
    epochs_done = micro // micro_per_epoch
    progress = tqdm(total=max_steps, initial=step, desc="training", disable=not accelerator.is_local_main_process)
    start = time.perf_counter() - state["train_seconds"]
    model.train()
    while step < max_steps:
        epoch, index = divmod(micro, micro_per_epoch)
        data_generator.manual_seed(seed_for(args.seed, micro, rank, 0))
        noise_generator.manual_seed(seed_for(args.seed, micro, rank, 1))
        clean = batches.batch(epoch, index, data_generator, accelerator.device, memory_format)
        update = (micro + 1) % ga == 0
        with contextlib.nullcontext() if update else accelerator.no_sync(model):
            loss = loss_fn(model, clean, noise_generator)
            accelerator.backward(loss / ga)
        loss_sum += loss.detach()
        loss_count += 1
        state["images_seen"] += len(clean) * world
        micro += 1
        if not update:
            continue

        if args.max_grad_norm > 0:
            accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        if not accelerator.optimizer_step_was_skipped:
            lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(unwrapped)
        step += 1
        state["step"] = step
        if step == args.guide_step:
            guide = final_unet(unwrapped, ema)
        progress.update()

        if step % args.logging_steps == 0 or step == max_steps:  # the only host sync of the loop
            state["loss"] = accelerator.reduce(loss_sum / loss_count, "mean").item()
            loss_sum.zero_()
            loss_count = 0
            logs = {"loss": state["loss"], "lr": lr_scheduler.get_last_lr()[0], "epoch": micro / micro_per_epoch}
            if ema is not None:
                logs["ema_decay"] = ema.decay()
            progress.set_postfix(loss=f"{state['loss']:.4f}", lr=f"{logs['lr']:.2e}")
            accelerator.log(logs, step=step)
        state["train_seconds"] = time.perf_counter() - start
        pause = time.perf_counter()  # checkpoints and previews do not count as training time
        if args.checkpointing_steps and step % args.checkpointing_steps == 0:
            save_checkpoint(step)
        if micro // micro_per_epoch > epochs_done and step < max_steps:
            epochs_done = micro // micro_per_epoch
            if main_process and epochs_done % args.save_images_epochs == 0:
                save_preview(ema.model if ema is not None else unwrapped, noise_scheduler,
                             args, output_dir / "samples" / f"epoch_{epochs_done:04d}.png", accelerator, step)
            if main_process and epochs_done % args.save_model_epochs == 0:
                save_pipeline_atomically(DDPMPipeline(unet=final_unet(unwrapped, ema),
                                                      scheduler=noise_scheduler), output_dir, guide)
            accelerator.wait_for_everyone()
        start += time.perf_counter() - pause
    progress.close()

    # Every process checks that the replicas ended identical and reports what it trained on.
    processes = gather_object([{"rank": rank, "first_batch": first_batch,
                                "weights_sha256": weights_digest(unwrapped)}])
    if len({p["weights_sha256"] for p in processes}) != 1:
        raise RuntimeError("The processes ended with different weights: distributed training is broken.")
    recipe = {}
    if main_process:
        pipeline = DDPMPipeline(unet=final_unet(unwrapped, ema), scheduler=noise_scheduler)
        save_pipeline_atomically(pipeline, output_dir, guide)
        save_preview(pipeline.unet, noise_scheduler, args, output_dir / "samples" / "final.png", accelerator, step,
                     guide)
        recipe = {
            "command": launch_command(args.argv), **recipe_args, "dataset": data_info["dataset"],
            "dataset_fallback": data_info["fallback"], "num_train_images": data_info["num_train_images"],
            "skipped_images": data_info["skipped_images"], "channels": data_info["channels"],
            "model_size": "custom" if args.model_config_name_or_path else args.model_size,
            "model_config": {k: v for k, v in pipeline.unet.config.items() if not k.startswith("_")},
            "num_parameters": count_parameters(pipeline.unet), "effective_batch_size": args.train_batch_size * ga * world,
            "device": describe_device(accelerator.device),
            "num_processes": world, "train_minutes": round(state["train_seconds"] / 60, 3),
            "images_seen": state["images_seen"], "optimizer_steps": step, "epochs": round(micro / micro_per_epoch, 3),
            "final_loss": state["loss"], "versions": library_versions(), "processes": processes, "metrics": {},
        }
        repo_id = args.hub_model_id or output_dir.resolve().name
        write_recipe(output_dir, recipe, repo_id)
        if args.eval_num_samples > 0:  # only once the model and its recipe are safe on disk
            recipe["metrics"] = evaluate(pipeline, images, args, guide)
            write_recipe(output_dir, recipe, repo_id)
        print(f"Saved the pipeline, samples/final.png and recipe.json in {output_dir} "
              f"({step} steps, {recipe['train_minutes']:.1f} min, final loss {state['loss']:.4f}).")
        if args.push_to_hub and push_folder(output_dir, repo_id, private=args.hub_private_repo,
                                            ignore_patterns=["checkpoint-*", ".*", f"{args.logging_dir}/*"]) is None:
            raise UploadError(f"--push_to_hub: the upload failed (see above). The trained pipeline is saved in "
                              f"{output_dir}; upload it later with: hf upload {repo_id} {output_dir}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # Left to the garbage collector, a gloo process group can hang at exit once the other process is gone.
        torch.distributed.destroy_process_group()
    return recipe


def main(argv=None) -> int:
    args = parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    try:
        train(args)
    except (DataError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except UploadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
