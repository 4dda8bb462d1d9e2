"""Model cards (metadata through huggingface_hub's ModelCardData) and pushing to the Hub only when logged in."""

from __future__ import annotations

import json
from pathlib import Path

from .environment import error_summary, is_online
from .recipe import COURSE_TAG

LICENSE = "apache-2.0"  # the repository's LICENSE file (tests/test_hub.py checks that they agree)
# COURSE_TAG marks the model as a leaderboard entry (python -m tools.leaderboard --from-hub lists models by it).
TAGS = ["pytorch", "diffusers", "unconditional-image-generation", "diffusion-models-class", COURSE_TAG]
# Names of the metrics in model-index results; every numeric metric becomes one, except num_samples and the
# spreads (*_std), which describe them.
SCORES = {"fid": "FID", "fid_floor": "FID of real training images (floor)", "kid_mean": "KID",
          "coverage": "class coverage", "confidence": "classifier confidence"}
TASK = ("unconditional-image-generation", "Unconditional image generation")
SECRET_KEYS = ("hub_token", "token")


def hub_token() -> str | None:
    """The locally stored Hugging Face token, or None (no network request, never printed)."""
    from huggingface_hub import get_token

    return get_token()


def is_logged_in() -> bool:
    """True when a Hugging Face token is available locally."""
    return hub_token() is not None


def full_repo_name(model_id: str) -> str:
    """'user/model' for a bare model name (needs the network and a login); a full name is returned as is."""
    if "/" in model_id:
        return model_id
    from huggingface_hub import whoami

    return f"{whoami()['name']}/{model_id}"


def card_data(recipe: dict, metrics: dict | None, repo_id: str):
    """The card's YAML metadata; the metrics become model-index results the Hub shows beside the model.

    Each result names the metric, the number of generated samples it was measured on and the sampler with its
    network evaluations per image, since a score means nothing without them.
    """
    from huggingface_hub import EvalResult, ModelCardData

    dataset = str(recipe.get("dataset") or "unknown")
    metrics = metrics or {}
    count, cost = metrics.get("num_samples"), recipe.get("network_evaluations")
    details = ", ".join(part for part in (f"{count} samples" if count else "",
                                          f"{recipe.get('sampler')} {recipe.get('num_inference_steps')}"
                                          if recipe.get("sampler") else "",
                                          f"{cost} network evaluations per image" if cost else "") if part)
    arguments = {key: value for key, value in (("num_samples", count), ("sampler", recipe.get("sampler")),
                                               ("num_inference_steps", recipe.get("num_inference_steps")),
                                               ("guidance_scale", recipe.get("guidance_scale")),
                                               ("network_evaluations", cost)) if value is not None}
    results = [EvalResult(task_type=TASK[0], task_name=TASK[1], dataset_type=dataset, dataset_name=dataset,
                          metric_type=name, metric_name=f"{label} ({details})" if details else label,
                          metric_value=value, metric_args=arguments or None)
               for name, value in metrics.items() if name != "num_samples" and not name.endswith("_std")
               and isinstance(value, (int, float)) and not isinstance(value, bool)
               for label in [SCORES.get(name, name)]]
    return ModelCardData(library_name="diffusers", license=LICENSE, tags=list(TAGS), model_name=repo_id if results else None,
                         eval_results=results or None)


