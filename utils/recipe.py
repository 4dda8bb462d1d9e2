"""The layout of ``recipe.json``: one schema for everything that writes a run's recipe and everything that reads it.

Writers: unit1/train_unconditional.py, notebook 01's own training loop and benchmarks/naive_baseline.py.
Reader: the leaderboard (tools/leaderboard.py). The script also records every command-line flag; the fields below
are the ones every writer fills in (``None`` where a field does not apply, e.g. no command in a notebook).
This module imports nothing heavy, so the leaderboard can use it without loading torch.
"""

from __future__ import annotations

import json
from pathlib import Path

RECIPE_FIELDS = {
    "command": "the command line that produced the run (None for a notebook cell)",
    "dataset": "Hub dataset name or image folder",
    "dataset_fallback": "description of the offline stand-in data when it was used, else None",
    "num_train_images": "images in the training set",
    "resolution": "side of the square training images, in pixels",
    "model_size": "named model size (e.g. micro-conv) or the model's class name",
    "num_parameters": "trainable parameters of the model",
    "prediction_type": "what the model predicts: epsilon, sample, v_prediction or a description",
    "train_batch_size": "images per batch and process",
    "effective_batch_size": "images per optimizer step over all processes and accumulation steps",
    "learning_rate": "peak learning rate",
    "optimizer_steps": "optimizer steps taken",
    "images_seen": "training images processed (with repeats)",
    "train_minutes": "training time, without checkpoints and previews",
    "final_loss": "mean training loss at the end",
    "seed": "random seed",
    "device": "device description, e.g. 'cpu (2 threads)'",
    "num_processes": "training processes",
    "mixed_precision": "no, fp16 or bf16",
    "sampler": "sampler of the samples and metrics (see utils.sampling.SAMPLERS), or a description",
    "num_inference_steps": "sampling steps",
    "guide_step": "autoguidance: the optimizer step whose weights are the guide, else None",
    "guidance_scale": "autoguidance strength (1 = none)",
    "network_evaluations": "forward passes per generated image of the samples and metrics (a guided step counts two)",
    "versions": "library versions",
    "metrics": "evaluation results ({} when not evaluated), e.g. fid, fid_floor, coverage, num_samples",
}


class RecipeError(ValueError):
    """A recipe that does not follow the schema; the message says which fields and where."""


def recipe_problems(recipe: dict) -> list[str]:
    """What is wrong with ``recipe`` (an empty list when it follows the schema)."""
    if not isinstance(recipe, dict):
        return [f"a recipe is a JSON object, not a {type(recipe).__name__}"]
    problems = [f"missing field {name!r} ({meaning})" for name, meaning in RECIPE_FIELDS.items() if name not in recipe]
    if "metrics" in recipe and not isinstance(recipe["metrics"], dict):
        problems.append("'metrics' must be an object such as {\"fid\": 12.3}")
    return problems


def write_recipe(folder: str | Path, recipe: dict) -> Path:
    """Check ``recipe`` against the schema and write it as ``folder/recipe.json``; returns the file."""
    problems = recipe_problems(recipe)
    if problems:
        raise RecipeError(f"recipe for {folder} does not follow utils/recipe.py: " + "; ".join(problems))
    path = Path(folder) / "recipe.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(recipe, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    return path
