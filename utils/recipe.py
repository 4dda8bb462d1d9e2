"""The layout of ``recipe.json``: one schema for everything that writes a run's recipe and everything that reads it.

Writers: unit1/train_unconditional.py, notebook 01's own training loop and benchmarks/naive_baseline.py.
Reader: the leaderboard (tools/leaderboard.py). The script also records every command-line flag; the fields below
are the ones every writer fills in (``None`` where a field does not apply, e.g. no command in a notebook).
This module imports nothing heavy, so the leaderboard can use it without loading torch.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
from pathlib import Path

# The Hub tag that marks a model as an entry of this course's leaderboard (the English course's
# "diffusion-models-class" tag also matches that course's own learners, so it cannot identify entries alone).
COURSE_TAG = "diffusion-course-ja"
MAX_RECIPE_BYTES = 1_000_000  # a recipe.json from the Hub larger than this is not read

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


# The type of each field: "int", "number" (int or float), "text", "mapping" (an object or null) or "object";
# None is allowed everywhere but in "metrics". Recipes from the Hub are untrusted, so the leaderboard checks these before reading them.
FIELD_TYPES = {
    **dict.fromkeys(("command", "dataset", "dataset_fallback", "model_size", "prediction_type", "device",
                     "mixed_precision", "sampler"), "text"),
    **dict.fromkeys(("num_train_images", "resolution", "num_parameters", "train_batch_size", "effective_batch_size",
                     "optimizer_steps", "images_seen", "seed", "num_processes", "num_inference_steps", "guide_step",
                     "network_evaluations"), "int"),
    **dict.fromkeys(("learning_rate", "train_minutes", "final_loss", "guidance_scale"), "number"),
    "versions": "mapping",
    "metrics": "object",
}
MAX_TEXT = 20_000  # characters of one text field (a command line with every flag is about 1 000)


class RecipeError(ValueError):
    """A recipe that does not follow the schema; the message says which fields and where."""


def recipe_problems(recipe: dict) -> list[str]:
    """What is wrong with ``recipe`` (an empty list when it follows the schema)."""
    if not isinstance(recipe, dict):
        return [f"a recipe is a JSON object, not a {type(recipe).__name__}"]
    problems = [f"missing field {name!r} ({meaning})" for name, meaning in RECIPE_FIELDS.items() if name not in recipe]
    for name, kind in FIELD_TYPES.items():
        if name in recipe and not _has_type(recipe[name], kind):
            problems.append(f"{name!r} must be {_KIND_WORDS[kind]}, not {_describe(recipe[name])}")
    if isinstance(recipe.get("metrics"), dict):
        problems += [f"metrics[{key!r}] must be a finite number, not {_describe(value)}"
                     for key, value in recipe["metrics"].items() if not _has_type(value, "number") or value is None]
    return problems


_KIND_WORDS = {"text": "a string or null", "int": "an integer or null", "number": "a finite number or null",
               "mapping": "a JSON object or null", "object": "a JSON object"}


def _has_type(value, kind: str) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if value is None:
        return True
    if kind == "mapping":
        return isinstance(value, dict)
    if kind == "text":
        return isinstance(value, str) and len(value) <= MAX_TEXT
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) if kind == "int" else math.isfinite(value)


def _describe(value) -> str:
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return f"a string of {len(value):,} characters (at most {MAX_TEXT:,})"
    text = json.dumps(value, default=str)
    return f"{type(value).__name__} {text[:40] + '…' if len(text) > 40 else text}"


def write_recipe(folder: str | Path, recipe: dict) -> Path:
    """Check ``recipe`` against the schema and write it as ``folder/recipe.json``; returns the file."""
    problems = recipe_problems(recipe)
    if problems:
        raise RecipeError(f"recipe for {folder} does not follow utils/recipe.py: " + "; ".join(problems))
    path = Path(folder) / "recipe.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(recipe, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    return path


def command_line(*program: str, argv=None, environ=None) -> str:
    """The shell command that ran ``program`` ("unit1/train_unconditional.py", or "-m", "tools.leaderboard") with
    ``argv`` (default sys.argv[1:]), quoted: "python PROGRAM ARGS", or with the launcher when WORLD_SIZE says several
    processes ("accelerate launch --num_processes N" when Accelerate's variables are set, else "torchrun
    --nproc_per_node N"). The one way the course records the command that made a result."""
    env = os.environ if environ is None else environ
    words = shlex.join([*program, *(sys.argv[1:] if argv is None else argv)])
    world = int(env.get("WORLD_SIZE", "1"))
    if world > 1:
        launcher = ("accelerate launch --num_processes" if any(k.startswith("ACCELERATE_") for k in env)
                    else "torchrun --nproc_per_node")
        return f"{launcher} {world} {words}"
    return f"python {words}"
