"""benchmarks/samplers.py on a tiny, randomly initialised pipeline (the real run needs a trained model)."""

import argparse
import importlib.util
import json

import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from PIL import Image

from utils import repo_root

spec = importlib.util.spec_from_file_location("samplers_benchmark", repo_root() / "benchmarks" / "samplers.py")
benchmark = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark)


def save_tiny_pipeline(folder, channels):
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=16, in_channels=channels, out_channels=channels, block_out_channels=(8, 16),
                       layers_per_block=1, norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"))
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=50)).save_pretrained(folder)
    return folder


def test_benchmark_writes_table_and_figure_for_a_grayscale_model(tmp_path):
    pipeline_dir = save_tiny_pipeline(tmp_path / "pipeline", channels=1)
    out = tmp_path / "images"
    argv = [str(pipeline_dir), "--num_samples", "12", "--batch_size", "6", "--steps", "3", "2",
            "--samplers", "ddim", "euler", "--ddpm_steps", "4", "--output_dir", str(out)]
    assert benchmark.main(argv) == 0
    table = (out / "samplers.md").read_text(encoding="utf-8")
    rows = [line for line in table.splitlines() if line.startswith("| ") and "ステップ数" not in line]
    assert [row.split(" | ")[:2] for row in rows] == [["| DDPM", "4"], ["| DDIM", "3"], ["| DDIM", "2"],
                                                      ["| Euler", "3"], ["| Euler", "2"]]
    assert all("—" not in row for row in rows)  # every setting has a metric and a time
    assert f"`python benchmarks/samplers.py {' '.join(argv)}`" in table
    with Image.open(out / "samplers.png") as image:
        assert image.format == "PNG"


def test_rgb_model_without_a_reference_reports_time_only(tmp_path, capsys):
    pipeline_dir = save_tiny_pipeline(tmp_path / "pipeline", channels=3)
    out = tmp_path / "images"
    argv = [str(pipeline_dir), "--num_samples", "10", "--steps", "2", "--samplers", "dpm++", "--ddpm_steps", "0",
            "--output_dir", str(out)]
    assert benchmark.main(argv) == 0
    assert "no quality metric" in capsys.readouterr().out
    row = [line for line in (out / "samplers.md").read_text(encoding="utf-8").splitlines()
           if line.startswith("| DPM-Solver++")]
    assert row and row[0].split(" | ")[2] == "2" and row[0].split(" | ")[3] == "—"  # 2 evaluations, no FID
    assert not (out / "samplers.png").exists()


def test_a_folder_without_a_pipeline_gets_a_clear_message(tmp_path):
    with pytest.raises(SystemExit, match="not a saved pipeline"):
        benchmark.main([str(tmp_path)])


def test_autoguidance_uses_the_saved_guide_and_needs_one(tmp_path):
    pipeline_dir = save_tiny_pipeline(tmp_path / "pipeline", channels=1)
    argv = [str(pipeline_dir), "--num_samples", "10", "--steps", "2", "--samplers", "ddim", "--ddpm_steps", "0",
            "--guidance_scale", "1.5", "--output_dir", str(tmp_path / "images")]
    with pytest.raises(SystemExit, match="needs the guide model"):
        benchmark.main(argv)
    torch.manual_seed(1)
    guide = UNet2DModel.from_pretrained(pipeline_dir / "unet")
    for parameter in guide.parameters():
        parameter.data.add_(0.1 * torch.randn_like(parameter))
    guide.save_pretrained(pipeline_dir / "guide_unet")
    assert benchmark.main(argv) == 0
    table = (tmp_path / "images" / "samplers.md").read_text(encoding="utf-8")
    assert "autoguidance を強さ 1.5 で" in table and "| DDIM | 2 |" in table


def test_settings_measure_exactly_those_with_their_network_evaluations(tmp_path):
    pipeline_dir = save_tiny_pipeline(tmp_path / "pipeline", channels=1)
    UNet2DModel.from_pretrained(pipeline_dir / "unet").save_pretrained(pipeline_dir / "guide_unet")
    out = tmp_path / "images"
    argv = [str(pipeline_dir), "--num_samples", "10", "--guidance_scale", "1.5", "--settings", "heun:3", "dpm++:4@0-25",
            "--output_dir", str(out)]
    assert benchmark.main(argv) == 0
    rows = json.loads((out / "samplers.json").read_text(encoding="utf-8"))["rows"]
    # Heun: 3 steps = 5 evaluations, each guided (x2); DPM-Solver++ on 50 training steps, trailing: t = 49, 37, 24, 12,
    # t = 49, 37, 24, 11: guided only at t <= 25 (2 of the 4)
    assert [(r["sampler"], r["steps"], r["evaluations"]) for r in rows] == [("heun", 3, 10), ("dpm++", 4, 6)]
    assert rows[1]["interval"] == [0.0, 25.0] and all("fid" in r for r in rows)
    table = (out / "samplers.md").read_text(encoding="utf-8")
    assert "| Heun | 3 | 10 |" in table and "ガイドは t = 0〜25 だけ" in table


@pytest.mark.parametrize("text", ["dpm++", "dpm++:x", "dpm++:0", "lms:10", "dpm++:10@500-100", "dpm++:10@1"])
def test_a_malformed_setting_is_refused_with_the_expected_form(text):
    with pytest.raises(argparse.ArgumentTypeError, match="SAMPLER:STEPS|unknown sampler|at least 1"):
        benchmark.parse_setting(text)


def test_replot_redraws_the_table_and_leaves_a_failed_setting_out_of_the_figure(tmp_path, capsys):
    out = tmp_path / "images"
    out.mkdir()
    rows = [{"sampler": "dpm++sde", "steps": 25, "interval": None, "evaluations": 50, "seconds_per_image": 0.2,
             "cpu_seconds_per_image": 0.4, "fid": 0.56, "fid_floor": 0.2, "coverage": 0.99, "confidence": 0.94},
            {"sampler": "heun", "steps": 13, "interval": None, "evaluations": 50, "seconds_per_image": 0.2,
             "cpu_seconds_per_image": 0.4, "fid": 409.0, "fid_floor": 0.2, "coverage": 0.1, "confidence": 1.0}]
    command = f"python benchmarks/samplers.py run --guidance_scale 1.5 --num_samples 1000 --output_dir {out}"
    (out / "samplers.json").write_text(json.dumps({"command": command, "rows": rows}), encoding="utf-8")
    assert benchmark.main(["--replot", "--output_dir", str(out)]) == 0
    table = (out / "samplers.md").read_text(encoding="utf-8")
    assert "| DPM-Solver++ SDE | 25 | 50 | 0.56 | 2.80× |" in table and "| Heun | 13 | 50 | 409 |" in table
    assert f"作成コマンド: `{command}`" in table and "強さ 1.5" in table and "1000 枚" in table
    figure = benchmark.plot(rows)
    assert "図の範囲外（生成に失敗）: Heun 13 ステップ（FID 409）" in [t.get_text() for t in figure.texts]
    assert [line.get_label() for line in figure.axes[0].get_lines()][0] == "DPM-Solver++ SDE"
    with pytest.raises(SystemExit, match="needs .*samplers.json"):
        benchmark.main(["--replot", "--output_dir", str(tmp_path / "none")])
