"""unit1/train_unconditional.py: tiny end-to-end runs on generated images, checkpoints, exact resume, bad input."""

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from training_script import load_script

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "unit1" / "train_unconditional.py"
TINY_UNET = {"block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4, "attention_head_dim": 4,
             "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"]}
NUM_GOOD_IMAGES = 10


script = load_script()


@pytest.fixture(autouse=True)
def one_thread_and_fresh_accelerate_state(one_thread):
    """Tiny models run fastest on one thread; each run gets a fresh Accelerate singleton state."""
    from accelerate.state import AcceleratorState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A folder of images of mixed modes and sizes plus two broken files, and a tiny UNet config."""
    root = tmp_path_factory.mktemp("data")
    folder = root / "images"
    (folder / "nested").mkdir(parents=True)
    rng = np.random.default_rng(0)
    modes = ["RGB", "L", "RGBA", "P", "LA"]
    for i in range(NUM_GOOD_IMAGES):
        w, h = 8 + 3 * i, 10 + i
        array = np.zeros((h, w, 3), np.uint8)
        array[..., i % 3] = rng.integers(100, 256, (h, w))
        target = folder / "nested" if i % 4 == 0 else folder
        Image.fromarray(array).convert(modes[i % len(modes)]).save(target / f"{i:02d}.png")
    (folder / "corrupt.png").write_bytes(b"this is not an image")
    good = (folder / "01.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "empty").mkdir()
    config = root / "tiny_unet.json"
    config.write_text(json.dumps(TINY_UNET))
    return {"folder": folder, "config": config, "empty": root / "empty"}


def cli_args(data, output_dir, *extra, folder=True) -> list[str]:
    """Arguments for a tiny run (on the generated folder unless ``folder`` is False or ``extra`` names a data
    source). Later flags override earlier ones."""
    args = ["--model_config_name_or_path", str(data["config"]), "--resolution", "8", "--train_batch_size", "4",
            "--eval_batch_size", "2", "--num_inference_steps", "2", "--lr_warmup_steps", "0", "--logger", "none",
            "--output_dir", str(output_dir)]
    if folder and "--dataset_name" not in extra and "--train_data_dir" not in extra:
        args += ["--train_data_dir", str(data["folder"])]
    return [*args, *extra]


def run(data, output_dir, *extra, folder=True) -> int:
    """Run the script in-process; returns the exit code."""
    return script.main(cli_args(data, output_dir, *extra, folder=folder))


def recipe(output_dir) -> dict:
    return json.loads((Path(output_dir) / "recipe.json").read_text())


def unet_weights(output_dir) -> dict:
    return load_file(str(Path(output_dir) / "unet" / "diffusion_pytorch_model.safetensors"))


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def checkpoint_steps(output_dir) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in Path(output_dir).glob("checkpoint-*"))


def test_help_runs_and_every_recorded_leaderboard_command_still_parses(capsys):
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "v_prediction" in text and "micro-conv" in text and "dpm++" in text
    commands = [json.loads(path.read_text())["command"] for path in (ROOT / "unit1" / "leaderboard").glob("*/recipe.json")]
    script_commands = [shlex.split(c) for c in commands if "unit1/train_unconditional.py" in c]
    assert len(script_commands) >= 10
    for words in script_commands:
        assert words[:2] == ["python", "unit1/train_unconditional.py"], words
        args = script.parse_args(words[2:])  # argparse exits (fails the test) on a flag the script no longer has
        assert args.output_dir.startswith("outputs/leaderboard/")


@pytest.mark.parametrize("flag", ["--local_rank=0", "--ddpm_num_inference_steps=5", "--center_crop",
                                  "--dataloader_num_workers=2"])
def test_retired_flags_are_refused(flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        script.parse_args(["--output_dir", "x", flag])
    assert exit_info.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


@pytest.mark.parametrize("use_ema", [True, False], ids=["ema", "no-ema"])
def test_end_to_end_run_saves_a_loadable_pipeline(data, tmp_path, use_ema):
    from diffusers import DDPMPipeline

    out = tmp_path / "run"
    extra = ["--use_ema", "--snr_gamma", "5"] if use_ema else []  # the EMA run also covers Min-SNR weighting
    code = run(data, out, "--num_epochs", "2", "--save_images_epochs", "1", "--checkpointing_steps", "3",
               "--logger", "tensorboard", "--random_flip", *extra)
    assert code == 0
    record = recipe(out)
    # 10 readable images (mixed modes and sizes, converted), 2 broken ones skipped: 3 batches per epoch.
    assert record["num_train_images"] == NUM_GOOD_IMAGES and record["skipped_images"] == 2
    assert record["channels"] == 3 and record["optimizer_steps"] == 6 and record["images_seen"] == 2 * NUM_GOOD_IMAGES
    for key in ("command", "dataset", "resolution", "model_size", "num_parameters", "train_batch_size",
                "learning_rate", "lr_scheduler", "adam_beta1", "use_ema", "ema_max_decay", "device", "num_processes",
                "mixed_precision", "train_minutes", "images_seen", "optimizer_steps", "final_loss", "versions",
                "metrics"):
        assert key in record, key
    assert record["command"].startswith("python ") and "--num_epochs 2" in record["command"]
    assert record["num_processes"] == 1 and record["metrics"] == {} and np.isfinite(record["final_loss"])
    assert record["num_parameters"] == sum(v.numel() for v in unet_weights(out).values())
    assert "torch" in record["versions"]
    assert record["snr_gamma"] == (5.0 if use_ema else None)

    # The pipeline: safetensors, loadable, and the published weights are the EMA ones when EMA is on.
    pipeline = DDPMPipeline.from_pretrained(out)
    assert pipeline.unet.config.in_channels == 3 and pipeline.unet.config.sample_size == 8
    image = pipeline(num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert image.shape == (1, 8, 8, 3)
    assert not list((out / "unet").glob("*.bin"))
    last = out / "checkpoint-6"
    published = unet_weights(out)
    raw = load_file(str(last / "model.safetensors"))
    if use_ema:
        assert_same_weights(published, load_file(str(last / "ema.safetensors")))
        assert any(not torch.equal(published[k], raw[k]) for k in raw)
    else:
        assert not (last / "ema.safetensors").exists()
        assert_same_weights(published, raw)

    # Previews (epoch 1 and the final grid) as PNG and in TensorBoard; the model card carries the recipe.
    for name in ("epoch_0001.png", "final.png"):
        with Image.open(out / "samples" / name) as grid:
            assert grid.mode == "RGB" and grid.width > 8
    assert list((out / "logs").rglob("events.out.tfevents.*"))
    card = (out / "README.md").read_text()
    assert "recipe.json" in card and "samples/final.png" in card and '"optimizer_steps": 6' in card


def test_grayscale_mnist_offline_fallback(data, tmp_path):
    out = tmp_path / "mnist"
    assert run(data, out, "--dataset_name", "mnist", "--max_train_samples", "8", "--max_train_steps", "2") == 0
    record = recipe(out)
    assert record["channels"] == 1 and record["dataset"] == "mnist" and "MNIST" in record["dataset_fallback"]
    assert unet_weights(out)["conv_in.weight"].shape[1] == 1
    with Image.open(out / "samples" / "final.png") as grid:
        assert grid.mode == "L"


def test_default_dataset_is_the_labelled_butterfly_fallback(data, tmp_path):
    out = tmp_path / "default"
    assert run(data, out, "--max_train_samples", "4", "--max_train_steps", "1", folder=False) == 0
    record = recipe(out)
    assert record["dataset"] == "huggan/smithsonian_butterflies_subset" and record["dataset_fallback"]
    assert record["channels"] == 3


def test_checkpoint_limit_and_resume(data, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--checkpointing_steps", "2", "--checkpoints_total_limit", "2"]
    assert run(data, out, "--max_train_steps", "6", *common) == 0
    assert checkpoint_steps(out) == [4, 6]  # the newest two, as in the Diffusers example
    state = json.loads((out / "checkpoint-6" / "training_state.json").read_text())
    assert state["step"] == 6 and state["images_seen"] == 6 * 4 - 2 * 2  # two short last batches (10 = 4+4+2)

    # Starting again in the same folder without saying what to do with the checkpoints is refused.
    assert run(data, out, "--max_train_steps", "6", *common) == 2
    assert "--resume_from_checkpoint latest" in capsys.readouterr().err
    assert checkpoint_steps(out) == [4, 6]

    # A half-written checkpoint left by a kill is never picked by 'latest', and it is cleaned up.
    (out / ".checkpoint-8.tmp").mkdir()
    assert run(data, out, "--max_train_steps", "10", "--resume_from_checkpoint", "latest", *common) == 0
    assert "Resumed from" in capsys.readouterr().out
    assert checkpoint_steps(out) == [8, 10] and not (out / ".checkpoint-8.tmp").exists()
    assert recipe(out)["optimizer_steps"] == 10

    # An explicit checkpoint by name; --overwrite_output_dir starts over and deletes the old ones.
    assert run(data, out, "--max_train_steps", "12", "--resume_from_checkpoint", "checkpoint-8", *common) == 0
    assert checkpoint_steps(out) == [10, 12]
    assert run(data, out, "--max_train_steps", "2", "--overwrite_output_dir", *common) == 0
    assert checkpoint_steps(out) == [2]


def test_gradient_accumulation_and_bf16_autocast(data, tmp_path):
    out = tmp_path / "accumulate"
    assert run(data, out, "--max_train_steps", "2", "--gradient_accumulation_steps", "2", "--mixed_precision",
               "bf16") == 0
    record = recipe(out)
    # 2 updates x 2 micro-batches: batches of 4, 4, 2 (end of the 10-image epoch), 4.
    assert record["optimizer_steps"] == 2 and record["images_seen"] == 14 and record["effective_batch_size"] == 8
    assert record["mixed_precision"] == "bf16" and np.isfinite(record["final_loss"])
    assert unet_weights(out)["conv_in.weight"].dtype == torch.float32  # autocast keeps float32 weights


def test_torch_compile_flag_compiles_the_training_model(data, tmp_path, monkeypatch):
    """The wiring only: a real inductor compile takes minutes on a small CPU, too long for the test suite."""
    compiled = []

    def fake_compile(model, **kwargs):
        compiled.append((model, kwargs))
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    assert run(data, tmp_path / "compiled", "--max_train_steps", "1", "--torch_compile") == 0
    (model, kwargs), = compiled
    assert kwargs["backend"] == "inductor" and isinstance(model, torch.nn.Module)


def test_autoguidance_guide_is_the_ema_at_guide_step_and_survives_resume(data, tmp_path):
    from diffusers import DDPMPipeline

    from utils.sampling import load_guide

    common = ["--use_ema", "--checkpointing_steps", "2", "--guide_step", "2", "--guidance_scale", "2"]
    out = tmp_path / "guided"
    assert run(data, out, "--max_train_steps", "4", *common) == 0
    guide = load_guide(out)
    ema_at_2 = load_file(str(out / "checkpoint-2" / "ema.safetensors"))
    assert_same_weights(guide.state_dict(), ema_at_2)
    assert_same_weights(load_file(str(out / "checkpoint-4" / "guide.safetensors")), ema_at_2)
    assert not all(torch.equal(v, ema_at_2[k]) for k, v in unet_weights(out).items())  # the model moved on
    assert recipe(out)["guide_step"] == 2 and recipe(out)["guidance_scale"] == 2
    assert DDPMPipeline.from_pretrained(out).unet.config.sample_size == 8  # the extra folder does not get in the way

    # Resuming after --guide_step takes the guide from the checkpoint.
    assert run(data, out, "--max_train_steps", "6", *common, "--resume_from_checkpoint", "latest") == 0
    assert_same_weights(load_guide(out).state_dict(), ema_at_2)

    # A new run without autoguidance in the same folder removes the old guide.
    assert run(data, out, "--max_train_steps", "1", "--overwrite_output_dir") == 0
    assert load_guide(out) is None and not (out / "guide_unet").exists()


def test_resume_latest_without_checkpoints_starts_fresh(data, tmp_path, capsys):
    assert run(data, tmp_path / "new", "--max_train_steps", "1", "--resume_from_checkpoint", "latest") == 0
    assert "starting a new run" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["memory", "disk"])
def test_killed_run_resumes_to_identical_weights(data, tmp_path, storage):
    """SIGKILL a run right after its first checkpoint, resume it, and compare with an uninterrupted run; with the
    images in memory and in the on-disk cache (which the resumed run reuses)."""
    common = ["--max_train_steps", "24", "--checkpointing_steps", "4", "--use_ema", "--random_flip",
              "--lr_warmup_steps", "3", "--save_images_epochs", "1000", "--data_storage", storage]
    killed, full = tmp_path / "killed", tmp_path / "full"
    process = subprocess.Popen([sys.executable, str(SCRIPT), *cli_args(data, killed, *common)],
                               env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def kill_after_first_checkpoint():
        deadline = time.monotonic() + 240
        while not (killed / "checkpoint-4").exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait()

    killer = threading.Thread(target=kill_after_first_checkpoint)
    killer.start()
    assert run(data, full, *common) == 0  # the uninterrupted run, in this process meanwhile
    killer.join()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "model_index.json").exists() and (killed / "checkpoint-4").exists()

    assert run(data, killed, *common, "--resume_from_checkpoint", "latest") == 0
    assert_same_weights(unet_weights(killed), unet_weights(full))
    assert_same_weights(load_file(str(killed / "checkpoint-24" / "model.safetensors")),
                        load_file(str(full / "checkpoint-24" / "model.safetensors")))
    assert recipe(killed)["images_seen"] == recipe(full)["images_seen"]
    assert recipe(killed)["final_loss"] == recipe(full)["final_loss"]
    assert recipe(killed)["image_storage"] == storage
    assert (len(list((killed / ".image-cache").glob("*.u8"))) == 1) == (storage == "disk")


def test_images_on_disk_train_exactly_like_images_in_memory(data, tmp_path, capsys, monkeypatch):
    common = ["--max_train_steps", "3", "--random_flip", "--channels", "1"]
    assert run(data, tmp_path / "memory", *common, "--data_storage", "memory") == 0
    assert "kept in memory (--data_storage memory)" in capsys.readouterr().out
    from utils import data as data_module

    monkeypatch.setattr(data_module, "memory_available", lambda: 999)  # auto: 10 images at 8 px do not "fit" in 999 B
    assert run(data, tmp_path / "disk", *common) == 0
    out = capsys.readouterr().out
    assert "kept in an on-disk cache" in out and "640 B would take more than half of the 999 B of memory available" in out
    assert_same_weights(unet_weights(tmp_path / "disk"), unet_weights(tmp_path / "memory"))
    assert recipe(tmp_path / "disk")["image_storage"] == "disk"
    assert recipe(tmp_path / "disk")["skipped_images"] == recipe(tmp_path / "memory")["skipped_images"] == 2

    assert run(data, tmp_path / "disk", *common, "--overwrite_output_dir") == 0  # the same data: decoded once
    assert "reusing the decoded images" in capsys.readouterr().out
    assert_same_weights(unet_weights(tmp_path / "disk"), unet_weights(tmp_path / "memory"))
    assert run(data, tmp_path / "disk", *common, "--overwrite_output_dir", "--resolution", "16") == 0
    assert "reusing" not in capsys.readouterr().out  # another resolution is other data
    assert len(list((tmp_path / "disk" / ".image-cache").glob("*.u8"))) == 1  # the old cache was replaced


def test_a_cache_that_cannot_be_written_stops_with_a_message(data, tmp_path, capsys, monkeypatch):
    import shutil as shutil_module

    from utils import data as data_module

    usage = shutil_module.disk_usage(tmp_path)
    monkeypatch.setattr(data_module.shutil, "disk_usage", lambda path: usage._replace(free=100))
    assert run(data, tmp_path / "full-disk", "--max_train_steps", "1", "--data_storage", "disk") == 2
    error = capsys.readouterr().err
    assert "on-disk image cache needs" in error and "only 100 B free" in error and "--max_train_samples" in error
    assert not list((tmp_path / "full-disk").glob("unet"))  # nothing trained


@pytest.mark.slow
def test_two_cpu_processes_train_different_shards_in_sync(data, tmp_path):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(SCRIPT),
               "--train_data_dir", str(data["folder"]), "--model_config_name_or_path", str(data["config"]),
               "--resolution", "8", "--train_batch_size", "2", "--max_train_steps", "3", "--use_ema",
               "--checkpointing_steps", "3", "--logger", "none", "--eval_batch_size", "2", "--num_inference_steps", "2",
               "--output_dir", str(out)]
    result = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    record = recipe(out)
    assert record["num_processes"] == 2 and record["command"].startswith("torchrun --nproc_per_node 2")
    assert record["images_seen"] == (2 + 2 + 1) * 2  # 5 images per process: batches of 2, 2 and 1
    ranks = sorted(record["processes"], key=lambda p: p["rank"])
    assert [p["rank"] for p in ranks] == [0, 1]
    assert not set(ranks[0]["first_batch"]) & set(ranks[1]["first_batch"])  # different shards
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]  # replicas stayed in sync
    assert len(list(tmp_path.rglob("model_index.json"))) == 1 and len(list(tmp_path.rglob("recipe.json"))) == 1
    assert result.stdout.count("Saved the pipeline") == 1
    assert sorted(p.name for p in (out / "checkpoint-3").glob("random_states_*")) == ["random_states_0.pkl",
                                                                                      "random_states_1.pkl"]


def test_metrics_are_recorded_in_recipe_and_model_card(data, tmp_path, monkeypatch):
    """utils.metrics.evaluate_pipeline is replaced by a recorder: this tests the script's side of the contract."""
    from utils import metrics

    calls = []

    def fake_evaluate_pipeline(pipeline, num_samples, batch_size, sampler, num_inference_steps, seed, reference=None,
                               guide=None, guidance_scale=1.0, guide_interval=None):
        calls.append(dict(pipeline=pipeline, num_samples=num_samples, batch_size=batch_size, sampler=sampler,
                          num_inference_steps=num_inference_steps, seed=seed, reference=reference, guide=guide,
                          guidance_scale=guidance_scale, guide_interval=guide_interval))
        return {"fid": 1.25}  # a score the card reports in model-index

    monkeypatch.setattr(metrics, "evaluate_pipeline", fake_evaluate_pipeline)
    monkeypatch.setattr(metrics, "MIN_SAMPLES", 5)
    out = tmp_path / "eval"
    assert run(data, out, "--max_train_steps", "1", "--eval_num_samples", "6", "--sampler", "euler", "--seed",
               "3") == 0
    (call,) = calls
    assert call["pipeline"].unet.config.sample_size == 8
    assert (call["num_samples"], call["batch_size"], call["sampler"], call["num_inference_steps"], call["seed"]) == (
        6, 2, "euler", 2, 3)
    reference = call["reference"]  # RGB models are compared with the real training images
    assert reference.shape == (NUM_GOOD_IMAGES, 3, 8, 8) and reference.min() >= -1 and reference.max() <= 1
    assert recipe(out)["metrics"] == {"fid": 1.25}
    card = (out / "README.md").read_text()
    assert "model-index" in card and "value: 1.25" in card
    assert call["guide"] is None and call["guidance_scale"] == 1.0

    guided = tmp_path / "guided"  # with autoguidance, the metrics sample with the guide of --guide_step
    assert run(data, guided, "--max_train_steps", "2", "--guide_step", "1", "--guidance_scale", "1.5",
               "--eval_num_samples", "6") == 0
    call = calls[-1]
    assert call["guidance_scale"] == 1.5 and call["guide"] is not None
    assert recipe(guided)["network_evaluations"] == 4 and recipe(out)["network_evaluations"] == 2  # 2 steps, x2 guided

    interval = tmp_path / "interval"  # guided only at t <= 500: 2 trailing steps are t = 999 and 499
    assert run(data, interval, "--max_train_steps", "2", "--guide_step", "1", "--guidance_scale", "1.5",
               "--guide_interval", "0", "500", "--eval_num_samples", "6") == 0
    assert calls[-1]["guide_interval"] == (0.0, 500.0) and recipe(interval)["network_evaluations"] == 3
    assert_same_weights(call["guide"].state_dict(),
                        load_file(str(guided / "guide_unet" / "diffusion_pytorch_model.safetensors")))

    assert run(data, tmp_path / "few", "--eval_num_samples", "4") == 2  # below MIN_SAMPLES: refused up front


