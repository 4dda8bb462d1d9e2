"""The leaderboard against the local Hub (tests/hub_server.py): entries pushed by the training script and by
notebook 01's upload cell are collected by the course tag and verified; hostile entries are skipped in one line.

Each client runs in a fresh process: HF_ENDPOINT is read when huggingface_hub is imported.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.online, pytest.mark.slow]


@pytest.fixture(scope="module")
def hub():
    """A Hub of this module's own (it overrides conftest's for hub_env): the entries listed here are exactly the
    ones these tests publish, whatever other tests uploaded to the session's Hub."""
    from hub_server import FakeHub, seed_course_repos

    server = seed_course_repos(FakeHub())
    server.start()
    yield server
    server.stop()


def run_python(code: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


CARD = b"---\nlibrary_name: diffusers\ntags:\n- diffusion-course-ja\n---\n# an entry\n"

NOTEBOOK_01_UPLOAD = """
    import json, time
    from pathlib import Path
    import numpy as np
    import torch
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
    from utils import (BUTTERFLIES, image_strip, is_fallback, is_logged_in, library_versions, upscale,
                       write_model_card, write_recipe)
    cells = {{c["id"]: "".join(c["source"]) for c in json.loads(Path("unit1/01_introduction_to_diffusers.ipynb")
                                                              .read_text(encoding="utf-8"))["cells"]}}
    torch.manual_seed(0)
    model = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                        norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
                        up_block_types=("UpBlock2D", "UpBlock2D"))
    noise_scheduler = DDPMScheduler(num_train_timesteps=10)
    pipeline = DDPMPipeline(unet=model, scheduler=noise_scheduler)
    pipeline_dir = Path("{folder}")
    pipeline.save_pretrained(pipeline_dir)  # as the notebook's save cell does
    from datasets import Dataset
    dataset = Dataset.from_dict({{"image": list(range(16))}})  # stands in for the 16 training images
    namespace = dict(globals(), dataset=dataset, image_size=8, num_parameters=1234, block_out_channels=(8, 16),
                     layers_per_block=1, norm_num_groups=4, learning_rate=1e-3, batch_size=4, num_epochs=1,
                     losses=[1.0, 0.9], seed=0, device=torch.device("cpu"), train_seconds=6.0, window=2,
                     sample_steps=2, online=True,
                     pipeline_images=pipeline(batch_size=2, num_inference_steps=2).images)
    for cell_id in ("bfd5de90", "497b43e0", "d3a9b6c7"):  # recipe.json + card, the upload, the reload from the Hub
        exec(cells[cell_id], namespace)
"""


def hostile_entries(hub, tensor_file: bytes):
    """Entries a careless or hostile learner could publish with the course tag."""
    good = {"README.md": CARD, "unet/diffusion_pytorch_model.safetensors": tensor_file}
    recipe_fields = json.loads((ROOT / "unit1" / "leaderboard" / "mnist-micro-v-3min" / "recipe.json").read_text())
    hub.add_repo("model", "mallory/bad-json", {**good, "recipe.json": b"{not json"})
    hub.add_repo("model", "mallory/wrong-types", {**good, "recipe.json": json.dumps(
        {**recipe_fields, "train_minutes": "fast", "metrics": {"fid": "0.01"}}).encode()})
    huge = hub.add_repo("model", "mallory/huge-recipe", {**good, "recipe.json": b"{}"})
    huge.sizes["recipe.json"] = 2 * 1024**3  # what the Hub's metadata claims: never downloaded
    hub.add_repo("model", "mallory/pickled-only", {"README.md": CARD, "recipe.json": json.dumps(recipe_fields).encode(),
                                                   "unet/diffusion_pytorch_model.bin": b"\x80\x04 not unpickled"})
    gated = hub.add_repo("model", "mallory/gated", {**good, "recipe.json": json.dumps(recipe_fields).encode()})
    gated.gated = "manual"
    hub.add_repo("model", "mallory/deleted", {**good, "recipe.json": json.dumps(recipe_fields).encode()})
    hub.delete_after_listing.add("mallory/deleted")
    hub.add_repo("model", "someone/untagged", {**good, "README.md": b"---\ntags:\n- diffusers\n---\n",
                                               "recipe.json": json.dumps(recipe_fields).encode()})


def test_pushed_entries_are_collected_verified_and_hostile_ones_skipped(hub_env, hub, tmp_path):
    out = tmp_path / "mnist-run"
    args = ["--dataset_name", "mnist", "--resolution", "16", "--model_size", "tiny", "--train_batch_size", "4",
            "--max_train_steps", "2", "--lr_warmup_steps", "0", "--guide_step", "1", "--guidance_scale", "1.5",
            "--sampler", "ddim", "--num_inference_steps", "2", "--eval_num_samples", "12", "--eval_batch_size", "6",
            "--logger", "none", "--output_dir", str(out), "--push_to_hub", "--hub_model_id", "mnist-entry"]
    script = subprocess.run([sys.executable, str(ROOT / "unit1" / "train_unconditional.py"), *args], env=hub_env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert script.returncode == 0, script.stderr[-3000:]
    notebook = run_python(NOTEBOOK_01_UPLOAD.format(folder=tmp_path / "notebook-run"), hub_env)
    assert notebook.returncode == 0, notebook.stderr[-3000:]
    assert "重みは手元のモデルと同じです" in notebook.stdout, notebook.stdout[-3000:]
    card = hub.uploads["course-learner/mnist-entry"]["README.md"].decode()
    assert "- diffusion-course-ja" in card and "12 samples" in card and "network evaluations per image" in card
    assert "- diffusion-course-ja" in hub.uploads["course-learner/ddpm-butterflies-32px"]["README.md"].decode()

    hostile_entries(hub, hub.uploads["course-learner/mnist-entry"]["unet/diffusion_pytorch_model.safetensors"])
    hub.page_size = 2  # five pages of two: the client must follow the Link header
    local = tmp_path / "board"
    (local / "local-run").mkdir(parents=True)
    (local / "local-run" / "recipe.json").write_text(
        (ROOT / "unit1" / "leaderboard" / "mnist-micro-v-3min" / "recipe.json").read_text())
    page = tmp_path / "page.md"
    page.write_text("<!-- leaderboard:start -->\n<!-- leaderboard:end -->\n<!-- leaderboard-rgb:start -->\n"
                    "<!-- leaderboard-rgb:end -->\n")
    command = [sys.executable, "-m", "tools.leaderboard", str(local), "--from-hub", "--verify", "--readme", str(page)]
    result = subprocess.run(command, env=hub_env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    lines = result.stdout.splitlines()
    reasons = {
        "mallory/bad-json": "recipe.json is not valid JSON",
        "mallory/wrong-types": "'train_minutes' must be a finite number or null, not str",
        "mallory/huge-recipe": "recipe.json is 2.0 GB",
        "mallory/pickled-only": "pickled weights only (unet/diffusion_pytorch_model.bin)",
        "mallory/gated": "gated",
        "mallory/deleted": "gone or closed since it was listed (RepositoryNotFoundError)",
    }
    for repo, reason in reasons.items():
        (line,) = [line for line in lines if line.startswith(f"skipped {repo}:")] or [result.stdout]
        assert reason in line, line
    assert not any("someone/untagged" in line for line in lines)  # without the course tag it is not an entry
    assert "collected 2 of 8 models tagged diffusion-course-ja" in result.stdout
    assert sum(r.startswith("GET /api/models") and "/" not in r[len("GET /api/models"):] for r in hub.requests) >= 4

    # the verified FID is the self-reported one: the same weights, sampler, steps, guidance and seed
    reported = json.loads((out / "recipe.json").read_text())["metrics"]
    entry = json.loads((local / "hub" / "course-learner--mnist-entry" / "entry.json").read_text())
    assert entry["verified"]["fid"] == pytest.approx(reported["fid"], rel=1e-9)
    assert entry["verified"]["agrees"] is True and entry["revision"] == hub.repos[("model", "course-learner/mnist-entry")].sha
    butterflies = json.loads((local / "hub" / "course-learner--ddpm-butterflies-32px" / "entry.json").read_text())
    assert butterflies["verified"]["note"].startswith("not verified")
    text = page.read_text()
    assert "[course-learner/mnist-entry](https://huggingface.co/course-learner/mnist-entry)" in text
    assert " ✓" in text and "local-run" in text
    rgb = text[text.index("<!-- leaderboard-rgb:start -->"):]
    assert "course-learner/ddpm-butterflies-32px" in rgb and "samples.png" in rgb and "未検証" in rgb
    collection = json.loads((local / "hub" / "collection.json").read_text())
    assert collection["listed"] == 8 and len(collection["skipped"]) == 6

    # a rerun lists again but scores only what changed; an entry gone from the Hub leaves the page
    hub.repos.pop(("model", "course-learner/ddpm-butterflies-32px"))
    again = subprocess.run(command, env=hub_env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "verified course-learner" not in again.stdout  # cached by revision
    assert "removed course-learner--ddpm-butterflies-32px" in again.stdout
    assert not (local / "hub" / "course-learner--ddpm-butterflies-32px").exists()


def test_the_listing_asks_only_for_fields_the_hub_knows(hub_env):
    result = run_python("""
        from huggingface_hub import HfApi
        from tools.hub_entries import EXPAND
        api = HfApi()
        print("LISTED", len(list(api.list_models(filter="diffusion-course-ja", expand=EXPAND))))
        try:
            list(api.list_models(filter="diffusion-course-ja", expand=["no-such-field"]))
        except Exception as error:
            print("REFUSED", type(error).__name__, getattr(getattr(error, "response", None), "status_code", None))
    """, hub_env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LISTED" in result.stdout and "400" in result.stdout.split("REFUSED")[1]
