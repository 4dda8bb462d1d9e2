"""benchmarks/autoguidance.py on a tiny, randomly initialised run folder (the real run needs a trained model)."""

import importlib.util

import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from safetensors.torch import save_file

from utils import repo_root

spec = importlib.util.spec_from_file_location("autoguidance_benchmark", repo_root() / "benchmarks" / "autoguidance.py")
benchmark = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark)


@pytest.fixture
def run_dir(tmp_path):
    """A finished run: the pipeline, an EMA checkpoint at step 2 and a raw-weights-only checkpoint at step 4."""
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                       norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"))
    folder = tmp_path / "run"
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=50)).save_pretrained(folder)
    for step, name in ((2, "ema"), (4, "model")):
        weights = {k: v + 0.05 * step * torch.randn_like(v) for k, v in unet.state_dict().items()}
        (folder / f"checkpoint-{step}").mkdir()
        save_file(weights, str(folder / f"checkpoint-{step}" / f"{name}.safetensors"))
    return folder


@pytest.mark.slow  # scores five settings
def test_table_has_the_reference_and_every_guide_and_scale(run_dir, one_thread):
    argv = [str(run_dir), "--guide_steps", "2", "4", "--scales", "1.5", "3", "--num_samples", "12", "--batch_size",
            "6", "--num_inference_steps", "2"]
    assert benchmark.main(argv) == 0
    table = (run_dir / "autoguidance.md").read_text(encoding="utf-8")
    rows = [line.split(" | ")[:2] for line in table.splitlines() if line.startswith("| ") and "強さ" not in line]
    assert rows == [["| なし", "1"], ["| 2", "1.5"], ["| 2", "3"], ["| 4", "1.5"], ["| 4", "3"]]
    assert f"`python benchmarks/autoguidance.py {' '.join(argv)}`" in table
    fids = [line.split(" | ")[2] for line in table.splitlines() if line.startswith("| ") and "強さ" not in line]
    assert len(set(fids)) > 1  # the guide changes the samples


def test_a_missing_checkpoint_names_the_ones_there_are(run_dir):
    with pytest.raises(SystemExit, match=r"no checkpoint for step\(s\) \[3\].*it has \[2, 4\]"):
        benchmark.main([str(run_dir), "--guide_steps", "3"])
    with pytest.raises(SystemExit, match="not a saved pipeline"):
        benchmark.main([str(run_dir / "checkpoint-2"), "--guide_steps", "2"])
