"""The training step of unit1/train_unconditional.py (loss, Min-SNR, scaling and flips) and its helpers in
utils.training and utils.checkpoints (EMA, data sharding, model sizes, checkpoints)."""

import argparse
import json
from types import SimpleNamespace

import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from training_script import load_script

from utils.checkpoints import (
    finish_checkpoint,
    list_checkpoints,
    remove_unfinished,
    resolve_checkpoint,
    save_pipeline_atomically,
    temporary_name,
)
from utils.training import (
    EMA,
    MODEL_SIZES,
    SETTING_BOUNDS,
    Bounds,
    ConfigError,
    ShardedBatches,
    TrainingClock,
    build_unet,
    check_resolution,
    check_settings,
    check_snr_gamma,
    copy_unet,
    make_optimizer,
    memory_format_for,
    seed_for,
    settings_used_by,
    unet_config,
    weights_digest,
)

script = load_script()
min_snr_weights = script.min_snr_weights


class ZeroModel(torch.nn.Module):
    """Predicts zeros and remembers its inputs, so the loss equals the mean squared target."""

    def forward(self, x, t):
        self.inputs = (x, t)
        return SimpleNamespace(sample=torch.zeros_like(x))


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_diffusion_loss_matches_the_scheduler(prediction_type):
    scheduler = DDPMScheduler(prediction_type=prediction_type)
    clean = torch.rand(6, 3, 4, 4) * 2 - 1
    model = ZeroModel()
    loss = script.diffusion_loss(model, scheduler, clean, torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(0)  # the same draws, in the same order
    timesteps = torch.randint(0, 1000, (6,), generator=generator)
    noise = torch.randn(clean.shape, generator=generator)
    noisy, seen_t = model.inputs
    assert torch.equal(seen_t, timesteps)
    torch.testing.assert_close(noisy, scheduler.add_noise(clean, noise, timesteps))
    alpha_bar = scheduler.alphas_cumprod[timesteps].view(-1, 1, 1, 1)  # the closed forms, independent of diffusers
    torch.testing.assert_close(noisy, alpha_bar.sqrt() * clean + (1 - alpha_bar).sqrt() * noise)
    velocity = alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * clean
    target = {"epsilon": noise, "sample": clean, "v_prediction": velocity}
    torch.testing.assert_close(loss, target[prediction_type].pow(2).mean())


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_min_snr_weights_match_the_diffusers_training_examples(prediction_type):
    from diffusers.training_utils import compute_snr

    scheduler = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type=prediction_type)
    timesteps = torch.arange(0, 1000, 37)
    snr = compute_snr(scheduler, timesteps).double()  # how diffusers' train_text_to_image.py weighs --snr_gamma
    expected = snr.clamp(max=5.0)
    expected = {"epsilon": expected / snr, "sample": expected, "v_prediction": expected / (snr + 1)}[prediction_type]
    weights = min_snr_weights(scheduler.alphas_cumprod, prediction_type, 5.0)
    torch.testing.assert_close(weights[timesteps], expected.float())


def test_min_snr_loss_weights_each_sample_by_its_timestep():
    scheduler = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    all_weights = min_snr_weights(scheduler.alphas_cumprod, "v_prediction", 5.0)
    clean = torch.rand(8, 1, 4, 4) * 2 - 1
    model = ZeroModel()
    loss = script.diffusion_loss(model, scheduler, clean, torch.Generator().manual_seed(0), all_weights)
    generator = torch.Generator().manual_seed(0)
    timesteps = torch.randint(0, 1000, (8,), generator=generator)
    noise = torch.randn(clean.shape, generator=generator)
    per_sample = scheduler.get_velocity(clean, noise, timesteps).pow(2).mean((1, 2, 3))
    weights = all_weights[timesteps]
    torch.testing.assert_close(loss, (weights * per_sample).mean())
    assert 0 < weights.min() and weights.max() < 1  # v-prediction weights are min(SNR, 5) / (SNR + 1)


