"""Sample-quality metrics that work offline: FID and KID on the features of a feature network.

* 1-channel images (MNIST-like digits, resized to 28 px) use a small digit classifier that ships with
  the course (``utils/assets/digit_classifier.safetensors``, made by ``python -m tools.train_digit_classifier``).
  They are compared with the 1 000 held-out real test digits; the same score for as many real training
  digits is the floor (``fid_floor``): what a generator that reproduces the training data would get. The
  classifier also gives the mean confidence and the class coverage (normalised entropy of the predicted
  digit histogram), which catch mode collapse that FID blurs.
* RGB images use Inception-v3 features from torch-fidelity when it is installed and its weights can be
  loaded; otherwise the metric is unavailable (``MetricUnavailable``) -- never a made-up number.

FID and KID numbers are only comparable when they come from the same feature network and sample count.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

DIGIT_WEIGHTS = Path(__file__).resolve().parent / "assets" / "digit_classifier.safetensors"
DIGIT_TRAIN_COMMAND = "python -m tools.train_digit_classifier"
DIGIT_SIZE = 28
MIN_SAMPLES = 10
KID_FULL_KERNEL_LIMIT = 10_000  # up to this many samples in all, KID holds the whole kernel matrices
INCEPTION_WEIGHTS_ENV = "COURSE_INCEPTION_WEIGHTS"
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"


class MetricError(ValueError):
    """Images that a metric cannot score; the message says what is wrong and how to fix it."""


class MetricUnavailable(RuntimeError):
    """The metric cannot be computed here (a missing package or weights); the message says why."""


# ---------------------------------------------------------------- input checks
def check_images(images, value_range: tuple[float, float] = (-1.0, 1.0), name: str = "images",
                 min_samples: int = MIN_SAMPLES) -> torch.Tensor:
    """Validate a batch of images and return it as float32 (N, C, H, W) in [-1, 1].

    ``images`` is a tensor or NumPy array (N, C, H, W) with C in {1, 3} -- float values in ``value_range``
    ((-1, 1) or (0, 1)) or uint8 in [0, 255] -- or a list of PIL images.
    """
    if tuple(value_range) not in ((-1, 1), (0, 1)):
        raise MetricError(f"value_range must be (-1, 1) or (0, 1), got {value_range}.")
    if isinstance(images, (list, tuple)) and images and hasattr(images[0], "convert"):  # PIL images
        from .data import GRAYSCALE_MODES, images_to_tensor

        channels = 1 if all(im.mode in GRAYSCALE_MODES for im in images) else 3
        images, value_range = images_to_tensor(images, images[0].width, channels), (-1, 1)
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise MetricError(f"{name} must be a torch tensor, a NumPy array or a list of PIL images, "
                          f"not {type(images).__name__}.")
    shape = tuple(images.shape)
    if images.ndim == 3:
        raise MetricError(f"{name} has shape {shape}; a batch needs 4 dimensions (N, C, H, W). For grayscale "
                          "images of shape (N, H, W) add the channel axis with images.unsqueeze(1).")
    if images.ndim != 4:
        raise MetricError(f"{name} has shape {shape}; expected a batch (N, C, H, W) with C = 1 or 3.")
    if shape[1] not in (1, 3):
        hint = (" It looks channels-last (N, H, W, C): convert it with images.permute(0, 3, 1, 2)."
                if shape[3] in (1, 3) else "")
        raise MetricError(f"{name} has {shape[1]} channels (shape {shape}); expected 1 (grayscale) or 3 (RGB).{hint}")
    if min(shape[2:]) < 8:
        raise MetricError(f"{name} are only {shape[2]}x{shape[3]} pixels (shape {shape}); expected images of at "
                          "least 8x8 pixels.")
    if shape[0] < min_samples:
        raise MetricError(f"{name} has {shape[0]} images, but the metric needs at least {min_samples} "
                          "(use 1 000 for numbers you compare: FID grows when there are fewer samples).")
    if images.dtype == torch.uint8:
        return images.float() / 127.5 - 1.0
    if not images.is_floating_point():
        raise MetricError(f"{name} has dtype {images.dtype}; use float values in [{value_range[0]:g}, {value_range[1]:g}] or uint8.")
    images = images.detach().float().cpu()
    bad = (~torch.isfinite(images)).sum().item()
    if bad:
        raise MetricError(f"{name} contains {bad} NaN or infinite values; the model or sampler diverged "
                          "(try a lower learning rate, or check the sampler settings).")
    low, high = value_range
    lowest, highest = images.min().item(), images.max().item()
    if lowest < low - 1e-3 or highest > high + 1e-3:
        other = "(0, 1)" if low == -1 else "(-1, 1)"
        raise MetricError(f"{name} has values from {lowest:.3g} to {highest:.3g}, outside [{low:g}, {high:g}]. "
                          f"Clamp them, or pass value_range={other} if that is their range.")
    images = images.clamp(low, high)
    return images * 2 - 1 if low == 0 else images


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Round [-1, 1] images to the 256 levels of an 8-bit image file, as the real data has."""
    return torch.round((images + 1) * 127.5) / 127.5 - 1


