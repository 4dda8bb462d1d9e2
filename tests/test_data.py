import numpy as np
import pytest
import torch
from PIL import Image

from utils import data


def test_preprocess_rgb_range_and_shape():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8))
    x = data.preprocess_image(image, 32)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert -1.0 <= x.min() and x.max() <= 1.0


def test_preprocess_grayscale_from_rgba_and_palette():
    for mode in ("RGBA", "P", "L", "I;16"):
        image = Image.new("RGB", (10, 20), (255, 0, 0)).convert(mode) if mode != "I;16" else Image.new(mode, (5, 5))
        assert data.preprocess_image(image, 8, channels=1).shape == (1, 8, 8)


def test_pil_tensor_round_trip_is_exact():
    array = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    x = data.preprocess_image(Image.fromarray(array), 16)
    assert np.array_equal(np.asarray(data.tensor_to_pil(x)), array)
    gray = np.random.default_rng(2).integers(0, 256, (16, 16), dtype=np.uint8)
    g = data.preprocess_image(Image.fromarray(gray, "L"), 16, channels=1)
    assert np.array_equal(np.asarray(data.tensor_to_pil(g)), gray)


def test_flip_and_center_crop():
    image = Image.new("RGB", (4, 2))
    image.putpixel((0, 0), (255, 255, 255))
    flipped = data.preprocess_image(image, 4, flip=False), data.preprocess_image(image, 4, flip=True)
    assert torch.equal(flipped[0].flip(-1), flipped[1])
    wide = Image.new("RGB", (30, 10), (0, 0, 0))
    wide.paste((255, 255, 255), (10, 0, 20, 10))  # white centre square
    assert data.preprocess_image(wide, 10, center_crop=True).min() == 1.0


def test_bad_channels_message():
    with pytest.raises(ValueError, match="channels must be 1"):
        data.preprocess_image(Image.new("RGB", (4, 4)), 4, channels=2)


def test_random_flip_probability_extremes():
    batch = torch.arange(2 * 1 * 2 * 3, dtype=torch.float32).view(2, 1, 2, 3)
    assert torch.equal(data.random_flip(batch, p=0.0), batch)
    assert torch.equal(data.random_flip(batch, p=1.0), batch.flip(-1))


def test_dataloader_batches_labels_and_flip():
    images = torch.randn(10, 1, 4, 4)
    loader = data.make_dataloader(images, batch_size=4, shuffle=False, labels=torch.arange(10))
    batches = list(loader)
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    assert torch.equal(batches[0][0], images[:4]) and torch.equal(batches[2][1], torch.tensor([8, 9]))
    flipped = torch.cat(list(data.make_dataloader(images, 10, shuffle=False, flip=True)))
    assert all(torch.equal(a, b) or torch.equal(a.flip(-1), b) for a, b in zip(images, flipped))


def test_synthetic_butterflies_are_deterministic_and_varied():
    a, b = data.synthetic_butterflies(4, seed=3), data.synthetic_butterflies(4, seed=3)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))
    assert a[0].size == (64, 64) and a[0].mode == "RGB"
    assert not np.array_equal(np.asarray(a[0]), np.asarray(a[1]))


def test_real_mnist_fallback_split_is_stratified_and_disjoint():
    train, train_labels = data.real_mnist_digits("train")
    test, test_labels = data.real_mnist_digits("test")
    assert len(train) == 4000 and len(test) == 1000
    assert np.bincount(test_labels).tolist() == [100] * 10
    assert train[0].size == (28, 28) and train[0].mode == "L"
    # real digits: dark background, bright strokes
    arr = np.stack([np.asarray(im) for im in test[:50]])
    assert arr[:, 0, :].mean() < 5 and arr.max() == 255
    train_set = {np.asarray(im).tobytes() for im in train}
    assert not any(np.asarray(im).tobytes() in train_set for im in test)
    with pytest.raises(data.DataError, match="'train' and 'test'"):
        data.real_mnist_digits("validation")


def test_offline_loading_picks_labelled_fallbacks(capsys):
    mnist = data.load_image_dataset("mnist", max_samples=20)
    assert data.is_fallback(mnist) and len(mnist) == 20
    assert mnist.column_names == ["image", "label"]
    assert "オフライン" in capsys.readouterr().out
    butterflies = data.load_image_dataset(data.BUTTERFLIES, max_samples=5)
    assert data.is_fallback(butterflies) and butterflies[0]["image"].mode == "RGB"
    assert "合成" in capsys.readouterr().out