def test_min_snr_plus_one_keeps_the_v_loss_at_noisy_timesteps_and_clips_clean_ones():
    scheduler = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    alphas_cumprod = scheduler.alphas_cumprod.double()
    snr = alphas_cumprod / (1 - alphas_cumprod)
    weights = min_snr_weights(scheduler.alphas_cumprod, "v_prediction", 5.0, plus_one=True)
    noisy = snr + 1 <= 5.0  # SNR <= γ - 1: the plain, unweighted v-loss
    assert noisy[-1] and not noisy[0]
    torch.testing.assert_close(weights[noisy], torch.ones(int(noisy.sum())))
    torch.testing.assert_close(weights[~noisy], (5.0 / (snr[~noisy] + 1)).float())
    paper = min_snr_weights(scheduler.alphas_cumprod, "v_prediction", 5.0)
    assert paper[-1] < 1e-3 and weights[-1] == 1  # the paper's form all but ignores the noisiest timestep
    clean = snr >= 5.0
    torch.testing.assert_close(weights[clean], paper[clean])  # nearly clean: the paper's clipped weights


@pytest.mark.parametrize("kwargs, message", [
    (dict(prediction_type="epsilon", snr_gamma=5.0), "v_prediction only"),
    (dict(prediction_type="v_prediction", snr_gamma=None), "add --snr_gamma"),
])
def test_min_snr_plus_one_needs_v_prediction_and_a_gamma(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        check_snr_gamma(snr_plus_one=True, **kwargs)


def test_min_snr_epsilon_weights_stay_finite_at_zero_snr():
    alphas_cumprod = torch.tensor([0.999, 0.5, 0.0])  # a zero-terminal-SNR schedule ends at ᾱ = 0
    weights = min_snr_weights(alphas_cumprod, "epsilon", 5.0)
    torch.testing.assert_close(weights, torch.tensor([5.0 / 999, 1.0, 1.0]))


def test_a_non_positive_snr_gamma_is_refused():
    with pytest.raises(ConfigError, match="--snr_gamma must be positive, got 0 \\(5 is the usual value"):
        check_settings(script.parse_args(["--snr_gamma", "0"]))


@pytest.mark.parametrize("bounds, inside, outside, words", [
    (Bounds(1), [1, 7], [0, -3], "at least 1"),
    (Bounds(0, low_open=True), [1e-8, 3.0], [0.0, -1.0, float("inf"), float("nan")], "positive"),
    (Bounds(0, 1), [0.0, 1.0, 0.5], [-0.1, 1.01], "between 0 and 1"),
    (Bounds(0, 1, high_open=True), [0.0, 0.999], [1.0, 1.5], "at least 0 and below 1"),
    (Bounds(0, 2**32 - 1), [0, 2**32 - 1], [-1, 2**32], "between 0 and 4294967295"),
])
def test_bounds_say_what_they_allow(bounds, inside, outside, words):
    assert all(bounds.contains(value) for value in inside)
    assert not any(bounds.contains(value) for value in outside)
    assert bounds.describe() == words


def test_check_settings_names_the_option_its_range_and_the_usual_value():
    good = script.parse_args(["--guide_interval", "0", "500"])
    check_settings(good)  # the defaults pass; an unset (None) option such as --max_train_steps is not checked
    for name, value, message in [
        ("learning_rate", -1.0, "--learning_rate must be positive, got -1 (1e-4 is the usual value"),
        ("adam_beta2", 1.5, "--adam_beta2 must be at least 0 and below 1, got 1.5 (usually 0.99 to 0.999)."),
        ("max_train_steps", 0, "--max_train_steps must be at least 1, got 0."),
        ("guide_interval", (-1.0, 5.0), "--guide_interval must be at least 0, got -1"),
    ]:
        with pytest.raises(ConfigError) as error:
            check_settings(SimpleNamespace(**{**vars(good), name: value}))
        assert str(error.value).startswith(message)


@pytest.mark.parametrize("extra, message", [
    (["--use_ema", "--ema_min_decay", "1"], "--ema_min_decay must be at least 0 and below 1, got 1 (0 is the usual "
                                            "value; at 1 the EMA never moves)."),
    (["--guide_interval", "0", "1001"], "--guide_interval LO HI needs 0 <= LO <= HI <= --ddpm_num_steps 1000, got 0 "
                                        "1001."),
    (["--ddpm_num_steps", "100", "--num_inference_steps", "10", "--guide_interval", "50", "500"],
     "--guide_interval LO HI needs 0 <= LO <= HI <= --ddpm_num_steps 100, got 50 500."),
    (["--max_train_steps", "10", "--guide_step", "10", "--guidance_scale", "2"],
     "--guide_step 10 must come before the last of the 10 optimizer steps: the guide is an earlier, weaker state of "
     "the model. Choose a smaller --guide_step"),
])
def test_settings_between_options_are_checked_up_front(extra, message):
    args = script.parse_args(extra)
    args.guide_interval = None if args.guide_interval is None else tuple(args.guide_interval)
    with pytest.raises(ConfigError) as error:
        check_settings(args)
    assert str(error.value).startswith(message), error.value


def test_settings_at_the_edge_of_their_range_pass():
    args = script.parse_args(["--use_ema", "--ema_min_decay", "0.999", "--ema_max_decay", "1", "--guide_interval", "0",
                              "1000", "--max_train_steps", "10", "--guide_step", "9", "--guidance_scale", "2"])
    check_settings(args)
    check_settings(script.parse_args(["--guide_step", "500"]))  # without --max_train_steps: checked once data is in


def test_every_numeric_option_of_the_script_has_a_range(monkeypatch):
    """Each int or float option of the script's parser (without choices, which argparse checks itself) is in
    SETTING_BOUNDS, so a new numeric option without a range fails here; and the table names only such options."""
    parsers = []
    parse = argparse.ArgumentParser.parse_args
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args",
                        lambda self, *args, **kwargs: parsers.append(self) or parse(self, *args, **kwargs))
    script.parse_args([])
    (parser,) = parsers
    numeric = {action.dest for action in parser._actions if action.type in (int, float) and action.choices is None}
    assert {"learning_rate", "max_train_steps", "guide_interval"} <= numeric, "the test no longer sees the options"
    assert not numeric - set(SETTING_BOUNDS), f"no range in SETTING_BOUNDS for {sorted(numeric - set(SETTING_BOUNDS))}"
    assert not set(SETTING_BOUNDS) - numeric, f"SETTING_BOUNDS names {sorted(set(SETTING_BOUNDS) - numeric)}, which " \
                                              "are not numeric options of the script"