# ---------------------------------------------------------------- FID and KID
def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D): the FID formula."""
    a, b = features_a.double(), features_b.double()
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    # tr(sqrt(cov_a @ cov_b)) = sum of sqrt(eigenvalues of sqrt(cov_a) @ cov_b @ sqrt(cov_a)), all symmetric.
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    distance = (mean_a - mean_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross
    return max(float(distance), 0.0)


def fid_bootstrap_std(features: torch.Tensor, reference: torch.Tensor, num_resamples: int = 100,
                      seed: int = 0) -> float:
    """How much the FID of ``features`` against ``reference`` moves with the generated samples: the standard
    deviation of the FID over ``num_resamples`` resamples (with replacement) of the generated features.

    This is the measurement noise of one evaluation at its sample count; the seed of the training run adds more.
    """
    generator = torch.Generator().manual_seed(seed)
    n = len(features)
    scores = [frechet_distance(features[torch.randint(n, (n,), generator=generator)], reference)
              for _ in range(num_resamples)]
    return float(torch.tensor(scores, dtype=torch.float64).std())


def kernel_distance(features_a: torch.Tensor, features_b: torch.Tensor, num_subsets: int = 100,
                    subset_size: int | None = None, seed: int = 0) -> tuple[float, float]:
    """KID: unbiased squared MMD with the kernel (x.y / D + 1)^3, mean and std over random subsets.

    ``subset_size`` defaults to half the smaller set (at most 1 000), so that the subsets differ.
    """
    a, b = features_a.double(), features_b.double()
    n = min(len(a), len(b))
    m = subset_size or min(1000, max(2, n // 2))
    if not 2 <= m <= n:
        raise MetricError(f"KID subset_size must be between 2 and the smaller set size {n}, got {m}.")
    generator = torch.Generator().manual_seed(seed)

    def kernel(p, q):
        return (p @ q.T / a.shape[1] + 1) ** 3

    def subsets(size):  # one row per subset: 1 for the m chosen samples
        chosen = torch.zeros(num_subsets, size, dtype=torch.float64)
        rows = [torch.randperm(size, generator=generator)[:m] for _ in range(num_subsets)]
        return chosen.scatter_(1, torch.stack(rows), 1.0)

    u, v = subsets(len(a)), subsets(len(b))
    if len(a) + len(b) <= KID_FULL_KERNEL_LIMIT:  # each kernel value once; subset sums are u K u^T
        k_aa, k_bb, k_ab = kernel(a, a), kernel(b, b), kernel(a, b)
        sum_xx, sum_yy, sum_xy = ((s @ k * t).sum(1) for s, k, t in ((u, k_aa, u), (v, k_bb, v), (u, k_ab, v)))
        diag_xx, diag_yy = u @ k_aa.diagonal(), v @ k_bb.diagonal()
    else:  # too large to hold: one subset at a time
        parts = []
        for row_u, row_v in zip(u.bool(), v.bool()):
            x, y = a[row_u], b[row_v]
            k_xx, k_yy = kernel(x, x), kernel(y, y)
            parts.append([k_xx.sum(), k_yy.sum(), kernel(x, y).sum(), k_xx.trace(), k_yy.trace()])
        sum_xx, sum_yy, sum_xy, diag_xx, diag_yy = torch.tensor(parts, dtype=torch.float64).T
    scores = (sum_xx - diag_xx + sum_yy - diag_yy) / (m * (m - 1)) - 2 * sum_xy / m**2
    return float(scores.mean()), float(scores.std(unbiased=False))


def class_coverage(probabilities: torch.Tensor) -> float:
    """Normalised entropy of the predicted-class histogram: 1 = all classes equally often, 0 = one class."""
    num_classes = probabilities.shape[1]
    counts = torch.bincount(probabilities.argmax(1), minlength=num_classes).double()
    p = counts[counts > 0] / counts.sum()
    return float((p * (1 / p).log()).sum() / math.log(num_classes))


# ---------------------------------------------------------------- the digit classifier
class DigitClassifier(nn.Module):
    """A small CNN for 28 px digits in [-1, 1]; ``features`` gives the 4*width vector FID/KID use."""

    def __init__(self, width: int = 32, num_classes: int = 10):
        super().__init__()

        def block(c_in, c_out, kernel=3):
            return [nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

        self.body = nn.Sequential(*block(1, width, kernel=5), nn.MaxPool2d(2),  # 28 -> 14 px
                                  *block(width, 2 * width), *block(2 * width, 2 * width), nn.MaxPool2d(2),  # 7 px
                                  *block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(4 * width, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@functools.lru_cache(maxsize=2)
def load_digit_classifier(path: str | os.PathLike = DIGIT_WEIGHTS) -> DigitClassifier:
    """The shipped digit classifier in eval mode (cached)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise MetricUnavailable(f"The digit classifier weights {path} are missing; create them with "
                                f"`{DIGIT_TRAIN_COMMAND}` (15 to 40 minutes on a 2-core CPU).")
    state = load_file(path)
    model = DigitClassifier(width=state["body.0.weight"].shape[0])
    model.load_state_dict(state)
    return model.eval().requires_grad_(False)


