"""Leaderboard entries on the Hugging Face Hub: list them by the course tag, fetch and check each, verify its FID.

An entry is a model repo whose card carries utils.recipe.COURSE_TAG (the training script's ``--push_to_hub`` and
notebook 01's upload cell write it) with ``recipe.json``, a sample grid and safetensors weights. Everything in such
a repo is untrusted input: files are size-checked from the Hub's metadata before any download, the recipe is
validated with utils/recipe.py, weights are read as safetensors only into a UNet2DModel built by this code (no
pipeline class, no custom code from the repo), and a bad entry is skipped with a one-line reason.

Collected entries are kept under a folder (``unit1/leaderboard/hub/OWNER--NAME/``: ``recipe.json`` and
``entry.json`` with the repo, the revision and the verification), so the page can be rebuilt offline and a rerun
only re-scores entries whose revision changed. huggingface_hub is imported inside the functions, torch only by
``verify_entry``.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

from utils.recipe import COURSE_TAG, MAX_RECIPE_BYTES, recipe_problems

MAX_WEIGHTS_BYTES = 512 * 1024**2  # one UNet of the course's largest size ("base") is about 450 MB
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
WEIGHTS = "diffusion_pytorch_model.safetensors"
GRIDS = ("samples/final.png", "samples.png")  # the script's final grid, notebook 01's strip
EXPAND = ["sha", "gated", "disabled", "private", "lastModified"]  # the listing fields the leaderboard reads
MAX_VERIFY_SAMPLES = 1000
MAX_EVALUATIONS = 2000  # network evaluations per image that verification will spend on one entry
AGREEMENT_Z = 3.0  # verified and reported FID disagree when they differ by more than this many noise units
ENTRY_FILE = "entry.json"
COLLECTION_FILE = "collection.json"


class EntrySkipped(Exception):
    """An entry the leaderboard does not take; the message is the one-line reason."""


class TryLater(EntrySkipped):
    """A verification that failed for a reason of this machine or this moment (a metric or data set not available
    here), not of the entry: it is not cached, the next run tries again."""


def folder_name(repo_id: str) -> str:
    return repo_id.replace("/", "--")


def _size_text(size: int) -> str:
    return f"{size / 1024**3:.1f} GB" if size >= 1024**3 else f"{size / 1024**2:.1f} MB"


def list_entries(api, tag: str = COURSE_TAG) -> list:
    """Every model with ``tag``, all pages (huggingface_hub follows the Hub's Link header)."""
    return list(api.list_models(filter=tag, expand=EXPAND))


def repo_files(api, repo_id: str, revision: str) -> dict[str, int]:
    """path -> size of every file of the repo at ``revision``."""
    from huggingface_hub.hf_api import RepoFile

    return {item.path: item.size for item in api.list_repo_tree(repo_id, revision=revision, recursive=True)
            if isinstance(item, RepoFile)}


def check_files(files: dict[str, int], guided: bool = False) -> None:
    """Raise EntrySkipped unless the repo has a bounded recipe.json and safetensors weights."""
    if "recipe.json" not in files:
        raise EntrySkipped("no recipe.json (push the output folder of the training script or notebook 01)")
    if files["recipe.json"] > MAX_RECIPE_BYTES:
        raise EntrySkipped(f"recipe.json is {_size_text(files['recipe.json'])}, more than the "
                           f"{MAX_RECIPE_BYTES // 1000:,} kB a recipe may have")
    weights = [f"unet/{WEIGHTS}"] + ([f"guide_unet/{WEIGHTS}"] if guided else [])
    for path in weights:
        if path not in files:
            pickled = sorted(p for p in files if p.endswith(PICKLE_SUFFIXES))
            if pickled:
                raise EntrySkipped(f"pickled weights only ({', '.join(pickled[:3])}); the leaderboard loads "
                                   f"safetensors only: save with save_pretrained(..., safe_serialization=True)")
            raise EntrySkipped(f"no {path} (save the pipeline with save_pretrained before pushing)")
        if files[path] > MAX_WEIGHTS_BYTES:
            raise EntrySkipped(f"{path} is {_size_text(files[path])}, more than the "
                               f"{_size_text(MAX_WEIGHTS_BYTES)} the leaderboard downloads")


def fetch_entry(api, info) -> dict:
    """The validated recipe of the listed model ``info`` at its listed revision, with ``_hub`` describing it."""
    from huggingface_hub import hf_hub_download

    repo_id, revision = info.id, info.sha
    if getattr(info, "gated", False):
        raise EntrySkipped("gated: the leaderboard reads only public entries that anyone can download")
    if getattr(info, "disabled", False) or getattr(info, "private", False):
        raise EntrySkipped("disabled or private on the Hub")
    if not revision:
        raise EntrySkipped("the listing gave no revision")
    files = repo_files(api, repo_id, revision)
    check_files(files)
    path = hf_hub_download(repo_id, "recipe.json", revision=revision)
    if Path(path).stat().st_size > MAX_RECIPE_BYTES:  # the metadata lied
        raise EntrySkipped(f"recipe.json is larger than {MAX_RECIPE_BYTES // 1000:,} kB")
    try:
        recipe = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise EntrySkipped(f"recipe.json is not valid JSON ({error})") from None
    problems = recipe_problems(recipe)
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise EntrySkipped(f"recipe.json does not follow the recipe schema: {shown}")
    scale = recipe.get("guidance_scale") or 1
    check_files(files, guided=bool(recipe.get("guide_step")) and scale != 1)
    grid = next((g for g in GRIDS if g in files), None)
    return {**recipe, "_hub": {"repo_id": repo_id, "revision": revision, "grid": grid}}


def _one_line(error: Exception) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__


def collect(hub_dir: Path, api=None, tag: str = COURSE_TAG, log=print) -> list[str]:
    """List the entries with ``tag`` and keep each valid one under ``hub_dir``; return the one-line reasons of
    the skipped ones. Folders of entries that are gone from the listing, or skipped now, are removed; an entry that
    could not be read this time (a network error, the Hub's 5xx) keeps its earlier folder and verification; an
    entry whose revision is unchanged keeps its verification."""
    from huggingface_hub import HfApi

    api = api or HfApi()
    listed = list_entries(api, tag)
    hub_dir.mkdir(parents=True, exist_ok=True)
    kept, skipped, stale = set(), [], []
    for info in listed:
        try:
            recipe = fetch_entry(api, info)
        except EntrySkipped as reason:
            skipped.append(f"{info.id}: {reason}")
        except Exception as error:  # noqa: BLE001 - one broken entry (deleted, gated, cut off) must not stop the run
            gone = type(error).__name__ in ("RepositoryNotFoundError", "RevisionNotFoundError", "GatedRepoError")
            if gone:
                skipped.append(f"{info.id}: gone or closed since it was listed ({type(error).__name__})")
            elif (hub_dir / folder_name(info.id) / ENTRY_FILE).is_file():  # most likely passing: keep what we had
                kept.add(folder_name(info.id))
                stale.append(f"{info.id}: could not be read ({_one_line(error)}); the earlier collection is kept")
                log(f"kept {stale[-1]}")
                continue
            else:
                skipped.append(f"{info.id}: could not be read ({_one_line(error)})")
        else:
            kept.add(save_entry(hub_dir, recipe))
            continue
        log(f"skipped {skipped[-1]}")
    listed_folders = {folder_name(info.id) for info in listed}
    for folder in hub_dir.iterdir():
        if folder.is_dir() and (folder / ENTRY_FILE).is_file() and folder.name not in kept:
            shutil.rmtree(folder)
            log(f"removed {folder.name}: " + ("skipped this time (see above)" if folder.name in listed_folders
                                              else f"no longer listed with the tag {tag}"))
    collection = {"collected": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "tag": tag, "listed": len(listed),
                  "entries": len(kept), "skipped": skipped, "stale": stale}
    (hub_dir / COLLECTION_FILE).write_text(json.dumps(collection, indent=2, ensure_ascii=False) + "\n",
                                           encoding="utf-8")
    log(f"collected {len(kept)} of {len(listed)} models tagged {tag} into {hub_dir}")
    return skipped


def save_entry(hub_dir: Path, recipe: dict) -> str:
    """Write one fetched entry; keep its earlier verification when the revision is the same."""
    hub = recipe["_hub"]
    folder = hub_dir / folder_name(hub["repo_id"])
    old = read_entry(folder)
    entry = {**hub, "verified": old.get("verified") if old.get("revision") == hub["revision"] else None}
    folder.mkdir(parents=True, exist_ok=True)
    clean = {k: v for k, v in recipe.items() if not k.startswith("_")}
    (folder / "recipe.json").write_text(json.dumps(clean, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (folder / ENTRY_FILE).write_text(json.dumps(entry, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return folder.name


def read_entry(folder: Path) -> dict:
    """A collected entry's entry.json ({} when there is none)."""
    path = Path(folder) / ENTRY_FILE
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def _bounded(value, low, high, default):
    return value if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high else default


def verification_settings(recipe: dict) -> dict:
    """The entry's own sampler, steps, guidance, seed and sample count, each checked before any work."""
    from utils.sampling import SAMPLERS

    sampler = recipe.get("sampler")
    if sampler not in SAMPLERS:
        raise EntrySkipped(f"not verified: the sampler {sampler!r} is not one of the course's ({', '.join(SAMPLERS)})")
    steps = _bounded(recipe.get("num_inference_steps"), 1, 1000, None)
    if steps is None:
        raise EntrySkipped(f"not verified: num_inference_steps {recipe.get('num_inference_steps')!r} is not 1-1000")
    scale = recipe.get("guidance_scale") or 1.0
    if not isinstance(scale, (int, float)) or not math.isfinite(scale) or not 0 <= scale <= 20:
        raise EntrySkipped(f"not verified: guidance_scale {scale!r} is not a number from 0 to 20")
    guided = bool(recipe.get("guide_step")) and scale != 1
    interval = recipe.get("guide_interval") if guided else None
    if interval is not None and not (isinstance(interval, list) and len(interval) == 2
                                     and all(isinstance(v, (int, float)) for v in interval)):
        raise EntrySkipped(f"not verified: guide_interval {interval!r} is not [low, high]")
    count = (recipe.get("metrics") or {}).get("num_samples")
    count = _bounded(count, 10, MAX_VERIFY_SAMPLES, MAX_VERIFY_SAMPLES)
    cost = recipe.get("network_evaluations")
    if isinstance(cost, int) and cost > MAX_EVALUATIONS:
        raise EntrySkipped(f"not verified: {cost} network evaluations per image is more than {MAX_EVALUATIONS}")
    return {"sampler": sampler, "num_inference_steps": steps, "guidance_scale": float(scale), "guided": guided,
            "guide_interval": tuple(interval) if interval else None, "num_samples": count,
            "batch_size": _bounded(recipe.get("eval_batch_size"), 1, 1000, 250),
            "seed": _bounded(recipe.get("seed"), 0, 2**63 - 1, 0)}


def _load_unet(folder: Path):
    """A UNet2DModel from a downloaded folder's config.json and safetensors weights, nothing else."""
    from diffusers import UNet2DModel

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if not isinstance(config, dict) or config.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise EntrySkipped(f"not verified: {folder.name}/config.json is not a UNet2DModel config")
    return UNet2DModel.from_pretrained(folder, use_safetensors=True).eval()


def verify_entry(recipe: dict, api=None, log=print) -> dict:
    """Download the entry's pipeline (safetensors only) at its revision, sample it with its own settings and score
    it with the course metric; return the verification record (also for an entry that cannot be verified)."""
    from huggingface_hub import HfApi, snapshot_download

    hub = recipe["_hub"]
    started = time.perf_counter()
    record = {"revision": hub["revision"]}
    try:
        settings = verification_settings(recipe)
        api = api or HfApi()
        files = repo_files(api, hub["repo_id"], hub["revision"])
        check_files(files, guided=settings["guided"])
        folders = ["unet"] + (["guide_unet"] if settings["guided"] else [])
        local = Path(snapshot_download(hub["repo_id"], revision=hub["revision"], allow_patterns=[
            "scheduler/scheduler_config.json", *(f"{f}/config.json" for f in folders),
            *(f"{f}/{WEIGHTS}" for f in folders)]))
        for folder in folders:
            if (local / folder / WEIGHTS).stat().st_size > MAX_WEIGHTS_BYTES:
                raise EntrySkipped(f"not verified: {folder}/{WEIGHTS} is larger than {_size_text(MAX_WEIGHTS_BYTES)}")
        record.update(_score(recipe, local, settings))
    except EntrySkipped as reason:  # the entry's own fault: final for this revision, unless it says try later
        record["note"] = str(reason)
        if isinstance(reason, TryLater):
            record["retry"] = True
    except Exception as error:  # noqa: BLE001 - a broken or hostile repo is reported, never fatal
        record.update(note=f"not verified: {_one_line(error)}", retry=True)  # perhaps the network: try again
    record["seconds"] = round(time.perf_counter() - started, 1)
    log(f"verified {hub['repo_id']}@{hub['revision'][:8]}: " + (
        f"FID {record['fid']:.4g} ± {record['fid_std']:.2g} (reported {record['reported']}) in {record['seconds']} s"
        if "fid" in record else record["note"]))
    return record


def _score(recipe: dict, local: Path, settings: dict) -> dict:
    from diffusers import DDPMPipeline, DDPMScheduler

    from utils import metrics

    unet = _load_unet(local / "unet")
    reference = None
    if unet.config.in_channels != 1:  # RGB: Inception features against the entry's own training data
        try:
            metrics.load_inception()
        except metrics.MetricUnavailable as error:
            raise TryLater(f"not verified: the RGB metric is not available here ({error})") from None
        reference = _training_images(recipe, unet.config.sample_size, settings["num_samples"])
    config = json.loads((local / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    scheduler = DDPMScheduler.from_config({k: v for k, v in config.items() if not k.startswith("_")})
    guide = _load_unet(local / "guide_unet") if settings["guided"] else None
    scores = metrics.evaluate_pipeline(
        DDPMPipeline(unet=unet, scheduler=scheduler), num_samples=settings["num_samples"],
        batch_size=settings["batch_size"], sampler=settings["sampler"],
        num_inference_steps=settings["num_inference_steps"], seed=settings["seed"], progress=False,
        guide=guide, guidance_scale=settings["guidance_scale"] if guide is not None else 1.0,
        guide_interval=settings["guide_interval"], reference=reference)
    if "fid" not in scores:
        raise TryLater("not verified: the metric gave no FID (see the message above)")
    reported = recipe.get("metrics") or {}
    record = {key: scores[key] for key in ("fid", "fid_std", "fid_floor", "coverage", "num_samples") if key in scores}
    record.setdefault("fid_std", 0.0)
    record["reported"] = reported.get("fid")
    if isinstance(reported.get("fid"), (int, float)):
        noise = math.hypot(scores["fid_std"], reported.get("fid_std") or scores["fid_std"])
        record["agrees"] = abs(scores["fid"] - reported["fid"]) <= AGREEMENT_Z * noise
    return record


def _training_images(recipe: dict, size: int, count: int):
    """Up to ``count`` images of the entry's Hub dataset as the RGB metric's reference (only a dataset name from
    the Hub is used; a local folder of the learner's cannot be read from here)."""
    from utils.data import images_to_tensor, is_fallback, load_image_dataset

    name = recipe.get("dataset")
    if not isinstance(name, str) or recipe.get("dataset_fallback") or Path(name).is_absolute() or ".." in name:
        raise EntrySkipped(f"not verified: the training data {name!r} is not a Hub dataset the leaderboard can load")
    dataset = load_image_dataset(name, max_samples=max(2 * count, 20))
    if is_fallback(dataset):
        raise TryLater(f"not verified: the dataset {name} could not be loaded from the Hub")
    return images_to_tensor(dataset["image"], size, channels=3)


def _is_due(recipe: dict) -> bool:
    """Whether a collected entry has no final verification at its current revision (``retry`` is not final)."""
    verified = recipe.get("_verified") or {}
    return verified.get("revision") != recipe["_hub"]["revision"] or bool(verified.get("retry"))


def verify(hub_dir: Path, entries: list[dict], api=None, log=print, limit: int | None = None) -> int:
    """Verify the collected entries that are due, at most ``limit`` of them (never tried before those to try again;
    the others stay not verified until a later run); return how many ran."""
    due = sorted((r for r in entries if r.get("_hub") and _is_due(r)),
                 key=lambda r: bool((r.get("_verified") or {}).get("retry")))
    if limit is not None and len(due) > limit:
        log(f"verifying {limit} of the {len(due)} entries due; the other {len(due) - limit} wait for a later run")
        due = due[:limit]
    for recipe in due:
        hub = recipe["_hub"]
        record = verify_entry(recipe, api, log)
        folder = hub_dir / folder_name(hub["repo_id"])
        entry = read_entry(folder)
        (folder / ENTRY_FILE).write_text(json.dumps({**entry, "verified": record}, indent=2, ensure_ascii=False)
                                         + "\n", encoding="utf-8")
        recipe["_verified"] = record
    return len(due)