def test_settings_used_by_names_what_a_library_refused_and_lets_other_errors_through():
    settings = SimpleNamespace(learning_rate=-1.0, adam_beta1=0.9)
    with pytest.raises(ConfigError, match=r"^torch.optim.AdamW refused these settings: --learning_rate -1.0, "
                                          r"--adam_beta1 0.9 \(Invalid learning rate: -1.0\)\. Change one"):
        with settings_used_by("torch.optim.AdamW", settings, "learning_rate", "adam_beta1"):
            make_optimizer([torch.nn.Parameter(torch.zeros(1))], lr=-1.0)
    with pytest.raises(KeyError):  # not a refused setting: a bug, whose traceback stays
        with settings_used_by("torch.optim.AdamW", settings, "learning_rate"):
            raise KeyError("bug")


def test_ema_matches_diffusers_ema_model(tmp_path):
    from diffusers.training_utils import EMAModel

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    ours = EMA(model, max_decay=0.99, inv_gamma=1.0, power=0.75)
    theirs = EMAModel(model.parameters(), decay=0.99, use_ema_warmup=True, inv_gamma=1.0, power=0.75)
    for _ in range(6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        theirs.step(model.parameters())
        ours.update(model)
        for mine, reference in zip(ours.model.parameters(), theirs.shadow_params):
            torch.testing.assert_close(mine, reference, rtol=0, atol=1e-6)
    assert ours.decay() == pytest.approx(theirs.get_decay(theirs.optimization_step + 1))
    assert not any(p.requires_grad for p in ours.model.parameters())

    ours.save(tmp_path / "ema.safetensors")
    restored = EMA(model)
    restored.load(tmp_path / "ema.safetensors")
    assert restored.num_updates == 6
    for a, b in zip(restored.model.parameters(), ours.model.parameters()):
        assert torch.equal(a, b)


def test_sharded_batches_are_disjoint_equal_and_reproducible():
    images = torch.arange(11, dtype=torch.uint8).view(11, 1, 1, 1).expand(11, 1, 2, 2).contiguous()
    ranks = [ShardedBatches(images, batch_size=2, seed=3, rank=r, world_size=2) for r in range(2)]
    assert len(ranks[0]) == 3  # 5 images per process (one image sits out this epoch): 2 + 2 + 1
    for epoch in range(3):
        shards = [set(b.shard(epoch).tolist()) for b in ranks]
        assert len(shards[0]) == len(shards[1]) == 5 and not shards[0] & shards[1]
    assert not torch.equal(ranks[0].shard(0), ranks[0].shard(1))  # a fresh order every epoch
    again = ShardedBatches(images, batch_size=2, seed=3, rank=1, world_size=2)
    assert torch.equal(again.shard(2), ranks[1].shard(2))
    indices = ranks[1].indices(1, 2)
    batch = ranks[1].batch(1, 2)  # fetched directly, without going through the earlier batches
    assert batch.dtype == torch.uint8 and batch.shape == (1, 1, 2, 2)
    assert torch.equal(batch[:, 0, 0, 0], indices.to(torch.uint8))


def test_model_input_is_scaled_to_minus_one_one_and_flipped_with_the_generator():
    pixels = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).repeat(8, 1, 1, 1) * 17  # 0 ... 255
    plain = script.to_model_input(pixels, False, torch.Generator().manual_seed(1), "cpu")
    assert plain.dtype == torch.float32 and plain.min() == -1 and plain.max() == 1
    torch.testing.assert_close(plain, pixels.float() / 127.5 - 1)
    first = script.to_model_input(pixels, True, torch.Generator().manual_seed(1), "cpu")
    assert torch.equal(first, script.to_model_input(pixels, True, torch.Generator().manual_seed(1), "cpu"))
    flipped = [torch.equal(x, plain[0].flip(-1)) for x in first]
    assert all(flipped[i] or torch.equal(first[i], plain[0]) for i in range(8)) and 0 < sum(flipped) < 8


