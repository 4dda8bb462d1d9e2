"""Pieces of the training script that the throughput benchmark shares: model sizes, the loss, EMA, checkpoints."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

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
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


class ConfigError(ValueError):
    """A setting that cannot work; the message says how to fix it."""


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
        raise ConfigError(f"Cannot read a UNet2DModel config from {config_path!r} ({exc}). Pass a config.json "
                          "file or a folder that contains one.") from exc


def build_unet(config: dict, resolution: int, channels: int):
    """A freshly initialised UNet2DModel for square images of ``resolution`` px with ``channels`` channels."""
    from diffusers import UNet2DModel

    config = {k: v for k, v in config.items() if not k.startswith("_")}
    config.update(sample_size=resolution, in_channels=channels, out_channels=channels)
    check_resolution(resolution, config)
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


# ---------------------------------------------------------------- training step
class DiffusionLoss:
    """The DDPM training objective with the noise schedule kept on the device (no per-step copies)."""

    def __init__(self, noise_scheduler, prediction_type: str = "epsilon", device=None,
                 memory_format: torch.memory_format = torch.contiguous_format, snr_gamma: float | None = None,
                 snr_plus_one: bool = False):
        if prediction_type not in PREDICTION_TYPES:
            raise ConfigError(f"Unknown prediction type {prediction_type!r}: choose one of "
                              f"{', '.join(PREDICTION_TYPES)}.")
        check_snr_gamma(snr_gamma, prediction_type, snr_plus_one)
        alphas_cumprod = noise_scheduler.alphas_cumprod.to(device=device, dtype=torch.float32)
        self.sqrt_alpha = alphas_cumprod.sqrt()
        self.sqrt_one_minus_alpha = (1 - alphas_cumprod).sqrt()
        self.num_timesteps = len(alphas_cumprod)
        self.prediction_type = prediction_type
        self.memory_format = memory_format
        self.weights = (None if snr_gamma is None else
                        min_snr_weights(alphas_cumprod, prediction_type, snr_gamma, snr_plus_one))

    def __call__(self, model, clean: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Noise ``clean`` at random timesteps, predict, and return the mean squared error."""
        timesteps = torch.randint(0, self.num_timesteps, (clean.shape[0],), device=clean.device, generator=generator)
        noise = torch.randn(clean.shape, device=clean.device, generator=generator)
        a = self.sqrt_alpha[timesteps].view(-1, 1, 1, 1)
        s = self.sqrt_one_minus_alpha[timesteps].view(-1, 1, 1, 1)
        noisy = (a * clean + s * noise).contiguous(memory_format=self.memory_format)
        target = {"epsilon": noise, "sample": clean, "v_prediction": a * noise - s * clean}[self.prediction_type]
        prediction = model(noisy, timesteps).sample
        if self.weights is None:
            return F.mse_loss(prediction.float(), target.float())
        per_sample = (prediction.float() - target.float()).pow(2).flatten(1).mean(1)
        return (self.weights[timesteps] * per_sample).mean()


def check_snr_gamma(snr_gamma: float | None, prediction_type: str = "epsilon", snr_plus_one: bool = False) -> None:
    """Raise ConfigError unless ``snr_gamma`` is unset (no weighting) or positive, and ``snr_plus_one`` fits."""
    if snr_gamma is not None and not snr_gamma > 0:
        raise ConfigError(f"--snr_gamma must be positive (5 is the usual value), got {snr_gamma}; leave it out "
                          "for the plain unweighted loss.")
    if snr_plus_one and snr_gamma is None:
        raise ConfigError("--snr_plus_one changes the Min-SNR-γ weighting: add --snr_gamma (e.g. 5) as well.")
    if snr_plus_one and prediction_type != "v_prediction":
        raise ConfigError(f"--snr_plus_one is for --prediction_type v_prediction only (got {prediction_type}): "
                          "with other targets its weight would be unbounded at the noisiest timesteps.")


