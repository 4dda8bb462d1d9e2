"""Training throughput of unit1/train_unconditional.py's step against a plain loop, side by side.

Both variants train the course's 32 px UNet ("small", 18.5 M parameters; --model_size for another) on the same data -- a 🤗 datasets
Dataset of PNG-encoded images, as a Hub dataset stores them (the generated butterfly stand-in, so it runs
offline; --source_size sets how large the stored images are) -- with the same batch size, AdamW settings,
gradient clipping, cosine learning-rate schedule and EMA. They differ in how the step is written:

* plain: the loop of notebook 01 with the data pipeline and EMA of the Diffusers example script --
  images decoded, resized and flipped per batch (``set_transform``), a DataLoader, default AdamW,
  ``scheduler.add_noise``, diffusers' ``EMAModel`` and ``loss.item()`` every step;
* script: train_unconditional.py itself -- its ``set_up`` (images decoded and resized once, not timed;
  reported as setup_seconds) and its ``training_loop``, the function the script trains with: batches read
  from a uint8 tensor, Accelerate, fused AdamW, one foreach EMA update, the loss summed on the device (no
  host sync), channels-last on CUDA, torch.compile with --torch_compile, bf16 autocast with
  --mixed_precision bf16.

Every measurement runs in a fresh process (so peak memory belongs to one variant) and the variants
alternate, so a busy machine slows both alike. The report gives the median over the repeats of
images/s (wall clock) and of images per CPU-second (process CPU time), which is steadier on a shared
machine; with --threads 1 it is not inflated by threads waiting for one another.

    python benchmarks/train_throughput.py                       # 3 repeats x (1 warm-up + 3 timed steps)
    python benchmarks/train_throughput.py --repeats 5 --steps 5 --torch_compile
    python benchmarks/train_throughput.py --variants script script-bf16 --model_size micro-conv --resolution 28 \
        --channels 1 --batch_size 32               # bf16 autocast against float32, the script's step alone

The variant script-bf16 is the script with --mixed_precision bf16; the speed-up printed is that of the second
variant over the first.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("plain", "script", "script-bf16")


def make_dataset(num_images: int, source_size: int, channels: int = 3):
    """The butterfly stand-in as a datasets.Dataset whose images are stored PNG-encoded (grayscale for 1 channel)."""
    from datasets import Dataset, Features
    from datasets import Image as ImageFeature

    from utils.data import synthetic_butterflies

    images = synthetic_butterflies(num_images, size=source_size)
    if channels == 1:
        images = [image.convert("L") for image in images]
    return Dataset.from_dict({"image": images}, features=Features({"image": ImageFeature()}))


def plain_loop(dataset, args, device):
    """Notebook 01's loop with the Diffusers example's data pipeline, EMA and clipping: yields after every step."""
    import torch.nn.functional as F
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    from utils.data import preprocess_image
    from utils.training import build_unet, unet_config

    model = build_unet(unet_config(args.model_size), args.resolution, args.channels).to(device)
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
    lr_scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=500, num_training_steps=10_000)
    ema = EMAModel(model.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=0.75)

    def transform(examples):  # runs on every access: decode, resize, random flip
        flips = torch.rand(len(examples["image"])) < 0.5
        return {"input": [preprocess_image(image, args.resolution, flip=bool(flip))
                          for image, flip in zip(examples["image"], flips)]}

    dataset.set_transform(transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True)
    losses = []
    model.train()
    while True:
        for batch in loader:
            clean = batch["input"].to(device)
            noise = torch.randn(clean.shape, device=device)
            timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (clean.shape[0],), device=device)
            noisy = noise_scheduler.add_noise(clean, noise, timesteps)
            loss = F.mse_loss(model(noisy, timesteps).sample, noise)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()
            ema.step(model.parameters())
            losses.append(loss.item())
            yield


def script_loop(dataset, args, device):
    """train_unconditional.py's own set-up and training loop on the same images: yields after every step."""
    import tempfile

    from utils.course import load_training_script

    script = load_training_script()
    folder = Path(tempfile.mkdtemp(prefix="throughput-"))
    (folder / "images").mkdir()
    for i, image in enumerate(dataset["image"]):  # the same PNG images, as a folder of the learner's own
        image.save(folder / "images" / f"{i:05d}.png")
    precision = "bf16" if args.variant == "script-bf16" else args.mixed_precision
    argv = ["--train_data_dir", str(folder / "images"), "--resolution", str(args.resolution),
            "--model_size", args.model_size,
            "--train_batch_size", str(args.batch_size), "--random_flip", "--use_ema", "--learning_rate", "1e-4",
            "--lr_warmup_steps", "500", "--max_train_steps", "10000", "--checkpointing_steps", "0",
            "--save_images_epochs", "1000000", "--save_model_epochs", "1000000", "--logger", "none",
            "--mixed_precision", precision, "--output_dir", str(folder / "run")]
    argv += [] if args.channels_last is None else ["--channels_last" if args.channels_last else "--no-channels_last"]
    argv += ["--torch_compile"] if args.torch_compile else []
    argv += ["--cpu"] if device.type == "cpu" else []
    settings = script.parse_args(argv)
    start = time.perf_counter()
    run = script.set_up(settings, argv)
    args.setup_seconds = time.perf_counter() - start
    while True:
        script.training_loop(run, settings, num_steps=1)
        yield