def test_sharded_batches_reject_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        ShardedBatches(torch.zeros(4, 1, 2, 2), batch_size=2)
    with pytest.raises(ConfigError, match="fewer processes"):
        ShardedBatches(torch.zeros(1, 1, 2, 2, dtype=torch.uint8), batch_size=2, world_size=2)


def test_seed_for_is_deterministic_and_distinct():
    assert seed_for(0, 5, 1) == seed_for(0, 5, 1)
    assert len({seed_for(0, step, rank) for step in range(50) for rank in range(4)}) == 200
    assert 0 <= seed_for(2**40, 10**9) < 2**63


def test_model_sizes_and_resolution_checks(tmp_path):
    assert set(MODEL_SIZES) == {"micro", "micro-conv", "tiny", "small", "base"}
    micro = build_unet(unet_config("micro"), 28, 1)
    assert 650_000 < sum(p.numel() for p in micro.parameters()) < 750_000  # the leaderboard's CPU models
    conv = build_unet(unet_config("micro-conv"), 28, 1)
    assert 600_000 < sum(p.numel() for p in conv.parameters()) < 650_000
    attention = {name.split(".")[0] for name, _ in conv.named_parameters() if ".attentions." in name}
    assert attention == {"mid_block"}  # micro-conv keeps only the 7 px middle block's attention
    small = build_unet(unet_config("small"), 32, 3)
    assert small.config.block_out_channels == (64, 128, 128, 256) and small.config.sample_size == 32
    assert 18_000_000 < sum(p.numel() for p in small.parameters()) < 19_000_000  # the course's 32 px model
    check_resolution(64, unet_config("base"))
    with pytest.raises(ConfigError, match="multiple of 32"):
        check_resolution(48, unet_config("base"))
    with pytest.raises(ConfigError, match="multiple of 8 \\(e.g. 16 or 24\\)"):
        check_resolution(20, unet_config("small"))
    with pytest.raises(ConfigError, match="tiny, small, base"):
        unet_config("huge")

    config = {"block_out_channels": [8, 16], "norm_num_groups": 4, "down_block_types": ["DownBlock2D"] * 2,
              "up_block_types": ["UpBlock2D"] * 2, "in_channels": 3}
    (tmp_path / "config.json").write_text(json.dumps(config))
    gray = build_unet(unet_config(config_path=str(tmp_path / "config.json")), 8, 1)  # channels come from the data
    assert gray.config.in_channels == gray.config.out_channels == 1
    DDPMPipeline(unet=gray, scheduler=DDPMScheduler()).save_pretrained(tmp_path / "pipeline")
    assert unet_config(config_path=str(tmp_path / "pipeline"))["block_out_channels"] == [8, 16]
    with pytest.raises(ConfigError, match="Cannot read"):
        unet_config(config_path=str(tmp_path / "missing"))


