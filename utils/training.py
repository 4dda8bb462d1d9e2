"""Building blocks of unit1/train_unconditional.py: model sizes, the optimizer, the data order, EMA and timing.

The training step itself (noise, target, loss) is written out in the script; checkpoints are in utils/checkpoints.py.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# Named UNet2DModel sizes. "small" is the course's 32 px butterfly model (notebook 01); "base" is the
# default model of the Diffusers example script.
_MICRO = dict(block_out_channels=(16, 32, 64), layers_per_block=1, norm_num_groups=8,
              down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
              up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"))
MODEL_SIZES = {
    "micro": _MICRO,
    # micro-conv: micro without the attention of the 7 px down and up blocks (the middle block keeps its own).
    "micro-conv": {**_MICRO, "down_block_types": ("DownBlock2D",) * 3, "up_block_types": ("UpBlock2D",) * 3},
    "tiny": dict(block_out_channels=(32, 64, 64), layers_per_block=1,
                 down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                 up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D")),
    "small": dict(block_out_channels=(64, 128, 128, 256), layers_per_block=2,
                  down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                  up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D")),
    "base": dict(block_out_channels=(128, 128, 256, 256, 512, 512), layers_per_block=2,
                 down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D",
                                   "DownBlock2D"),
                 up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D")),
}
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


class ConfigError(ValueError):
    """A setting that cannot work; the message says how to fix it."""


# ---------------------------------------------------------------- settings
@dataclass(frozen=True)
class Bounds:
    """The values a numeric setting may take: ``low`` <= value (< when ``low_open``), the same for ``high``;
    ``hint`` (how to choose it) ends the error message. Infinity and NaN are never allowed."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    hint: str = ""

    def contains(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def describe(self) -> str:
        """'at least 1', 'positive', 'between 0 and 1', 'at least 0 and below 1', ..."""
        low, high = _number(self.low), _number(self.high)
        if self.high is None:
            if self.low_open:
                return "positive" if self.low == 0 else f"above {low}"
            return f"at least {low}"
        if not (self.low_open or self.high_open):
            return f"between {low} and {high}"
        return f"{'above' if self.low_open else 'at least'} {low} and {'below' if self.high_open else 'at most'} {high}"


def _number(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


_COUNT, _SOME = Bounds(1), Bounds(0)
_POSITIVE, _FRACTION, _BETA = Bounds(0, low_open=True), Bounds(0, 1), Bounds(0, 1, high_open=True)
# Every numeric option of unit1/train_unconditional.py and its range (an option left unset, None, is not checked).
SETTING_BOUNDS = {
    **dict.fromkeys(("resolution", "train_batch_size", "eval_batch_size", "num_epochs", "max_train_steps",
                     "gradient_accumulation_steps", "ddpm_num_steps", "num_inference_steps", "save_images_epochs",
                     "save_model_epochs", "logging_steps", "decode_threads", "checkpoints_total_limit",
                     "max_train_samples", "guide_step"), _COUNT),
    "lr_warmup_steps": Bounds(0, hint="0: no warm-up"),
    "checkpointing_steps": Bounds(0, hint="0: no checkpoints"),
    "eval_num_samples": Bounds(0, hint="0: no evaluation"),
    "seed": Bounds(0, 2**32 - 1),
    "learning_rate": Bounds(0, low_open=True, hint="1e-4 is the usual value, 2e-3 for the course's micro models"),
    "adam_beta1": Bounds(0, 1, high_open=True, hint="usually 0.9 to 0.95"),
    "adam_beta2": Bounds(0, 1, high_open=True, hint="usually 0.99 to 0.999"),
    "adam_epsilon": Bounds(0, low_open=True, hint="1e-8 is the usual value"),
    "adam_weight_decay": Bounds(0, hint="0: no weight decay"),
    "max_grad_norm": Bounds(0, hint="0: no clipping"),
    "ema_max_decay": Bounds(0, 1, hint="0.9999 is the usual value"),
    "ema_min_decay": Bounds(0, 1, high_open=True, hint="0 is the usual value; at 1 the EMA never moves"),
    "ema_power": Bounds(0, low_open=True, hint="0.75 for long runs, 2/3 for short ones"),
    "ema_inv_gamma": Bounds(0, low_open=True, hint="1 is the usual value"),
    "snr_gamma": Bounds(0, low_open=True, hint="5 is the usual value; leave it out for the plain unweighted loss"),
    "guidance_scale": Bounds(0, low_open=True, hint="1: no guidance, 1.5 is a good start"),
    "guide_interval": Bounds(0, hint="timesteps, from 0 to --ddpm_num_steps"),
}


def check_settings(settings, bounds: dict[str, Bounds] | None = None) -> None:
    """Raise ConfigError naming the first option of ``settings`` (the script's argparse Namespace) outside its range
    in ``bounds`` (default SETTING_BOUNDS; a list value, ``--guide_interval LO HI``, item by item), then check the
    rules between the training options (check_setting_rules)."""
    for name, allowed in (SETTING_BOUNDS if bounds is None else bounds).items():
        value = getattr(settings, name, None)
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item is not None and not allowed.contains(item):
                hint = f" ({allowed.hint})" if allowed.hint else ""
                raise ConfigError(f"--{name} must be {allowed.describe()}, got {_number(item)}{hint}.")
    check_setting_rules(settings)


def check_setting_rules(args) -> None:
    """The rules between the training script's options, each with the fix in its message."""
    check_snr_gamma(args.snr_gamma, args.prediction_type, args.snr_plus_one)
    if args.ema_min_decay > args.ema_max_decay:
        raise ConfigError(f"--ema_min_decay {args.ema_min_decay:g} is above --ema_max_decay {args.ema_max_decay:g}: "
                          "the smallest EMA decay cannot exceed the largest.")
    if args.num_inference_steps > args.ddpm_num_steps:
        raise ConfigError(f"--num_inference_steps {args.num_inference_steps} is more than the model's "
                          f"--ddpm_num_steps {args.ddpm_num_steps} timesteps: sample in at most that many steps.")
    if args.guide_interval is not None and not args.guide_interval[0] <= args.guide_interval[1] <= args.ddpm_num_steps:
        raise ConfigError(f"--guide_interval LO HI needs 0 <= LO <= HI <= --ddpm_num_steps {args.ddpm_num_steps}, got "
                          f"{args.guide_interval[0]:g} {args.guide_interval[1]:g}.")
    if args.guidance_scale != 1 and args.guide_step is None:
        raise ConfigError(f"--guidance_scale {args.guidance_scale:g} needs a guide: add --guide_step N, e.g. a "
                          "fifth of the training steps.")
    if args.guide_step is not None and args.max_train_steps is not None and args.guide_step >= args.max_train_steps:
        raise ConfigError(guide_step_too_late(args.guide_step, args.max_train_steps))


def guide_step_too_late(guide_step: int, max_steps: int) -> str:
    """The message for a --guide_step at or after the last optimizer step (checked up front with --max_train_steps,
    else once the data has set the number of steps)."""
    return (f"--guide_step {guide_step} must come before the last of the {max_steps} optimizer steps: the guide "
            "is an earlier, weaker state of the model. Choose a smaller --guide_step, e.g. a fifth of the steps.")


def check_snr_gamma(snr_gamma: float | None, prediction_type: str = "epsilon", snr_plus_one: bool = False) -> None:
    """Raise ConfigError unless ``snr_plus_one`` fits ``snr_gamma`` (whose range check_settings checks) and the
    prediction type."""
    if snr_plus_one and snr_gamma is None:
        raise ConfigError("--snr_plus_one changes the Min-SNR-γ weighting: add --snr_gamma (e.g. 5) as well.")
    if snr_plus_one and prediction_type != "v_prediction":
        raise ConfigError(f"--snr_plus_one is for --prediction_type v_prediction only (got {prediction_type}): "
                          "with other targets its weight would be unbounded at the noisiest timesteps.")


@contextlib.contextmanager
def settings_used_by(library: str, settings, *names: str):
    """Turn a ValueError that ``library`` raises inside this block into a ConfigError naming the options ``names``
    of ``settings`` it was given, so that a setting it refuses stops the script with a message, not a traceback."""
    try:
        yield
    except ConfigError:
        raise
    except ValueError as exc:
        given = ", ".join(f"--{name} {getattr(settings, name)}" for name in names)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{library} refused these settings: {given} ({reason}). Change one of these "
                          "options.") from exc


# ---------------------------------------------------------------- model
def unet_config(model_size: str = "small", config_path: str | None = None) -> dict:
    """UNet2DModel keyword arguments for a named size, or loaded from a config.json file or model folder."""
    if config_path is None:
        if model_size not in MODEL_SIZES:
            raise ConfigError(f"Unknown model size {model_size!r}: choose one of {', '.join(MODEL_SIZES)}.")
        return dict(MODEL_SIZES[model_size])
    from diffusers import UNet2DModel

    path = Path(config_path)
    try:
        if path.is_file():
            return dict(json.loads(path.read_text()))
        return dict(UNet2DModel.load_config(config_path, subfolder="unet" if (path / "unet").is_dir() else None))
    except Exception as exc:  # noqa: BLE001 - any failure here means the path is not a usable config
        reason = "no such file or folder" if not path.exists() else (str(exc).strip().splitlines() or [""])[0]
        raise ConfigError(f"Cannot read a UNet2DModel config from {config_path!r} ({reason}). Pass a config.json "
                          "file or a folder that contains one.") from exc


def build_unet(config: dict, resolution: int, channels: int):
    """A freshly initialised UNet2DModel for square images of ``resolution`` px (see check_resolution) with ``channels``
    channels."""
    from diffusers import UNet2DModel

    config = {k: v for k, v in config.items() if not k.startswith("_")}
    config.update(sample_size=resolution, in_channels=channels, out_channels=channels)
    return UNet2DModel(**config)


def check_resolution(resolution: int, config: dict) -> None:
    """Raise ConfigError unless the UNet described by ``config`` can halve ``resolution`` often enough."""
    import inspect

    from diffusers import UNet2DModel

    default = inspect.signature(UNet2DModel.__init__).parameters["down_block_types"].default
    num_down_blocks = len(config.get("down_block_types", default))
    factor = 2 ** (num_down_blocks - 1)
    if resolution < factor or resolution % factor:
        ok = sorted({max(factor, resolution // factor * factor), (resolution // factor + 1) * factor})
        raise ConfigError(f"Resolution {resolution} does not work with this UNet: its {num_down_blocks} blocks "
                          f"halve the image {num_down_blocks - 1} times, so the resolution must be a multiple "
                          f"of {factor} (e.g. {' or '.join(map(str, ok))}).")


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- training helpers
def memory_format_for(device, channels_last: bool | None = None) -> torch.memory_format:
    """channels_last when asked, or by default on CUDA GPUs (it did not speed up training on a CPU here)."""
    if channels_last is None:
        channels_last = torch.device(device).type == "cuda"
    return torch.channels_last if channels_last else torch.contiguous_format


def make_optimizer(parameters, lr: float, betas=(0.95, 0.999), weight_decay: float = 1e-6, eps: float = 1e-8,
                   device=None) -> torch.optim.AdamW:
    """AdamW with the fused kernel where PyTorch has one for this device, else the foreach one."""
    device = torch.device("cpu" if device is None else device)
    fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(parameters, lr=lr, betas=betas, weight_decay=weight_decay, eps=eps,
                             fused=fused, foreach=None if fused else True)


def seed_for(*keys: int) -> int:
    """A well-mixed 63-bit seed from integers such as (seed, step, rank)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0] >> np.uint64(1))


class ShardedBatches:
    """Batches of one process's shard of a uint8 image tensor, decoded once and kept in memory.

    Every epoch is a fresh permutation that depends only on (seed, epoch); process ``rank`` of
    ``world_size`` takes its own equal, disjoint slice of it. Any batch can therefore be fetched
    directly, which is how a resumed run skips the batches it already consumed without loading them.
    """

    def __init__(self, images: torch.Tensor, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"expected a uint8 (N, C, H, W) tensor, got {images.dtype} {tuple(images.shape)}.")
        self.per_rank = len(images) // world_size
        if self.per_rank == 0:
            raise ConfigError(f"{len(images)} images cannot be shared among {world_size} processes: use more "
                              "images or fewer processes.")
        self.images, self.batch_size, self.seed = images, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self._epoch, self._batches = None, None

    def __len__(self) -> int:
        """Batches per epoch (the last one may be smaller)."""
        return -(-self.per_rank // self.batch_size)

    def shard(self, epoch: int) -> torch.Tensor:
        """The image indices this process sees in ``epoch``, in order."""
        order = torch.randperm(len(self.images), generator=torch.Generator().manual_seed(seed_for(self.seed, epoch)))
        return order[self.rank * self.per_rank:(self.rank + 1) * self.per_rank]

    def indices(self, epoch: int, index: int) -> torch.Tensor:
        if self._epoch != epoch:
            self._epoch, self._batches = epoch, self.shard(epoch).split(self.batch_size)
        return self._batches[index]

    def batch(self, epoch: int, index: int) -> torch.Tensor:
        """Batch ``index`` of ``epoch``: uint8 pixels (B, C, H, W) on the CPU."""
        return self.images[self.indices(epoch, index)]


# ---------------------------------------------------------------- EMA
class EMA:
    """Exponential moving average of a model's weights, updated with one fused foreach call per step.

    The decay warms up as in Diffusers' EMAModel: ``1 - (1 + k / inv_gamma) ** -power`` after k updates,
    clipped to [min_decay, max_decay]; the first update copies the weights.
    """

    def __init__(self, model: torch.nn.Module, max_decay: float = 0.9999, inv_gamma: float = 1.0,
                 power: float = 0.75, min_decay: float = 0.0):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.max_decay, self.inv_gamma, self.power, self.min_decay = max_decay, inv_gamma, power, min_decay
        self.num_updates = 0

    def decay(self) -> float:
        if self.num_updates == 0:
            return 0.0
        value = 1 - (1 + self.num_updates / self.inv_gamma) ** -self.power
        return max(self.min_decay, min(value, self.max_decay))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        weight = 1 - self.decay()
        torch._foreach_lerp_(list(self.model.parameters()), [p.detach() for p in model.parameters()], weight)
        self.num_updates += 1

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(path),
                  metadata={"num_updates": str(self.num_updates)})

    def load(self, path: str | Path) -> None:
        from safetensors import safe_open
        from safetensors.torch import load_file

        self.model.load_state_dict(load_file(str(path), device=str(next(self.model.parameters()).device)))
        with safe_open(str(path), framework="pt") as file:
            self.num_updates = int(file.metadata()["num_updates"])




# ---------------------------------------------------------------- model copies, timing, replica check
def copy_unet(source: torch.nn.Module, state_dict: dict | None = None):
    """A fresh float32 UNet2DModel with ``source``'s config and weights (or ``state_dict``), in eval mode.

    The copy is free of training wrappers (Accelerate's autocast, torch.compile): the one way the course rebuilds a
    UNet from weights (the published model, the autoguidance guide, a guide from a checkpoint).
    """
    from diffusers import UNet2DModel

    unet = UNet2DModel.from_config(source.config).to(next(source.parameters()).device)
    unet.load_state_dict(source.state_dict() if state_dict is None else state_dict)
    return unet.eval()


class TrainingClock:
    """Seconds spent training, without the pauses (checkpoints, previews) spent inside ``paused()``."""

    def __init__(self, seconds_before: float = 0.0):
        self._start = time.perf_counter() - seconds_before

    def seconds(self) -> float:
        return time.perf_counter() - self._start

    @contextlib.contextmanager
    def paused(self):
        pause = time.perf_counter()
        try:
            yield
        finally:
            self._start += time.perf_counter() - pause


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of a model's weights: equal digests mean bit-identical models (replicas, reruns)."""
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------- several processes
def check_replicas(accelerator, model: torch.nn.Module, first_batch: list[int] | None) -> list[dict]:
    """Every process reports its first batch and a digest of its weights (recipe.json's "processes"); the replicas
    must have ended identical."""
    from accelerate.utils import gather_object

    processes = gather_object([{"rank": accelerator.process_index, "first_batch": first_batch,
                                "weights_sha256": weights_digest(model)}])
    if len({p["weights_sha256"] for p in processes}) != 1:
        raise RuntimeError("The processes ended with different weights: distributed training is broken.")
    return processes


def end_process_group() -> None:
    """Destroy torch.distributed's process group: left to the garbage collector, a gloo group can hang at exit once
    the other process is gone."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def exit_process(code: int):
    """sys.exit(code); with several processes (torchrun, accelerate launch) flush and end at once instead: the run is
    saved and the group destroyed, but interpreter teardown can still hang in gloo once the other process is gone."""
    import os
    import sys

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def log_images(accelerator, image, step: int, name: str = "samples") -> None:
    """Send a PIL image (a grid of samples) to the run's trackers (TensorBoard, Weights & Biases)."""
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({name: np.asarray(image.convert("RGB"))[None]}, step, dataformats="NHWC")
        elif tracker.name == "wandb":
            tracker.log_images({name: [image]}, step)
