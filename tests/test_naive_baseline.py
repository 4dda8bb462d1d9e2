"""benchmarks/naive_baseline.py: the seed course's recipe, scored and written as a leaderboard recipe."""

import importlib.util
import json

import pytest
import torch

from tools.leaderboard import leaderboard_markdown, load_recipes
from utils import repo_root
from utils.recipe import recipe_problems

spec = importlib.util.spec_from_file_location("naive_baseline", repo_root() / "benchmarks" / "naive_baseline.py")
baseline = importlib.util.module_from_spec(spec)
spec.loader.exec_module(baseline)



def test_the_baseline_runs_the_notebooks_own_definitions():
    lesson = baseline.notebook_definitions()
    net = lesson["BasicUNet"]()
    assert type(net).__module__ != baseline.__name__  # compiled from the notebook, not defined in the benchmark
    assert 300_000 < sum(p.numel() for p in net.parameters()) < 320_000  # the seed course's size
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 1, 28, 28)
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(lesson["corrupt"](x, torch.zeros(4)), x)


def test_a_notebook_without_the_definitions_is_an_error(tmp_path):
    notebook = tmp_path / "renamed.ipynb"
    notebook.write_text(json.dumps({"cells": [{"cell_type": "code", "source": ["class BasicUNet2: pass\n"]}]}))
    with pytest.raises(RuntimeError, match="no longer defines BasicUNet, corrupt, sample_naive"):
        baseline.notebook_definitions(notebook=notebook)


def test_sampling_ends_at_the_prediction_of_the_last_step():
    class Constant(torch.nn.Module):
        def forward(self, x):
            return torch.full_like(x, 0.25)

    sample_naive = baseline.notebook_definitions()["sample_naive"]
    samples = baseline.sample(sample_naive, Constant(), 5, 4, torch.Generator().manual_seed(0), batch_size=2)
    assert samples.shape == (5, 1, 28, 28) and torch.allclose(samples, torch.full_like(samples, 0.25))


@pytest.mark.slow
def test_a_short_run_writes_a_recipe_the_leaderboard_reads(tmp_path, one_thread):
    out = tmp_path / "naive-baseline"
    recipe = baseline.main(["--output_dir", str(out), "--train_steps", "3", "--batch_size", "8",
                            "--sampling_steps", "2", "--eval_num_samples", "20"])
    saved = json.loads((out / "recipe.json").read_text(encoding="utf-8"))
    assert saved == json.loads(json.dumps(recipe))
    assert saved["command"].startswith("python benchmarks/naive_baseline.py --output_dir")
    assert saved["images_seen"] == 24 and saved["metrics"]["num_samples"] == 20
    assert 0 <= saved["metrics"]["coverage"] <= 1 and saved["metrics"]["fid"] > saved["metrics"]["fid_floor"]
    assert (out / "samples" / "final.png").is_file()
    assert recipe_problems(saved) == []
    assert "naive-baseline" in leaderboard_markdown(load_recipes([out]))