@torch.no_grad()
def digit_features(images, value_range: tuple[float, float] = (-1.0, 1.0), batch_size: int = 500,
                   min_samples: int = MIN_SAMPLES) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, 128), class probabilities (N, 10)) of 1-channel images, resized to 28 px if needed."""
    x = check_images(images, value_range, "digit images", min_samples)
    if x.shape[1] != 1:
        raise MetricError(f"The digit metric needs 1-channel (grayscale) images, got {x.shape[1]} channels. "
                          "RGB images are scored with Inception features (inception_metrics).")
    if x.shape[2:] != (DIGIT_SIZE, DIGIT_SIZE):
        x = nn.functional.interpolate(x, size=(DIGIT_SIZE, DIGIT_SIZE), mode="bicubic", antialias=True,
                                      align_corners=False).clamp(-1, 1)
    model = load_digit_classifier()
    features, probabilities = [], []
    for batch in quantize(x).split(batch_size):
        feature = model.features(batch)
        features.append(feature)
        probabilities.append(model.head(feature).softmax(1))
    return torch.cat(features), torch.cat(probabilities)


@functools.lru_cache(maxsize=4)
def _real_digits(split: str, size: int = DIGIT_SIZE) -> torch.Tensor:
    from .data import images_to_tensor, real_mnist_digits

    images, _ = real_mnist_digits(split)
    return images_to_tensor(images, size, channels=1)


@functools.lru_cache(maxsize=4)
def _real_digit_features(split: str, size: int = DIGIT_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and class probabilities of a split's real digits, prepared at ``size`` px the way training
    data is (and resized back to 28 px by the metric, like generated images)."""
    return digit_features(_real_digits(split, size))


