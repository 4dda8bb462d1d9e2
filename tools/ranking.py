"""Rank training recipes by evidence: one row per recipe, seed means, an uncertainty on every figure, ties as ties.

An *entry* is one recipe.json: one evaluation of one trained model. Entries are grouped twice:

* entries with the same recorded weights digest (``processes[*].weights_sha256``) are one *training run*,
  evaluated perhaps with several samplers;
* training runs whose commands differ only in the seed, the output folder, the resume flag and the sampling
  options (sampler, steps, autoguidance, evaluation size) are one *recipe*.

Within a recipe, each sampling setting is a *variant* with one FID per training run; its seed mean ranks the
recipe (the best variant is ranked, the others are shown beside it as a sampler comparison). The uncertainty of a
seed mean is the spread of one run's FID between seeds, pooled over every variant of the table that has several
seeds (on a log scale, so a 20 % spread is the same at FID 0.5 and 5), divided by the square root of the number of
seeds; that spread already contains the noise of the evaluation itself. Where no variant has several seeds, the
bootstrap spread of the evaluation (``metrics.fid_std``) stands in. A row's rank is one more than the number of rows
that are better beyond both their uncertainties (about 95 %: the gap of the logs exceeds twice the combined
standard error), so rows that cannot be told apart share a rank.

Pure Python: no torch, so the leaderboard's table can be made anywhere.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path

SEED_FLAGS = ("--seed", "--output_dir", "--resume_from_checkpoint")  # what may differ between seeds of one recipe
# How the finished model is sampled and scored: what may differ between evaluations of one training run.
SAMPLING_FLAGS = ("--sampler", "--num_inference_steps", "--guidance_scale", "--guide_step", "--guide_interval",
                  "--eval_num_samples", "--eval_batch_size")
VALUED_FLAGS = {"--guide_interval": 2}  # flags followed by more than one value
MNIST_DATASETS = {"mnist", "ylecun/mnist"}
Z = 2.0  # about 95 %: rows whose logs differ by less than Z combined standard errors share a rank


def command_without(command: str | None, flags) -> str | None:
    """``command`` without the given flags and their values (None without a command)."""
    if not command:
        return None
    try:
        tokens = shlex.split(command)
    except ValueError:  # an unbalanced quote in someone's recorded command
        tokens = command.split()
    kept, skip = [], 0
    for token in tokens:
        if skip:
            skip -= 1
        elif token in flags:
            skip = VALUED_FLAGS.get(token, 1)
        elif not token.startswith(tuple(f"{flag}=" for flag in flags)):
            kept.append(token)
    return " ".join(kept)


def seed_group(recipe: dict) -> str | None:
    """The command without --seed, --output_dir and --resume_from_checkpoint: shared by the seeds of one
    recipe evaluated the same way (None without a command)."""
    return command_without(recipe.get("command"), SEED_FLAGS)


def training_key(recipe: dict) -> str | None:
    """The command without the seed, output, resume and sampling flags: shared by every run of one recipe."""
    return command_without(recipe.get("command"), SEED_FLAGS + SAMPLING_FLAGS)


def weights_digest(recipe: dict) -> str | None:
    """The recorded SHA-256 of the final weights (the training script records it per process), or None."""
    processes = recipe.get("processes")
    if isinstance(processes, list) and processes and isinstance(processes[0], dict):
        digest = processes[0].get("weights_sha256")
        return digest if isinstance(digest, str) and digest else None
    return None


def sampling_key(recipe: dict) -> tuple:
    """How an entry's samples were made and counted: sampler, steps, guidance and the number of samples."""
    scale = recipe.get("guidance_scale") or 1
    guided = bool(recipe.get("guide_step")) and scale != 1
    interval = recipe.get("guide_interval") if guided else None
    return (recipe.get("sampler"), recipe.get("num_inference_steps"), scale if guided else 1,
            recipe.get("guide_step") if guided else None, tuple(interval) if isinstance(interval, list) else None,
            (recipe.get("metrics") or {}).get("num_samples"))


def entry_name(recipe: dict) -> str:
    """A Hub entry's repo id, else the folder that holds the recipe.json."""
    if recipe.get("_hub"):
        return recipe["_hub"]["repo_id"]
    return Path(recipe.get("_source", "?")).parent.name or "?"


def is_mnist(recipe: dict) -> bool:
    """Whether the entry belongs to the MNIST table (scored with the course's digit metric)."""
    return str(recipe.get("dataset") or "").lower() in MNIST_DATASETS


def score(recipe: dict, metric: str = "fid") -> float | None:
    """The figure an entry is ranked by (None when it has no finite one): for an entry collected from the Hub only
    the verified one, since anyone can publish a number and make its verification fail; for a committed entry
    (reviewed in a pull request) the verified one when there is one, else the self-reported one."""
    verified = (recipe.get("_verified") or {}).get(metric)
    value = verified if isinstance(verified, (int, float)) or recipe.get("_hub") \
        else (recipe.get("metrics") or {}).get(metric)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        return None
    return float(value)


@dataclass
class Variant:
    """One sampling setting of a recipe: the FID of each training run (the mean where a run was scored twice)."""

    key: tuple
    entries: list[dict]
    values: list[float]  # one per training run, in the order of ``seeds``
    seeds: list

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    @property
    def representative(self) -> dict:
        """The entry shown for the variant: the one with the lowest seed, so that a table names seed 0."""
        return min(self.entries, key=lambda e: (not isinstance(e.get("seed"), int), e.get("seed") or 0,
                                                entry_name(e)))