def test_offline_fallback_says_a_configuration_name_was_not_checked(capsys):
    """The stand-in has no configurations: a --dataset_config_name it cannot check is named in one line, not ignored."""
    dataset = data.load_image_dataset("mnist", config_name="nope", max_samples=4)
    assert data.is_fallback(dataset) and len(dataset) == 4
    lines = capsys.readouterr().out.splitlines()
    (line,) = [line for line in lines if "'nope'" in line]
    assert line.startswith("⚠ ") and "--dataset_config_name" in line and "確かめられず" in line
    assert "オンラインで確かめるか、指定を外してください" in line
    data.load_image_dataset("mnist", max_samples=4)
    assert "--dataset_config_name" not in capsys.readouterr().out  # no configuration given: nothing to say


@pytest.mark.parametrize("error, offered", [
    (ValueError("BuilderConfig 'nope' not found. Available: ['mnist']"), ["mnist"]),
    (ValueError("BuilderConfig 'nope' not found. Available: ['default', 'small']"), ["default", "small"]),
    (ValueError("BuilderConfig nope not found."), []),  # no list: the configuration is still named as the mistake
    (ValueError("BuilderConfig 'x' not found. Available: [garbled"), []),
    (ValueError("Unknown split 'train'"), None),  # other errors keep their own handling
    (RuntimeError("BuilderConfig 'nope' not found. Available: ['mnist']"), None),
])
def test_a_refused_configuration_name_is_told_from_other_errors(error, offered):
    assert data._configurations_offered(error) == offered


def test_a_configuration_the_dataset_lacks_is_a_data_error_naming_the_option(monkeypatch):
    import datasets

    def load_dataset(*args, **kwargs):
        raise ValueError("BuilderConfig 'nope' not found. Available: ['mnist']")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(data, "is_online", lambda: False)
    monkeypatch.setattr(data, "offline_requested", lambda: True)  # the local cache is asked, as offline mode does
    with pytest.raises(data.DataError) as error:
        data.load_image_dataset("mnist", config_name="nope")
    assert str(error.value) == ("Dataset 'mnist' has no configuration 'nope'; its configurations are ['mnist']. Pass "
                                "one of them as config_name (--dataset_config_name in the script), or leave it out.")


def test_hub_dataset_options_given_with_a_folder_are_said_to_be_ignored(tmp_path, capsys):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    images, info = data.load_training_images(resolution=4, train_data_dir=tmp_path, config_name="nope",
                                             image_column="pixels", storage="memory")
    assert len(images) == 1 and info["dataset"] == str(tmp_path)
    lines = [line for line in capsys.readouterr().out.splitlines() if "is ignored" in line]
    assert lines == ["⚠ --dataset_config_name 'nope' is ignored: it applies to --dataset_name, and --train_data_dir "
                     "uses every image of the folder. Leave it out.",
                     "⚠ --image_column 'pixels' is ignored: it applies to --dataset_name, and --train_data_dir uses "
                     "every image of the folder. Leave it out."]
    data.load_training_images(resolution=4, train_data_dir=tmp_path, storage="memory")
    assert "is ignored" not in capsys.readouterr().out