@functools.lru_cache(maxsize=16)
def real_digit_floor(num_samples: int, size: int = DIGIT_SIZE, max_sets: int = 4) -> float:
    """The FID of real training digits: the mean over up to ``max_sets`` disjoint sets of ``num_samples``.

    The digits are prepared at ``size`` px, as the training data of a model of that size is. One set alone
    can be an outlier when sets are small.
    """
    features, _ = _real_digit_features("train", size)
    reference, _ = _real_digit_features("test")
    count = min(num_samples, len(features))
    num_sets = max(1, min(max_sets, len(features) // count))
    return sum(frechet_distance(features[i * count:(i + 1) * count], reference) for i in range(num_sets)) / num_sets


def _distances(features, reference) -> dict[str, float]:
    kid_mean, kid_std = kernel_distance(features, reference)
    return {"fid": frechet_distance(features, reference), "kid_mean": kid_mean, "kid_std": kid_std}


def digit_metrics(images, value_range: tuple[float, float] = (-1.0, 1.0)) -> dict[str, float]:
    """FID, KID, confidence and coverage of 1-channel digit images against the 1 000 held-out real digits,
    ``fid_std``, the FID's bootstrap spread over the generated samples (``fid_bootstrap_std``), and
    ``fid_floor``, the FID of as many real training digits (``real_digit_floor``)."""
    x = check_images(images, value_range, "digit images")
    features, probabilities = digit_features(x)
    reference, _ = _real_digit_features("test")
    size = x.shape[2] if x.shape[2] == x.shape[3] else DIGIT_SIZE
    return {**_distances(features, reference),
            "fid_std": fid_bootstrap_std(features, reference),
            "fid_floor": real_digit_floor(len(features), size),
            "confidence": float(probabilities.max(1).values.mean()),
            "coverage": class_coverage(probabilities),
            "num_samples": len(features)}


# ---------------------------------------------------------------- Inception-v3 for RGB images
def _inception_weights() -> Path | None:
    """A local copy of torch-fidelity's Inception weights: $COURSE_INCEPTION_WEIGHTS or the torch hub cache."""
    if os.environ.get(INCEPTION_WEIGHTS_ENV):
        return Path(os.environ[INCEPTION_WEIGHTS_ENV]).expanduser()
    cached = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE
    return cached if cached.is_file() else None


@functools.lru_cache(maxsize=1)
def load_inception() -> nn.Module:
    """torch-fidelity's Inception-v3 feature extractor (2048-d pool features); raises MetricUnavailable."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError as exc:
        raise MetricUnavailable(f"torch-fidelity cannot be imported ({exc}). RGB metrics need it and torchvision: "
                                "`pip install torch-fidelity` on a machine where torchvision works.") from exc
    from .environment import is_online

    weights = _inception_weights()
    if weights is not None and not weights.is_file():
        raise MetricUnavailable(f"{INCEPTION_WEIGHTS_ENV} points to {weights}, which does not exist.")
    if weights is None and not is_online():
        raise MetricUnavailable("the Inception-v3 weights are not cached and the network is offline; run once "
                                f"online, or set {INCEPTION_WEIGHTS_ENV} to a local copy of {INCEPTION_WEIGHTS_FILE}.")
    try:
        return FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                           feature_extractor_weights_path=None if weights is None else str(weights))
    except Exception as exc:  # noqa: BLE001 - a failed download or a bad file both mean "unavailable"
        raise MetricUnavailable(f"the Inception-v3 weights could not be loaded ({exc}).") from exc


@torch.no_grad()
def inception_features(images, value_range: tuple[float, float] = (-1.0, 1.0), batch_size: int = 50,
                       min_samples: int = MIN_SAMPLES) -> torch.Tensor:
    """2048-d Inception-v3 features of RGB images (grayscale is repeated to 3 channels)."""
    x = check_images(images, value_range, "RGB images", min_samples)
    model = load_inception()
    x = ((x.expand(-1, 3, -1, -1) + 1) * 127.5).round().to(torch.uint8)
    return torch.cat([model(batch)[0].reshape(len(batch), -1) for batch in x.split(batch_size)])


def inception_metrics(images, reference, value_range: tuple[float, float] = (-1.0, 1.0),
                      reference_range: tuple[float, float] = (-1.0, 1.0)) -> dict[str, float]:
    """Inception FID and KID of images against real ``reference`` images.

    The reference is split in two halves: the images are scored against one, and ``fid_floor`` is the
    score of (at most as many) real images from the other half.
    """
    load_inception()  # fail early, before any work, when the network is unavailable
    features = inception_features(images, value_range)
    real = inception_features(reference, reference_range, min_samples=2 * MIN_SAMPLES)
    target, held_out = real[0::2], real[1::2]
    return {**_distances(features, target),
            "fid_floor": frechet_distance(held_out[:len(features)], target),
            "num_samples": len(features)}


# ---------------------------------------------------------------- evaluating a pipeline
def evaluate_pipeline(pipeline, num_samples: int = 1000, batch_size: int = 100, sampler: str = "ddpm",
                      num_inference_steps: int = 1000, seed: int = 0, reference=None,
                      progress: bool = True, guide=None, guidance_scale: float = 1.0,
                      guide_interval: tuple[float, float] | None = None) -> dict[str, float]:
    """Generate ``num_samples`` images with ``pipeline`` (a DDPMPipeline) and score them.

    ``guide``, ``guidance_scale`` and ``guide_interval`` turn on autoguidance (see ``utils.sampling.generate``).

    1-channel models get the digit metrics (``digit_metrics``); RGB models get Inception FID/KID against
    ``reference`` (real images, e.g. the training set, in [-1, 1]). When the RGB metric is unavailable
    (offline, torch-fidelity missing, no reference) this prints why and returns {} -- never a made-up number.
    """
    from .sampling import generate, make_scheduler

    if num_samples < MIN_SAMPLES:
        raise MetricError(f"num_samples={num_samples}: the metrics need at least {MIN_SAMPLES} samples "
                          "(use 1 000 for numbers you compare).")
    rgb = pipeline.unet.config.in_channels != 1
    if rgb:
        try:
            load_inception()
            if reference is None:
                raise MetricUnavailable("RGB models are scored against real images; pass reference=... "
                                        "(for example the training images as a tensor in [-1, 1]).")
        except MetricUnavailable as exc:
            print(f"⚠ RGB 画像の評価指標（Inception-v3 による FID/KID）は計算できません: {exc}")
            return {}
    scheduler = make_scheduler(sampler, pipeline.scheduler.config)
    generator = torch.Generator().manual_seed(seed)
    samples = generate(pipeline.unet, scheduler, num_samples, num_inference_steps, generator=generator,
                       batch_size=batch_size, progress=progress, guide=guide, guidance_scale=guidance_scale,
                       guide_interval=guide_interval)
    return inception_metrics(samples, reference) if rgb else digit_metrics(samples)
