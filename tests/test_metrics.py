"""utils.metrics: FID/KID maths, input checks, the shipped digit classifier and pipeline evaluation."""

import json
import sys
import types

import numpy as np
import pytest
import scipy.linalg
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from PIL import Image
from safetensors import safe_open

from tools.train_digit_classifier import augment
from utils import metrics
from utils.course import load_training_script
from utils.data import images_to_tensor, real_mnist_digits
from utils.metrics import (
    DIGIT_TRAIN_COMMAND,
    DIGIT_WEIGHTS,
    MetricError,
    check_images,
    class_coverage,
    digit_features,
    digit_metrics,
    evaluate_pipeline,
    frechet_distance,
    kernel_distance,
)


# ---------------------------------------------------------------- the maths
def test_frechet_distance_matches_the_scipy_formula():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(400, 6, generator=generator) @ torch.randn(6, 6, generator=generator)
    b = torch.randn(300, 6, generator=generator) @ torch.randn(6, 6, generator=generator) + 0.5
    a64, b64 = a.double().numpy(), b.double().numpy()
    cov_a, cov_b = np.cov(a64, rowvar=False), np.cov(b64, rowvar=False)
    expected = (np.sum((a64.mean(0) - b64.mean(0)) ** 2) + np.trace(cov_a) + np.trace(cov_b)
                - 2 * np.trace(scipy.linalg.sqrtm(cov_a @ cov_b).real))
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)


def test_frechet_distance_of_shifted_gaussians_is_the_squared_shift():
    generator = torch.Generator().manual_seed(1)
    a = torch.randn(20000, 4, generator=generator)
    b = torch.randn(20000, 4, generator=generator) + torch.tensor([3.0, 0, 0, 0])
    assert frechet_distance(a, b) == pytest.approx(9.0, rel=0.02)


def test_kernel_distance_is_the_unbiased_mmd():
    generator = torch.Generator().manual_seed(2)
    a, b = torch.randn(30, 5, generator=generator), torch.randn(30, 5, generator=generator) + 1

    def k(x, y):
        return (x.double() @ y.double().T / 5 + 1) ** 3

    m = 30
    off = ~torch.eye(m, dtype=torch.bool)
    expected = k(a, a)[off].mean() + k(b, b)[off].mean() - 2 * k(a, b).mean()
    mean, std = kernel_distance(a, b, num_subsets=1, subset_size=m)
    assert mean == pytest.approx(float(expected), rel=1e-9)
    assert std == 0


def test_kernel_distance_gives_the_same_subsets_with_and_without_whole_kernel_matrices(monkeypatch):
    generator = torch.Generator().manual_seed(4)
    a, b = torch.randn(50, 6, generator=generator), torch.randn(40, 6, generator=generator) + 0.3
    whole = kernel_distance(a, b, num_subsets=7)
    monkeypatch.setattr(metrics, "KID_FULL_KERNEL_LIMIT", 0)
    assert kernel_distance(a, b, num_subsets=7) == pytest.approx(whole, rel=1e-9)


def test_kernel_distance_is_near_zero_for_one_distribution_and_positive_for_two():
    generator = torch.Generator().manual_seed(3)
    a, b = torch.randn(600, 8, generator=generator), torch.randn(600, 8, generator=generator)
    same_mean, same_std = kernel_distance(a, b)
    shifted_mean, shifted_std = kernel_distance(a, b + 0.5)
    assert abs(same_mean) < 3 * same_std + 1e-3
    assert shifted_mean > 10 * shifted_std > 0
    with pytest.raises(MetricError, match="subset_size"):
        kernel_distance(a, b, subset_size=1000)


def test_class_coverage_is_one_for_balanced_and_zero_for_one_class():
    balanced = torch.nn.functional.one_hot(torch.arange(100) % 10, 10).float()
    one_class = torch.nn.functional.one_hot(torch.full((100,), 3), 10).float()
    two_classes = torch.nn.functional.one_hot(torch.arange(100) % 2, 10).float()
    assert class_coverage(balanced) == pytest.approx(1.0)
    assert class_coverage(one_class) == pytest.approx(0.0)
    assert class_coverage(two_classes) == pytest.approx(np.log(2) / np.log(10))