def write_model_card(folder: str | Path, recipe: dict, metrics: dict | None = None, repo_id: str | None = None,
                     sample_image: str | None = None, description: str = "") -> Path:
    """Write README.md (a model card) into ``folder``: metadata, usage snippet, metrics and recipe tables."""
    from huggingface_hub import ModelCard

    from .checkpoints import guide_code
    from .sampling import scheduler_code

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    repo_id = repo_id or folder.name
    lines = ["", f"# {repo_id}", "",
              description or "An unconditional image diffusion model trained in Unit 1 of the course.", ""]
    if sample_image:
        lines += [f"![samples]({sample_image})", ""]
    lines += ["## Usage", "", "```python", "from diffusers import DDPMPipeline", "",
              f"pipeline = DDPMPipeline.from_pretrained({repo_id!r})",
              "image = pipeline().images[0]", "image", "```", ""]
    scale = recipe.get("guidance_scale") or 1
    if recipe.get("guide_step") and scale != 1:
        class_name, build = scheduler_code(recipe.get("sampler") or "ddpm")
        interval = recipe.get("guide_interval")
        guided = ["        weak = guide(model_input, t).sample",
                  f"        prediction = weak + {scale:g} * (unet(model_input, t).sample - weak)"]
        if interval:  # guided only inside the interval, as the metrics were sampled
            guided = [f"        if {interval[0]:g} <= t <= {interval[1]:g}:", *["    " + line for line in guided],
                      "        else:", "            prediction = unet(model_input, t).sample"]
        lines += [f"The metrics were measured with autoguidance (Karras et al. 2024): the weights of step "
                  f"{recipe['guide_step']} are kept in `guide_unet/` and steer each sampling step away from their "
                  "mistakes" + (f" (at the timesteps {interval[0]:g} <= t <= {interval[1]:g} only)" if interval else "")
                  + ".", "", "```python", "import torch", f"from diffusers import {class_name}, UNet2DModel", "",
                  f"guide = {guide_code(repo_id)}",
                  f"scheduler = {build}",
                  f"scheduler.set_timesteps({recipe.get('num_inference_steps') or 100})", "unet = pipeline.unet",
                  "x = torch.randn(16, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)",
                  "x = x * scheduler.init_noise_sigma",
                  "with torch.no_grad():", "    for t in scheduler.timesteps:",
                  "        model_input = scheduler.scale_model_input(x, t)", *guided,
                  "        x = scheduler.step(prediction, t, x).prev_sample",
                  "images = (x.clamp(-1, 1) + 1) / 2  # (16, C, H, W) in [0, 1]", "```", ""]
    if metrics:
        lines += ["## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in metrics.items()] + [""]
    lines += ["## Training recipe", "", "| setting | value |", "|---|---|"]
    shown = {k: v for k, v in recipe.items() if k.lower() not in SECRET_KEYS}
    lines += [f"| {k} | `{v}` |" for k, v in shown.items()]
    lines += ["", "<details><summary>recipe.json</summary>", "", "```json",
              json.dumps(shown, indent=2, ensure_ascii=False, default=str), "```", "</details>", ""]
    card = ModelCard(f"---\n{card_data(recipe, metrics, repo_id).to_yaml()}\n---\n" + "\n".join(lines))
    path = folder / "README.md"
    path.write_text(str(card), encoding="utf-8")
    return path


def push_folder(folder: str | Path, repo_id: str, private: bool = False,
                commit_message: str = "Upload diffusion model", ignore_patterns: list[str] | None = None) -> str | None:
    """Upload ``folder`` (minus ``ignore_patterns``) to the Hub when online and logged in; return the repo URL.

    Offline, logged out, or when the Hub refuses or fails, it says why (in Japanese) and returns None; the folder
    is never touched."""
    if not is_online():
        print("オフラインのため、Hub へのアップロードはスキップします。")
        return None
    if not is_logged_in():
        print("Hugging Face にログインしていないため、Hub へのアップロードはスキップします。"
              "アップロードするには `huggingface_hub.login()`（またはターミナルで `hf auth login`）でログインしてください。")
        return None
    from huggingface_hub import create_repo, upload_folder

    try:
        repo_url = create_repo(full_repo_name(repo_id), private=private, exist_ok=True)
        commit = upload_folder(repo_id=repo_url.repo_id, folder_path=str(folder), commit_message=commit_message,
                               ignore_patterns=ignore_patterns)
    except Exception as error:  # noqa: BLE001 - a broken Hub or a rejected token must not lose the folder
        print(f"Hub へのアップロードに失敗しました（{error_summary(error)}）。フォルダー {folder} はそのまま残っています。"
              f"あとで `hf upload {repo_id} {folder}` でアップロードできます。")
        return None
    print(f"アップロードしました: {repo_url}（コミット {commit.oid[:8]}）")
    return str(repo_url)