def min_snr_weights(alphas_cumprod: torch.Tensor, prediction_type: str, gamma: float,
                    plus_one: bool = False) -> torch.Tensor:
    """Per-timestep loss weights of Min-SNR-γ (Hang et al., 2023), one per entry of ``alphas_cumprod``.

    Each timestep's error is weighted as if the loss were on the clean image with weight min(SNR, γ), where
    SNR = ᾱ / (1 - ᾱ): for ε-prediction that is min(SNR, γ) / SNR, for v-prediction min(SNR, γ) / (SNR + 1).
    Nearly clean timesteps then stop dominating the gradient, which speeds up training.

    For v-prediction that formula also turns the noisiest timesteps down towards 0, where plain v-prediction
    weighs them fully. ``plus_one`` (v-prediction only) uses min(SNR + 1, γ) / (SNR + 1) instead, the form of
    diffusers PR #5238: the plain v-loss, clipped only where the image is nearly clean, as Min-SNR-γ does for ε.
    """
    check_snr_gamma(gamma, prediction_type, plus_one)
    alphas_cumprod = alphas_cumprod.double()
    snr = alphas_cumprod / (1 - alphas_cumprod)
    if plus_one:
        return ((snr + 1).clamp(max=gamma) / (snr + 1)).float()
    clipped = snr.clamp(max=gamma)
    weights = {"epsilon": (gamma / snr).clamp(max=1), "sample": clipped,  # min(SNR, γ) / SNR, also at SNR 0
               "v_prediction": clipped / (snr + 1)}[prediction_type]
    return weights.float()


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

    def __init__(self, images: torch.Tensor, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 flip: bool = False):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"expected a uint8 (N, C, H, W) tensor, got {images.dtype} {tuple(images.shape)}.")
        self.per_rank = len(images) // world_size
        if self.per_rank == 0:
            raise ConfigError(f"{len(images)} images cannot be shared among {world_size} processes: use more "
                              "images or fewer processes.")
        self.images, self.batch_size, self.seed, self.flip = images, batch_size, seed, flip
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

    def batch(self, epoch: int, index: int, generator: torch.Generator | None = None, device=None,
              memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
        """Batch ``index`` of ``epoch`` as floats in [-1, 1] on ``device``, mirrored at random if flip is on."""
        batch = self.images[self.indices(epoch, index)]
        if self.flip:
            mask = torch.rand(len(batch), generator=generator) < 0.5
            batch = torch.where(mask.view(-1, 1, 1, 1), batch.flip(-1), batch)
        batch = batch.to(device, non_blocking=True).float().div_(127.5).sub_(1)
        return batch.contiguous(memory_format=memory_format)


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


# ---------------------------------------------------------------- checkpoints
def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Finished checkpoints ``output_dir/checkpoint-<step>``, oldest first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := CHECKPOINT_PATTERN.match(p.name))]
    return [path for _, path in sorted(found)]


def resolve_checkpoint(spec: str, output_dir: str | Path) -> Path | None:
    """The checkpoint folder named by --resume_from_checkpoint: 'latest' (None if there is none yet) or a path."""
    if spec == "latest":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    for candidate in (Path(spec), Path(output_dir) / spec):
        if candidate.is_dir() and (candidate / "training_state.json").is_file():
            return candidate
    available = ", ".join(p.name for p in list_checkpoints(output_dir)) or "none"
    raise ConfigError(f"Checkpoint {spec!r} does not exist (or is not a finished checkpoint). Checkpoints in "
                      f"{str(output_dir)!r}: {available}. Pass one of them, 'latest', or leave the flag out.")


def temporary_name(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp")


def _remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


def remove_unfinished(output_dir: str | Path) -> list[Path]:
    """Clean up after a run killed while saving: delete half-written folders, restore moved-aside ones."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    stale = sorted(folder.glob(".checkpoint-*.tmp")) + sorted(folder.glob(".pipeline.tmp"))
    for path in stale:
        _remove(path)
    for old in sorted(folder.glob(".*.old")):
        final = folder / old.name[1:-len(".old")]
        if final.exists():
            _remove(old)
            stale.append(old)
        else:  # killed between moving the old copy aside and moving the new one in
            os.replace(old, final)
    return stale


def _replace_folder(new: Path, final: Path) -> None:
    """Move ``new`` to ``final``; an existing ``final`` is moved aside first and deleted last."""
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        _remove(old)
    if final.exists():
        os.replace(final, old)
    os.replace(new, final)
    if old.exists():
        _remove(old)


def finish_checkpoint(tmp: Path, final: Path, total_limit: int | None) -> list[Path]:
    """Publish a fully written checkpoint by renaming it, then keep only the newest ``total_limit``.

    The rename is atomic, so 'latest' never sees a half-written checkpoint. Old checkpoints are
    removed only after the new one exists, so a kill in between never leaves fewer than the limit.
    Returns the removed folders.
    """
    for path in tmp.rglob("*"):  # flush to disk before the rename makes the checkpoint visible
        if path.is_file():
            with open(path, "rb+") as file:
                os.fsync(file.fileno())
    _replace_folder(tmp, final)
    removed = []
    if total_limit is not None:
        existing = list_checkpoints(final.parent)
        removed = existing[:max(0, len(existing) - total_limit)]
        for path in removed:
            shutil.rmtree(path)
    return removed


def save_pipeline_atomically(pipeline, output_dir: str | Path, guide=None) -> Path:
    """save_pretrained (safetensors) into a temporary folder, then move each part into ``output_dir``.

    An interrupted save leaves the previous unet/ and scheduler/ folders whole. An autoguidance ``guide``
    (a UNet) is saved as guide_unet/; without one, a guide_unet/ left by an earlier run is removed, so the
    folder never pairs a model with a guide that is not its own.
    """
    from .sampling import GUIDE_FOLDER

    output_dir = Path(output_dir)
    tmp = output_dir / ".pipeline.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    pipeline.save_pretrained(tmp, safe_serialization=True)
    if guide is not None:
        guide.save_pretrained(tmp / GUIDE_FOLDER, safe_serialization=True)
    elif (output_dir / GUIDE_FOLDER).exists():
        shutil.rmtree(output_dir / GUIDE_FOLDER)
    for part in sorted(tmp.iterdir(), key=lambda p: p.name == "model_index.json"):  # the index goes last
        _replace_folder(part, output_dir / part.name)
    tmp.rmdir()
    return output_dir