def test_make_optimizer_uses_the_fused_kernel_on_cpu():
    optimizer = make_optimizer(torch.nn.Linear(2, 2).parameters(), lr=1e-3)
    assert optimizer.defaults["fused"] is True and optimizer.defaults["betas"] == (0.95, 0.999)


def test_memory_format_defaults_to_channels_last_on_cuda_only():
    assert memory_format_for("cpu") == torch.contiguous_format
    assert memory_format_for("cuda") == torch.channels_last
    assert memory_format_for("cpu", channels_last=True) == torch.channels_last
    assert memory_format_for("cuda", channels_last=False) == torch.contiguous_format


def make_checkpoint(folder, step):
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "training_state.json").write_text(json.dumps({"step": step}))
    return path


def test_checkpoint_listing_limit_and_resolution(tmp_path):
    for step in (9, 10, 100):
        make_checkpoint(tmp_path, step)
    (tmp_path / ".checkpoint-200.tmp").mkdir()
    (tmp_path / "checkpoint-notes").mkdir()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-9", "checkpoint-10", "checkpoint-100"]
    assert resolve_checkpoint("latest", tmp_path).name == "checkpoint-100"
    assert resolve_checkpoint("checkpoint-10", tmp_path).name == "checkpoint-10"
    assert resolve_checkpoint(str(tmp_path / "checkpoint-9"), "elsewhere").name == "checkpoint-9"
    assert resolve_checkpoint("latest", tmp_path / "empty") is None
    with pytest.raises(ConfigError, match="checkpoint-9, checkpoint-10, checkpoint-100"):
        resolve_checkpoint("checkpoint-11", tmp_path)

    final = tmp_path / "checkpoint-110"
    tmp = temporary_name(final)
    tmp.mkdir()
    (tmp / "training_state.json").write_text("{}")
    removed = finish_checkpoint(tmp, final, total_limit=2)
    assert [p.name for p in removed] == ["checkpoint-9", "checkpoint-10"] and not tmp.exists()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-100", "checkpoint-110"]


