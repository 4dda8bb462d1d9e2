"""Checkpoints and saved pipelines that survive a kill at any moment: write to a hidden folder, then rename.

``save_checkpoint`` stores everything a resumed run needs (Accelerate's state of every process, plus the main
process's extra files and ``training_state.json``); ``resolve_checkpoint`` finds one for --resume_from_checkpoint;
``save_pipeline_atomically`` publishes the trained pipeline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from .sampling import GUIDE_FOLDER
from .training import ConfigError, copy_unet

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "training_state.json"
GUIDE_FILE = "guide.safetensors"  # a checkpoint's copy of the autoguidance guide, once --guide_step has passed


def check_output_dir(output_dir: str | Path) -> None:
    """Raise ConfigError when --output_dir, or a folder above it, is an existing file (it could not be created)."""
    path = Path(output_dir).expanduser()
    for candidate in (path, *path.parents):
        if candidate.exists() and not candidate.is_dir():
            where = "is a file" if candidate == path else f"is inside {str(candidate)!r}, which is a file"
            raise ConfigError(f"--output_dir {str(output_dir)!r} {where}, not a folder: choose another --output_dir "
                              "(a new folder is created for it).")


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
        if candidate.is_dir() and (candidate / STATE_FILE).is_file():
            return candidate
    available = ", ".join(p.name for p in list_checkpoints(output_dir)) or "none"
    raise ConfigError(f"Checkpoint {spec!r} does not exist (or is not a finished checkpoint). Checkpoints in "
                      f"{str(output_dir)!r}: {available}. Pass one of them, 'latest', or leave the flag out.")


def checkpoint_to_resume(output_dir: str | Path, resume_from: str | None, overwrite: bool = False) -> Path | None:
    """The checkpoint --resume_from_checkpoint names (None for a new run); refuses to mix two runs in one folder."""
    if resume_from is not None:
        return resolve_checkpoint(resume_from, output_dir)
    if list_checkpoints(output_dir) and not overwrite:
        raise ConfigError(f"{str(output_dir)!r} already has checkpoints from an earlier run. Continue it with "
                          "--resume_from_checkpoint latest, start over with --overwrite_output_dir (deletes "
                          "them), or choose another --output_dir.")
    return None


def make_guide(unet, weights: str | Path | None = None):
    """An autoguidance guide, the one way the course makes one: a float32 copy of ``unet`` in eval mode, with its
    own weights now (the training loop at --guide_step) or those of ``weights``, a .safetensors file (a checkpoint's
    GUIDE_FILE, or checkpoint_weights of an earlier checkpoint: benchmarks/autoguidance.py)."""
    from safetensors.torch import load_file

    device = str(next(unet.parameters()).device)
    return copy_unet(unet, None if weights is None else load_file(str(weights), device=device))


def guide_code(repo_id: str) -> str:
    """The guide of a published pipeline as usage code for model cards (utils.sampling.load_guide, from the Hub)."""
    return f'UNet2DModel.from_pretrained({repo_id!r}, subfolder="{GUIDE_FOLDER}")'


def checkpoint_weights(checkpoint: str | Path) -> Path:
    """The weights a checkpoint publishes: its EMA (ema.safetensors) when the run kept one, else model.safetensors."""
    for name in ("ema.safetensors", "model.safetensors"):
        if (Path(checkpoint) / name).is_file():
            return Path(checkpoint) / name
    raise ConfigError(f"{checkpoint} holds neither ema.safetensors nor model.safetensors.")


def prepare_output_dir(output_dir: str | Path, resume_path: Path | None, overwrite: bool = False) -> None:
    """Create ``output_dir``, clean up after a run killed while saving, and delete the old checkpoints of a run that
    starts over (--overwrite_output_dir without --resume_from_checkpoint). Main process only."""
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    remove_unfinished(output_dir)
    if resume_path is None and overwrite:
        for old in list_checkpoints(output_dir):
            shutil.rmtree(old)


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


def save_checkpoint(accelerator, output_dir: str | Path, step: int, record: dict,
                    write_extras: Callable[[Path], None] | None = None, total_limit: int | None = None) -> Path:
    """Save ``checkpoint-<step>`` in ``output_dir``; every process calls this at the same step.

    Accelerate's ``save_state`` writes the model, optimizer, gradient scaler and RNG states of every process; the
    main process then adds its extra files (``write_extras(folder)``) and ``record`` as training_state.json. The
    folder is published by a rename once complete, and only the newest ``total_limit`` checkpoints are kept.
    """
    final = Path(output_dir) / f"checkpoint-{step}"
    tmp = temporary_name(final)
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        if write_extras is not None:
            write_extras(tmp)
        (tmp / STATE_FILE).write_text(json.dumps(record, indent=2))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        finish_checkpoint(tmp, final, total_limit)
    accelerator.wait_for_everyone()
    return final


def read_training_state(checkpoint: str | Path) -> dict:
    """The training_state.json that save_checkpoint wrote."""
    return json.loads((Path(checkpoint) / STATE_FILE).read_text())