def test_an_image_too_large_for_pil_is_skipped_as_unreadable(tmp_path, monkeypatch):
    """PIL refuses to open an image past its decompression-bomb limit: that file is skipped and counted."""
    Image.new("RGB", (64, 64)).save(tmp_path / "huge.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "small.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 64 is over twice the limit: DecompressionBombError
    good, bad = data.find_images(tmp_path)
    assert [p.name for p in good] == ["small.png"] and [p.name for p in bad] == ["huge.png"]
    pixels, problems, _ = data.decode_images(lambda i: Image.open(tmp_path / "huge.png"), 1, 4, skip_unreadable=True)
    assert len(pixels) == 0 and "exceeds limit" in problems[0]


def test_unknown_dataset_offline_says_what_to_do():
    with pytest.raises(data.DataError, match="no offline fallback.*local image folder"):
        data.load_image_dataset("someone/does-not-exist")
    with pytest.raises(data.DataError, match="No dataset name"):
        data.load_image_dataset("")


def test_image_folder_skips_unreadable_and_converts_modes(tmp_path, capsys):
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (30, 20), (255, 0, 0)).save(tmp_path / "a.png")
    Image.new("L", (8, 8), 128).save(tmp_path / "sub" / "b.jpg")
    Image.new("RGBA", (12, 12)).save(tmp_path / "c.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("ignored")
    dataset = data.load_image_folder(tmp_path)
    assert len(dataset) == 3
    assert "1 枚をスキップ" in capsys.readouterr().out
    x = data.images_to_tensor(dataset["image"], 16, channels=3)
    assert x.shape == (3, 3, 16, 16)


def test_image_folder_bad_input_messages(tmp_path):
    with pytest.raises(data.DataError, match="does not exist"):
        data.load_image_folder(tmp_path / "missing")
    with pytest.raises(data.DataError, match="no readable images.*0 image files"):
        data.load_image_folder(tmp_path)
    (tmp_path / "x.jpg").write_bytes(b"\xff\xd8garbage")
    with pytest.raises(data.DataError, match="1 unreadable"):
        data.find_images(tmp_path)


def test_images_to_tensor_rejects_empty():
    with pytest.raises(data.DataError, match="empty"):
        data.images_to_tensor([], 8)


def test_missing_image_column_lists_columns():
    from datasets import Dataset

    ds = Dataset.from_dict({"text": ["a"]})
    with pytest.raises(data.DataError, match=r"no image column \(columns: \['text'\]\)"):
        data._standardise_image_column(ds, None, "x")
    with pytest.raises(data.DataError, match="no column 'img'"):
        data._standardise_image_column(ds, "img", "x")


def test_decode_images_fills_one_tensor_skips_broken_images_and_reports_grayscale():
    rng = np.random.default_rng(3)
    images = [Image.fromarray(rng.integers(0, 256, (12, 9), dtype=np.uint8), "L") for _ in range(5)]

    def load(i):
        if i == 2:
            raise OSError("truncated")
        return images[i]

    out = torch.full((5, 3, 8, 8), 7, dtype=torch.uint8)
    pixels, problems, grayscale = data.decode_images(load, 5, 8, 3, skip_unreadable=True, out=out, threads=2)
    assert problems == ["image 2: truncated"] and grayscale
    assert pixels.shape == (4, 3, 8, 8) and pixels.data_ptr() == out.data_ptr()  # filled in place, no copy
    expected = torch.stack([data.preprocess_image(images[i], 8) for i in (0, 1, 3, 4)])
    assert torch.equal(pixels.float() / 127.5 - 1, expected)
    with pytest.raises(OSError, match="truncated"):
        data.decode_images(load, 5, 8)
    with pytest.raises(ValueError, match="shape"):
        data.decode_images(load, 5, 8, out=torch.zeros(5, 1, 8, 8, dtype=torch.uint8))


def test_image_cache_round_trip_key_and_full_disk(tmp_path, monkeypatch):
    key = {"source": "x", "resolution": 4}
    cache = data.ImageCache(tmp_path / "cache", key)
    assert cache.load() is None
    pixels = cache.create((3, 1, 4, 4))
    pixels.copy_(torch.arange(48, dtype=torch.uint8).view(3, 1, 4, 4))
    assert cache.load() is None  # not finished yet: a run killed while decoding leaves no usable cache
    cache.finish(2, {"channels": 1})
    loaded, info = data.ImageCache(tmp_path / "cache", dict(key)).load()
    assert info == {"channels": 1} and torch.equal(loaded, pixels[:2])
    assert data.ImageCache(tmp_path / "cache", {**key, "resolution": 8}).load() is None

    usage = data.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(data.shutil, "disk_usage", lambda path: usage._replace(free=10))
    with pytest.raises(data.DataError, match="needs 48 B in .*only 10 B free"):
        data.ImageCache(tmp_path / "other", key).create((3, 1, 4, 4))


def test_memory_available_reads_the_system():
    available = data.memory_available()
    assert available is None or available > 0
    assert data.format_bytes(196_608) == "196.6 KB" and data.format_bytes(12) == "12 B"