def measure(args) -> dict:
    """Worker: run one variant for warm-up + timed steps; return images/s and peak memory."""
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    from utils.environment import cuda_usable, describe_device

    device = torch.device("cuda" if cuda_usable() else "cpu")  # a GPU that cannot start is no GPU, as in the script
    # Enough images for the timed steps without a partial batch (the plain loop drops the last one).
    dataset = make_dataset(args.batch_size * (args.warmup + args.steps), args.source_size, args.channels)
    args.setup_seconds = 0.0
    loop = (plain_loop if args.variant == "plain" else script_loop)(dataset, args, device)  # script, script-bf16
    for _ in range(args.warmup):
        next(loop)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(args.steps):
        next(loop)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"variant": args.variant, "images_per_second": args.steps * args.batch_size / seconds,
            "seconds_per_step": seconds / args.steps, "cpu_seconds_per_step": cpu_seconds / args.steps,
            "images_per_cpu_second": args.steps * args.batch_size / cpu_seconds, "peak_memory_mib": peak / 2**20,
            "setup_seconds": args.setup_seconds, "memory_kind": "CUDA max allocated" if device.type == "cuda" else "process peak RSS",
            "device": describe_device(device), "threads": torch.get_num_threads()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="Fresh-process runs per variant.")
    parser.add_argument("--steps", type=int, default=3, help="Timed training steps per run.")
    parser.add_argument("--warmup", type=int, default=1, help="Untimed steps before timing.")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--model_size", default="small", help="A size of utils.training.MODEL_SIZES.")
    parser.add_argument("--channels", type=int, default=3, choices=(1, 3), help="1: grayscale images, as MNIST.")
    parser.add_argument("--variants", nargs=2, default=["plain", "script"], choices=VARIANTS,
                        help="The two variants to compare, alternating (script-bf16: the script with bf16 autocast).")
    parser.add_argument("--source_size", type=int, default=64, help="Size of the stored images (the offline "
                        "stand-in is 64 px; photos on the Hub are usually much larger).")
    parser.add_argument("--channels_last", action=argparse.BooleanOptionalAction,
                        help="Script variant: channels-last layout (default: the script's, on for CUDA only).")
    parser.add_argument("--torch_compile", action="store_true", help="Script variant: torch.compile the model.")
    parser.add_argument("--mixed_precision", default="no", choices=("no", "fp16", "bf16"),
                        help="Script variant: the script's --mixed_precision (autocast).")
    parser.add_argument("--threads", type=int, help="torch threads per worker (default: PyTorch's choice).")
    parser.add_argument("--output", help="Also write the results as JSON to this file.")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # worker mode
    args = parser.parse_args(argv)
    if args.variant:
        print(json.dumps(measure(args)))
        return

    worker = [sys.executable, __file__, "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch_size",
              str(args.batch_size), "--resolution", str(args.resolution), "--source_size", str(args.source_size),
              "--model_size", args.model_size, "--channels", str(args.channels)]
    if args.channels_last is not None:
        worker += ["--channels_last" if args.channels_last else "--no-channels_last"]
    worker += ["--torch_compile"] if args.torch_compile else []
    worker += ["--mixed_precision", args.mixed_precision]
    worker += ["--threads", str(args.threads)] if args.threads else []
    if args.variants[0] == args.variants[1]:
        parser.error("--variants needs two different variants")
    runs = {variant: [] for variant in args.variants}
    for repeat in range(args.repeats):
        for variant in runs:
            output = subprocess.run([*worker, "--variant", variant], check=True, capture_output=True, text=True,
                                    env={**os.environ, "HF_HUB_OFFLINE": "1"}).stdout
            result = json.loads(output.strip().splitlines()[-1])
            runs[variant].append(result)
            print(f"repeat {repeat + 1}/{args.repeats} {variant:>6}: {result['images_per_second']:6.2f} images/s, "
                  f"{result['seconds_per_step']:6.2f} s/step, {result['images_per_cpu_second']:6.2f} images/CPU-s, "
                  f"peak {result['peak_memory_mib']:7.0f} MiB", flush=True)

    summary = {variant: {f"median_{key}": statistics.median(r[key] for r in results)
                         for key in ("images_per_second", "images_per_cpu_second", "peak_memory_mib")}
               for variant, results in runs.items()}
    base, other = args.variants
    speedup = summary[other]["median_images_per_second"] / summary[base]["median_images_per_second"]
    cpu_speedup = summary[other]["median_images_per_cpu_second"] / summary[base]["median_images_per_cpu_second"]
    setup = statistics.median(r["setup_seconds"] for r in runs[other])
    first = runs[base][0]
    print(f"\n{first['device']}, model {args.model_size}, {args.channels} channel(s), batch {args.batch_size}, "
          f"{args.resolution} px "
          f"from {args.source_size} px PNGs, "
          f"{args.repeats} repeats x {args.steps} timed steps, peak memory = {first['memory_kind']}")
    print("| variant | median images/s | median images per CPU-second | median peak memory (MiB) |\n|---|---:|---:|---:|")
    for variant, values in summary.items():
        print(f"| {variant} | {values['median_images_per_second']:.2f} | {values['median_images_per_cpu_second']:.2f} | "
              f"{values['median_peak_memory_mib']:.0f} |")
    print(f"speed-up of {other} over {base}: {speedup:.2f}x in images/s, {cpu_speedup:.2f}x in images per CPU-second "
          f"({other}'s set-up, which decodes the images once for the script, took {setup:.2f} s beforehand)")
    if args.output:
        Path(args.output).write_text(json.dumps({"settings": {k: v for k, v in vars(args).items() if k != "variant"},
                                                 "runs": runs, "summary": summary, "speedup": speedup,
                                                 "cpu_speedup": cpu_speedup}, indent=2))


if __name__ == "__main__":
    main()