@dataclass
class Row:
    """One recipe of the table: its ranked variant, the others, and the rank with its uncertainty."""

    entries: list[dict]
    variants: list[Variant] = field(default_factory=list)
    log_error: float | None = None  # standard error of log(seed mean)
    rank: int | None = None
    tied: bool = False  # shares its rank with a neighbour

    @property
    def best(self) -> Variant | None:
        return self.variants[0] if self.variants else None

    @property
    def representative(self) -> dict:
        if self.best:
            return self.best.representative
        return min(self.entries, key=entry_name)

    @property
    def error(self) -> float | None:
        """The uncertainty of the seed mean in FID units (one standard error)."""
        if self.best is None or self.log_error is None:
            return None
        return self.best.mean * (math.exp(self.log_error) - 1)


def _union_find(entries: list[dict]) -> list[list[dict]]:
    parent = list(range(len(entries)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict = {}
    for i, entry in enumerate(entries):
        for key in (("digest", weights_digest(entry)), ("training", training_key(entry))):
            if key[1] is None:
                continue
            if key in first:
                parent[find(i)] = find(first[key])
            else:
                first[key] = i
    groups: dict[int, list[dict]] = {}
    for i, entry in enumerate(entries):
        groups.setdefault(find(i), []).append(entry)
    return list(groups.values())


def _run_of(entry: dict) -> str:
    """Which training run an entry evaluates. Within one recipe the seed names it: the same command and seed rerun on
    another machine (or day) ends with weights that differ in their last bits, so its digest differs, yet it is the
    same data order and initialisation, not another seed (the committed seed-1 runs of the top recipe show two
    digests). Without a seed, the digest; without either, the entry itself."""
    if isinstance(entry.get("seed"), int) and not isinstance(entry.get("seed"), bool):
        return f"seed:{entry['seed']}"
    return weights_digest(entry) or f"entry:{entry.get('_source') or entry_name(entry)}"


def _variants(entries: list[dict], metric: str) -> list[Variant]:
    by_key: dict[tuple, dict[str, list[dict]]] = {}
    for entry in entries:
        if score(entry, metric) is not None:
            by_key.setdefault(sampling_key(entry), {}).setdefault(_run_of(entry), []).append(entry)
    variants = []
    for key, runs in by_key.items():
        values = [sum(score(e, metric) for e in members) / len(members) for members in runs.values()]
        seeds = [min((e.get("seed") for e in members), key=str) for members in runs.values()]
        order = sorted(range(len(values)), key=lambda i: str(seeds[i]))
        variants.append(Variant(key, [e for members in runs.values() for e in members],
                                [values[i] for i in order], [seeds[i] for i in order]))
    # the best seed mean first; with equal means, the one with more seeds
    return sorted(variants, key=lambda v: (v.mean, -len(v.values)))


def pooled_seed_spread(rows: list[Row]) -> tuple[float | None, int]:
    """(standard deviation of log FID between the seeds of one variant, pooled over all variants with several
    seeds; its degrees of freedom). (None, 0) when no variant has two seeds."""
    squares, dof = 0.0, 0
    for row in rows:
        for variant in row.variants:
            if len(variant.values) > 1:
                logs = [math.log(v) for v in variant.values]
                mean = sum(logs) / len(logs)
                squares += sum((x - mean) ** 2 for x in logs)
                dof += len(logs) - 1
    return (math.sqrt(squares / dof), dof) if dof else (None, 0)


def _measurement_spread(variant: Variant, metric: str) -> float | None:
    """The entries' own bootstrap spread on a log scale (metrics.fid_std / fid), when they recorded one."""
    spreads = [(e.get("_verified") or e.get("metrics") or {}).get(f"{metric}_std") for e in variant.entries]
    spreads = [s / variant.mean for s in spreads if isinstance(s, (int, float)) and math.isfinite(s) and s > 0]
    return max(spreads) if spreads else None


def rank_recipes(entries: list[dict], metric: str = "fid") -> tuple[list[Row], float | None, int]:
    """The recipes of ``entries`` best first, ranked with shared ranks for rows that cannot be told apart.

    Returns (rows, pooled seed spread of log FID, its degrees of freedom). Rows without the metric (among them the
    Hub entries not verified yet) come last, unranked.
    """
    rows = [Row(group, _variants(group, metric)) for group in _union_find(entries)]
    spread, dof = pooled_seed_spread(rows)
    for row in rows:
        if row.best is not None:
            own = spread if spread is not None else _measurement_spread(row.best, metric)
            row.log_error = own / math.sqrt(len(row.best.values)) if own is not None else None
    scored = sorted((r for r in rows if r.best), key=lambda r: (r.best.mean, -len(r.best.values)))
    for row in scored:
        better = [other for other in scored if other is not row and other.best.mean < row.best.mean
                  and not _indistinguishable(row, other)]
        row.rank = len(better) + 1
    for above, below in zip(scored, scored[1:]):
        if _indistinguishable(above, below):
            above.tied = below.tied = True
    unscored = sorted((r for r in rows if not r.best), key=lambda r: entry_name(r.representative))
    return scored + unscored, spread, dof


def _indistinguishable(a: Row, b: Row) -> bool:
    if a.log_error is None or b.log_error is None:
        return False  # without an uncertainty the table cannot call a tie; it says so instead
    gap = abs(math.log(a.best.mean) - math.log(b.best.mean))
    return gap <= Z * math.hypot(a.log_error, b.log_error)


def largest_seed_ratio(rows: list[Row]) -> tuple[float, float, float] | None:
    """(ratio, lower, higher): the largest ratio between two seeds' FID of one variant, for the page's prose."""
    best = None
    for row in rows:
        for variant in row.variants:
            if len(variant.values) > 1:
                low, high = min(variant.values), max(variant.values)
                if best is None or high / low > best[0]:
                    best = (high / low, low, high)
    return best