# ---------------------------------------------------------------- input checks
@pytest.mark.parametrize("images, message", [
    (torch.zeros(20, 28, 28), "unsqueeze"),
    (torch.zeros(20, 28, 28, 1), "channels-last"),
    (torch.zeros(20, 2, 28, 28), "2 channels"),
    (torch.zeros(28, 28), "expected a batch"),
    (torch.zeros(20, 1, 4, 4), "at least 8x8"),
    (torch.zeros(5, 1, 28, 28), "at least 10"),
    (torch.full((20, 1, 28, 28), float("nan")), "NaN"),
    (torch.full((20, 1, 28, 28), 2.0), r"outside \[-1, 1\]"),
    (torch.zeros(20, 1, 28, 28, dtype=torch.int64), "dtype"),
    ("images.png", "not str"),
])
def test_bad_inputs_get_clear_messages(images, message):
    with pytest.raises(MetricError, match=message):
        check_images(images)


def test_check_images_converts_every_accepted_form_to_minus_one_one():
    x = torch.rand(12, 1, 16, 16)
    expected = x * 2 - 1
    assert torch.allclose(check_images(x, value_range=(0, 1)), expected)
    assert torch.allclose(check_images(x.numpy(), value_range=(0, 1)), expected)
    as_uint8 = (x * 255).round().to(torch.uint8)
    assert torch.allclose(check_images(as_uint8), as_uint8.float() / 127.5 - 1)
    pil = [Image.fromarray(image[0].numpy()) for image in as_uint8]
    assert torch.allclose(check_images(pil), as_uint8.float() / 127.5 - 1, atol=1e-6)
    with pytest.raises(MetricError, match=r"pass value_range=\(-1, 1\)"):
        check_images(x * 2 - 1, value_range=(0, 1))
    with pytest.raises(MetricError, match=r"pass value_range=\(0, 1\)"):
        check_images(x * 255)
    with pytest.raises(MetricError, match="value_range must be"):
        check_images(x, value_range=(0, 255))


def test_digit_metric_refuses_rgb_images():
    with pytest.raises(MetricError, match="1-channel"):
        digit_features(torch.zeros(12, 3, 28, 28))


# ---------------------------------------------------------------- the shipped digit classifier
def test_shipped_classifier_is_small_reproducible_and_accurate():
    assert DIGIT_WEIGHTS.stat().st_size < 1_000_000
    with safe_open(str(DIGIT_WEIGHTS), "pt") as weights:
        assert weights.metadata()["command"].startswith(DIGIT_TRAIN_COMMAND)
    images, labels = real_mnist_digits("test")
    _, probabilities = digit_features(images_to_tensor(images, 28, channels=1))
    accuracy = (probabilities.argmax(1) == torch.tensor(labels)).float().mean().item()
    assert accuracy >= 0.98


@pytest.fixture(scope="module")
def train_digits():
    images, labels = real_mnist_digits("train")
    return images_to_tensor(images, 28, channels=1), torch.tensor(labels)


@pytest.mark.slow  # 1 000-sample metrics
def test_real_digits_score_near_the_floor(train_digits):
    images, _ = train_digits
    scores = digit_metrics(images[1000:2000])
    assert scores["num_samples"] == 1000
    assert 0 < scores["fid"] < 1.5 * scores["fid_floor"]
    assert scores["coverage"] > 0.98
    assert scores["confidence"] > 0.95
    assert abs(scores["kid_mean"]) < 3 * scores["kid_std"] + 1e-3


@pytest.mark.slow  # 1 000-sample metrics
def test_floor_follows_the_resolution_of_the_samples():
    images, _ = real_mnist_digits("train")
    at_32_px = images_to_tensor(images[1000:2000], 32, channels=1)  # as a 32 px model's training data
    scores = digit_metrics(at_32_px)
    assert scores["fid_floor"] > metrics.real_digit_floor(1000)  # resizing twice costs a little
    assert scores["fid"] < 1.5 * scores["fid_floor"]