BAD_INPUTS = {
    "unknown dataset": (["--dataset_name", "nobody/no-such-dataset"], "no offline fallback"),
    "unknown column": (["--dataset_name", "mnist", "--image_column", "pixels"], "no column 'pixels'"),
    "missing folder": (["--train_data_dir", "{tmp}/nowhere"], "does not exist"),
    "empty folder": (["--train_data_dir", "{empty}"], "contains no readable images"),
    "only broken images": (["--train_data_dir", "{broken}"], "no readable images"),
    "both data sources": (["--dataset_name", "mnist", "--train_data_dir", "{empty}"], "not both"),
    "indivisible resolution": (["--resolution", "9"], "multiple of 2"),
    "bad model config": (["--model_config_name_or_path", "{tmp}/none.json"], "Cannot read a UNet2DModel config"),
    "missing checkpoint": (["--resume_from_checkpoint", "{tmp}/checkpoint-99"], "does not exist"),
    "push offline": (["--push_to_hub"], "not reachable"),
    "token on the command line": (["--hub_token", "hf_secret"], "hf auth login"),
    "fp16 on cpu": (["--mixed_precision", "fp16", "--cpu"], "needs a CUDA GPU"),
    "zero batch size": (["--train_batch_size", "0"], "at least 1"),
    "non-positive snr gamma": (["--snr_gamma", "0"], "--snr_gamma must be positive"),
    "snr plus one without a gamma": (["--prediction_type", "v_prediction", "--snr_plus_one"], "add --snr_gamma"),
    "guidance without a guide": (["--guidance_scale", "2"], "needs a guide: add --guide_step"),
    "reversed guide interval": (["--guide_interval", "500", "0"], "needs 0 <= LO <= HI <="),
    # with --max_train_steps, before any data is loaded (the folder does not exist); else once the data sets the steps
    "guide after the last step": (["--train_data_dir", "{tmp}/nowhere", "--max_train_steps", "3", "--guide_step", "3",
                                   "--guidance_scale", "2"], "--guide_step 3 must come before the last of the 3"),
    "guide after the last epoch's step": (["--num_epochs", "1", "--guide_step", "50", "--guidance_scale", "2"],
                                          "--guide_step 50 must come before the last of the"),
    "ema min decay of 1": (["--use_ema", "--ema_min_decay", "1"], "--ema_min_decay must be at least 0 and below 1"),
    "guide interval past the timesteps": (["--guide_interval", "0", "2000"],
                                          "needs 0 <= LO <= HI <= --ddpm_num_steps 1000, got 0 2000."),
    # Every number in its range (utils.training.SETTING_BOUNDS), before any data is loaded: the option, the range, a fix.
    "negative learning rate": (["--learning_rate", "-1"], "--learning_rate must be positive, got -1 (1e-4 is the usual"),
    "learning rate not a number": (["--learning_rate", "nan"], "--learning_rate must be positive, got nan"),
    "adam beta2 of 1.5": (["--adam_beta2", "1.5"], "--adam_beta2 must be at least 0 and below 1, got 1.5 (usually 0.99"),
    "adam beta1 of 1": (["--adam_beta1", "1"], "--adam_beta1 must be at least 0 and below 1, got 1 (usually 0.9"),
    "adam epsilon of 0": (["--adam_epsilon", "0"], "--adam_epsilon must be positive, got 0 (1e-8 is the usual value)"),
    "negative weight decay": (["--adam_weight_decay", "-0.1"], "--adam_weight_decay must be at least 0, got -0.1 (0: no"),
    "negative warm-up": (["--lr_warmup_steps", "-5"], "--lr_warmup_steps must be at least 0, got -5 (0: no warm-up)"),
    "negative clipping norm": (["--max_grad_norm", "-1"], "--max_grad_norm must be at least 0, got -1 (0: no clipping)"),
    "ema decay above 1": (["--use_ema", "--ema_max_decay", "2"], "--ema_max_decay must be between 0 and 1, got 2 (0.9999"),
    "negative ema min decay": (["--use_ema", "--ema_min_decay", "-0.5"], "--ema_min_decay must be at least 0 and below"),
    "ema decays reversed": (["--use_ema", "--ema_min_decay", "0.5", "--ema_max_decay", "0.4"],
                            "--ema_min_decay 0.5 is above --ema_max_decay 0.4: the smallest EMA decay cannot exceed"),
    "ema power of 0": (["--use_ema", "--ema_power", "0"], "--ema_power must be positive, got 0 (0.75 for long runs"),
    "ema inv_gamma of 0": (["--use_ema", "--ema_inv_gamma", "0"], "--ema_inv_gamma must be positive, got 0 (1 is the"),
    "guidance scale of 0": (["--guidance_scale", "0"], "--guidance_scale must be positive, got 0 (1: no guidance"),
    "negative guide interval": (["--guide_interval", "-1", "500"], "--guide_interval must be at least 0, got -1"),
    "zero guide step": (["--guide_step", "0"], "--guide_step must be at least 1, got 0."),
    "zero sampling steps": (["--num_inference_steps", "0"], "--num_inference_steps must be at least 1, got 0."),
    "more sampling steps than timesteps": (["--num_inference_steps", "50", "--ddpm_num_steps", "10"],
                                           "--num_inference_steps 50 is more than the model's --ddpm_num_steps 10"),
    "zero eval batch size": (["--eval_batch_size", "0"], "--eval_batch_size must be at least 1, got 0."),
    "negative eval samples": (["--eval_num_samples", "-1"], "--eval_num_samples must be at least 0, got -1 (0: no eval"),
    "negative checkpointing steps": (["--checkpointing_steps", "-1"], "--checkpointing_steps must be at least 0, got"),
    "zero checkpoint limit": (["--checkpoints_total_limit", "0"], "--checkpoints_total_limit must be at least 1, got 0"),
    "negative seed": (["--seed", "-1"], "--seed must be between 0 and 4294967295, got -1."),
    "output dir is a file": (["--output_dir", "{file}"], "is a file, not a folder: choose another --output_dir"),
    "output dir inside a file": (["--output_dir", "{file}/run"], "which is a file, not a folder: choose another"),
    # A setting a library refuses deep inside is named by the script (here diffusers' polynomial schedule, whose
    # final learning rate 1e-7 must stay below the peak).
    "learning rate below the polynomial schedule's end": (
        ["--learning_rate", "1e-8", "--lr_scheduler", "polynomial"],
        "diffusers' learning-rate schedule refused these settings: --lr_scheduler polynomial, --learning_rate 1e-08"),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_gives_a_message_and_exit_code_2(data, tmp_path, capsys, name):
    extra, message = BAD_INPUTS[name]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.jpg").write_bytes(b"\xff\xd8 broken")
    (tmp_path / "a-file").write_text("not a folder")
    paths = {"tmp": tmp_path, "empty": data["empty"], "broken": broken, "file": tmp_path / "a-file"}
    extra = [item.format(**paths) for item in extra]
    out = tmp_path / "out"
    assert run(data, out, *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert err.count("\n") == 1, "one line"
    assert not (out / "recipe.json").exists()


@pytest.mark.parametrize("extra, message", [
    (["--adam_beta2", "1.5"], "torch.optim.AdamW refused these settings: --learning_rate 0.0001, --adam_beta1 0.95, "
                              "--adam_beta2 1.5, --adam_epsilon 1e-08, --adam_weight_decay 1e-06 (Invalid beta "
                              "parameter at index 1: 1.5). Change one of these options."),
    (["--learning_rate", "-1"], "torch.optim.AdamW refused these settings: --learning_rate -1.0"),
    (["--sampler", "ddim", "--num_inference_steps", "50", "--ddpm_num_steps", "10"],
     "The sampler ddim refused these settings: --sampler ddim, --num_inference_steps 50, --ddpm_num_steps 10"),
])
def test_a_setting_a_library_refuses_is_named_instead_of_a_traceback(data, tmp_path, capsys, monkeypatch, extra,
                                                                     message):
    """Behind the range table, whatever torch or diffusers raise for a setting still stops with the option named."""
    monkeypatch.setattr(script, "check_args", lambda args: None)  # as if the checks up front had missed it
    assert run(data, tmp_path / "out", *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_a_genuine_bug_still_shows_its_traceback(data, tmp_path, monkeypatch):
    def broken_loss(*args, **kwargs):
        raise ValueError("a bug in the training step")

    monkeypatch.setattr(script, "diffusion_loss", broken_loss)
    with pytest.raises(ValueError, match="a bug in the training step"):
        run(data, tmp_path / "bug", "--max_train_steps", "1")


def test_a_gpu_that_cannot_start_trains_on_the_cpu(data, tmp_path, capsys, monkeypatch):
    """torch.cuda.is_available() says yes, but the driver is too old: the run falls back to the CPU with the message."""
    from utils import environment

    real_is_available = torch.cuda.is_available

    def driver_too_old(*args):
        # Only the course's check (cached) sees the GPU: a CUDA build of torch (PyPI's) also asks is_available() in
        # optimizer.step() and then talks to the driver, which a machine without one cannot answer
        monkeypatch.setattr(torch.cuda, "is_available", real_is_available)
        raise RuntimeError("The NVIDIA driver on your system is too old (found version 11040).")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", driver_too_old)
    environment.cuda_problem.cache_clear()
    try:
        assert run(data, tmp_path / "out", "--max_train_steps", "1") == 0
    finally:
        environment.cuda_problem.cache_clear()
    assert "初期化できませんでした" in capsys.readouterr().out
    assert recipe(tmp_path / "out")["device"].startswith("cpu")


def test_offline_dataset_configuration_is_said_to_be_unchecked(data, tmp_path, capsys):
    out = tmp_path / "mnist"
    assert run(data, out, "--dataset_name", "mnist", "--dataset_config_name", "nope", "--max_train_samples", "8",
               "--max_train_steps", "1") == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if "--dataset_config_name" in line]
    assert "'nope'" in line and "確かめられず" in line and "指定を外してください" in line
    assert recipe(out)["dataset_config_name"] == "nope" and recipe(out)["dataset_fallback"]


def test_hub_dataset_options_with_a_folder_are_said_to_be_ignored(data, tmp_path, capsys):
    assert run(data, tmp_path / "out", "--dataset_config_name", "nope", "--image_column", "pixels",
               "--max_train_steps", "1") == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "is ignored" in line]
    assert [line.split(" is ignored")[0] for line in lines] == ["⚠ --dataset_config_name 'nope'",
                                                                 "⚠ --image_column 'pixels'"]
    assert all(line.endswith("--train_data_dir uses every image of the folder. Leave it out.") for line in lines)


def test_decoded_images_that_cannot_be_allocated_stop_with_a_message(data, tmp_path, capsys, monkeypatch):
    real_empty = torch.empty

    def refusing_empty(*shape, **kwargs):
        if kwargs.get("dtype") is torch.uint8 and len(shape) == 1 and len(shape[0]) == 4:
            raise RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 1000000000000 bytes.")
        return real_empty(*shape, **kwargs)

    monkeypatch.setattr(script.torch, "empty", refusing_empty)
    assert run(data, tmp_path / "out", "--data_storage", "memory") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: The decoded images need 1.9 KB of memory") and "--data_storage disk" in err


def test_push_without_login_stops_before_training(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(script, "is_online", lambda: True)
    monkeypatch.setattr(script, "is_logged_in", lambda: False)
    assert run(data, tmp_path / "out", "--push_to_hub") == 2
    assert "not logged in" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing was trained or written