def test_remove_unfinished_cleans_up_and_restores(tmp_path):
    make_checkpoint(tmp_path, 5)
    (tmp_path / ".checkpoint-10.tmp").mkdir()
    (tmp_path / ".pipeline.tmp").mkdir()
    make_checkpoint(tmp_path, 7).rename(tmp_path / ".checkpoint-7.old")  # killed mid-replacement
    (tmp_path / ".checkpoint-5.old").mkdir()  # killed after the new copy was in place
    remove_unfinished(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-5", "checkpoint-7"]


def test_save_pipeline_atomically_replaces_the_previous_pipeline(tmp_path):
    config = {"block_out_channels": (8, 16), "norm_num_groups": 4, "down_block_types": ("DownBlock2D",) * 2,
              "up_block_types": ("UpBlock2D",) * 2, "sample_size": 8}
    for seed in (0, 1):
        torch.manual_seed(seed)
        unet = UNet2DModel(**config)
        save_pipeline_atomically(DDPMPipeline(unet=unet, scheduler=DDPMScheduler()), tmp_path)
    loaded = DDPMPipeline.from_pretrained(tmp_path)
    assert torch.equal(loaded.unet.conv_in.weight, unet.conv_in.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_index.json", "scheduler", "unet"]
    assert list((tmp_path / "unet").glob("*.safetensors"))


def test_copy_unet_is_a_fresh_float32_eval_copy_with_the_given_weights():
    torch.manual_seed(0)
    unet = build_unet(unet_config("micro"), 28, 1).train()
    copy = copy_unet(unet)
    assert copy is not unet and not copy.training and weights_digest(copy) == weights_digest(unet)
    with torch.no_grad():
        unet.conv_in.weight.add_(1)  # the copy does not follow later changes
    assert weights_digest(copy) != weights_digest(unet)
    other = copy_unet(unet, copy.state_dict())  # the config of one model, the weights of another
    assert weights_digest(other) == weights_digest(copy)


def test_training_clock_leaves_out_the_paused_time(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("utils.training.time.perf_counter", lambda: now[0])
    clock = TrainingClock(seconds_before=5.0)  # a resumed run continues its count
    now[0] += 2
    with clock.paused():
        now[0] += 30  # a checkpoint
    now[0] += 1
    assert clock.seconds() == 8.0


def test_command_line_is_written_one_way_with_the_launcher():
    from utils.recipe import command_line

    argv = ["--output_dir", "出力 フォルダ"]  # a path with a space is quoted
    assert command_line("unit1/train_unconditional.py", argv=argv, environ={}) == \
        "python unit1/train_unconditional.py --output_dir '出力 フォルダ'"
    assert command_line("-m", "tools.leaderboard", argv=[], environ={}) == "python -m tools.leaderboard"
    assert command_line("train.py", argv=["--cpu"], environ={"WORLD_SIZE": "2"}) == \
        "torchrun --nproc_per_node 2 train.py --cpu"
    assert command_line("train.py", argv=[], environ={"WORLD_SIZE": "4", "ACCELERATE_MIXED_PRECISION": "no"}) == \
        "accelerate launch --num_processes 4 train.py"


def test_a_guide_is_made_one_way_from_the_weights_now_or_from_a_checkpoint(tmp_path):
    from safetensors.torch import save_file

    from utils.checkpoints import checkpoint_weights, guide_code, make_guide

    unet = build_unet(unet_config("micro"), 28, 1)
    guide = make_guide(unet)
    assert guide is not unet and not guide.training and weights_digest(guide) == weights_digest(unet)
    later = {k: v + 1 for k, v in unet.state_dict().items()}
    (tmp_path / "checkpoint-2").mkdir()
    save_file(later, str(tmp_path / "checkpoint-2" / "model.safetensors"))
    assert checkpoint_weights(tmp_path / "checkpoint-2").name == "model.safetensors"
    save_file(later, str(tmp_path / "checkpoint-2" / "ema.safetensors"))
    assert checkpoint_weights(tmp_path / "checkpoint-2").name == "ema.safetensors"  # the EMA when the run kept one
    from_checkpoint = make_guide(unet, checkpoint_weights(tmp_path / "checkpoint-2"))
    assert all(torch.equal(v, later[k]) for k, v in from_checkpoint.state_dict().items())
    with pytest.raises(ConfigError, match="neither ema.safetensors nor model.safetensors"):
        checkpoint_weights(tmp_path)
    assert guide_code("me/model") == "UNet2DModel.from_pretrained('me/model', subfolder=\"guide_unet\")"