@pytest.mark.slow  # 1 000-sample metrics
def test_noise_scores_terribly():
    noise = torch.rand(1000, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    scores = digit_metrics(noise)
    assert scores["fid"] > 20 * scores["fid_floor"]
    assert scores["kid_mean"] > 20 * scores["kid_std"]


@pytest.mark.slow  # trains for 40 steps and scores 100 samples: about 15 s
def test_a_briefly_trained_model_makes_samples_the_metric_tells_from_noise(tmp_path, monkeypatch):
    """The learning check in a cheap form (the notebooks' runs in the suite train too few steps to show digits; the
    nightly runs them at real counts): the script's micro-conv MNIST model, trained for 40 steps on the shipped
    digits, already makes samples scored far closer to real digits than noise is (80 steps measured FID 28 against
    noise's 1 289 at 100 samples)."""
    from accelerate.state import AcceleratorState

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "run"
    code = load_training_script().main([
        "--dataset_name", "mnist", "--resolution", "28", "--model_size", "micro-conv", "--prediction_type",
        "v_prediction", "--ddpm_beta_schedule", "squaredcos_cap_v2", "--train_batch_size", "32", "--max_train_steps",
        "40", "--learning_rate", "2e-3", "--lr_warmup_steps", "10", "--eval_num_samples", "100", "--eval_batch_size",
        "100", "--sampler", "dpm++sde", "--num_inference_steps", "10", "--logger", "none", "--output_dir", str(out)])
    AcceleratorState._reset_state(reset_partial_state=True)
    assert code == 0
    trained = json.loads((out / "recipe.json").read_text(encoding="utf-8"))["metrics"]
    noise = digit_metrics(torch.rand(100, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    assert trained["num_samples"] == 100 and trained["fid"] < noise["fid"] / 10, (trained["fid"], noise["fid"])


@pytest.mark.slow  # 1 000-sample metrics
def test_a_single_repeated_digit_gets_low_coverage(train_digits):
    images, labels = train_digits
    seven = images[labels == 7][:1].repeat(1000, 1, 1, 1)
    scores = digit_metrics(seven)
    assert scores["coverage"] < 0.1
    assert scores["fid"] > 10 * scores["fid_floor"]


@pytest.mark.slow  # 1 000-sample metrics
def test_blurred_digits_score_between_real_and_noise(train_digits):
    images, _ = train_digits
    real = digit_metrics(images[1000:2000])["fid"]
    blurred = torch.nn.functional.avg_pool2d(images[1000:2000], 3, stride=1, padding=1, count_include_pad=False)
    assert real < digit_metrics(blurred)["fid"] < digit_metrics(torch.zeros(1000, 1, 28, 28) - 1)["fid"]


def test_augment_keeps_digits_in_range_and_is_reproducible(train_digits):
    images, _ = train_digits
    a = augment(images[:8], torch.Generator().manual_seed(0))
    b = augment(images[:8], torch.Generator().manual_seed(0))
    assert a.shape == (8, 1, 28, 28) and torch.equal(a, b)
    assert a.min() >= -1 - 1e-6 and a.max() <= 1 + 1e-6
    assert not torch.equal(a, images[:8])


def test_classifier_script_refuses_to_save_a_poor_classifier(tmp_path, monkeypatch):
    from tools import train_digit_classifier as script

    output = tmp_path / "classifier.safetensors"
    monkeypatch.setattr(script, "train", lambda args: (metrics.DigitClassifier(width=4), 0.5))
    assert script.main(["--output", str(output)]) == 1
    assert not output.exists()
    monkeypatch.setattr(script, "train", lambda args: (metrics.DigitClassifier(width=4), 0.99))
    assert script.main(["--output", str(output), "--epochs", "3"]) == 0
    with safe_open(str(output), "pt") as weights:
        assert weights.metadata()["command"] == f"{DIGIT_TRAIN_COMMAND} --output {output} --epochs 3"
        assert weights.metadata()["test_accuracy"] == "0.9900"
    assert metrics.load_digit_classifier(output).body[0].out_channels == 4


def test_missing_classifier_weights_say_how_to_make_them(tmp_path):
    with pytest.raises(metrics.MetricUnavailable, match="python -m tools.train_digit_classifier"):
        metrics.load_digit_classifier(tmp_path / "missing.safetensors")


# ---------------------------------------------------------------- evaluating a pipeline
def tiny_pipeline(channels: int, size: int = 16) -> DDPMPipeline:
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels, block_out_channels=(8, 16),
                       layers_per_block=1, norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"))
    return DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=100))


def test_evaluate_pipeline_scores_a_grayscale_model_with_the_digit_metric():
    pipeline = tiny_pipeline(channels=1)
    kwargs = dict(num_samples=12, batch_size=5, sampler="ddim", num_inference_steps=2, seed=0, progress=False)
    scores = evaluate_pipeline(pipeline, **kwargs)
    assert set(scores) == {"fid", "fid_std", "fid_floor", "kid_mean", "kid_std", "confidence", "coverage",
                           "num_samples"}
    assert all(np.isfinite(value) for value in scores.values())
    assert scores["num_samples"] == 12
    assert scores["fid"] > 5 * scores["fid_floor"]  # an untrained model does not draw digits
    assert evaluate_pipeline(pipeline, **kwargs) == scores  # same seed, same samples, same numbers
    with pytest.raises(MetricError, match="at least 10"):
        evaluate_pipeline(pipeline, **{**kwargs, "num_samples": 4})


def test_rgb_metric_is_unavailable_offline_without_a_number(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # not installed (it needs torchvision)
    metrics.load_inception.cache_clear()
    assert evaluate_pipeline(tiny_pipeline(channels=3), num_samples=10, num_inference_steps=1, progress=False) == {}
    assert "torch-fidelity" in capsys.readouterr().out


class FakeInception(torch.nn.Module):
    """Stands in for torch-fidelity's extractor: uint8 (N, 3, H, W) -> a tuple of features (64-d to stay fast)."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None):
        super().__init__()
        assert features_list == ["2048"] and feature_extractor_weights_path is not None
        self.projection = torch.randn(3 * 8 * 8, 64, generator=torch.Generator().manual_seed(0))

    def forward(self, x):
        assert x.dtype == torch.uint8 and x.shape[1] == 3
        small = torch.nn.functional.adaptive_avg_pool2d(x.float() / 255, 8).flatten(1)
        return (small @ self.projection,)


@pytest.fixture
def fake_torch_fidelity(tmp_path, monkeypatch):
    module = types.ModuleType("torch_fidelity.feature_extractor_inceptionv3")
    module.FeatureExtractorInceptionV3 = FakeInception
    monkeypatch.setitem(sys.modules, "torch_fidelity", types.ModuleType("torch_fidelity"))
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", module)
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"local copy")
    monkeypatch.setenv(metrics.INCEPTION_WEIGHTS_ENV, str(weights))
    metrics.load_inception.cache_clear()
    yield
    metrics.load_inception.cache_clear()


def test_rgb_pipeline_is_scored_with_inception_features_against_the_reference(fake_torch_fidelity, capsys):
    pipeline = tiny_pipeline(channels=3)
    kwargs = dict(num_samples=10, batch_size=10, num_inference_steps=2, progress=False)
    assert evaluate_pipeline(pipeline, **kwargs) == {}
    assert "reference" in capsys.readouterr().out
    reference = torch.rand(40, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    scores = evaluate_pipeline(pipeline, reference=reference, **kwargs)
    assert set(scores) == {"fid", "fid_floor", "kid_mean", "kid_std", "num_samples"}
    assert scores["fid"] > scores["fid_floor"] > 0


def test_rgb_metric_reports_a_missing_weights_file(fake_torch_fidelity, monkeypatch, tmp_path):
    monkeypatch.setenv(metrics.INCEPTION_WEIGHTS_ENV, str(tmp_path / "nowhere.pth"))
    with pytest.raises(metrics.MetricUnavailable, match="does not exist"):
        metrics.inception_metrics(torch.zeros(10, 3, 16, 16), torch.zeros(20, 3, 16, 16))


def test_fid_bootstrap_std_is_the_spread_over_resampled_generated_features():
    from utils.metrics import _real_digit_features, fid_bootstrap_std, frechet_distance

    features, _ = _real_digit_features("train")
    reference, _ = _real_digit_features("test")
    spreads = {n: fid_bootstrap_std(features[:n], reference, num_resamples=30) for n in (250, 1000)}
    assert 0 < spreads[1000] < spreads[250]  # fewer samples, noisier FID
    assert spreads[1000] < frechet_distance(features[:1000], reference)
    assert fid_bootstrap_std(features[:250], reference, num_resamples=30) == spreads[250]  # seeded
