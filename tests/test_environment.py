import time

import pytest
import torch

from utils import environment as env


@pytest.mark.parametrize("environ, expected", [
    ({"COLAB_RELEASE_TAG": "release-colab_20261101"}, "colab"),
    ({"COLAB_GPU": "1"}, "colab"),
    ({"KAGGLE_KERNEL_RUN_TYPE": "Interactive"}, "kaggle"),
    ({"KAGGLE_URL_BASE": "https://www.kaggle.com"}, "kaggle"),
    ({"PAPERSPACE_NOTEBOOK_REPO_ID": "abc"}, "gradient"),
    ({"HOME": "/home/studio-lab-user"}, "studiolab"),
    ({"HOME": "/home/someone"}, "local"),
    ({}, "local"),
])
def test_detect_platform(environ, expected):
    assert env.detect_platform(environ) == expected


@pytest.mark.parametrize("value, cuda, expected", [
    ("1", True, True), ("0", False, False), ("true", True, True), ("off", False, False),
    (None, False, True), (None, True, False), ("", True, False),
])
def test_quick_mode(value, cuda, expected):
    environ = {} if value is None else {"COURSE_QUICK": value}
    assert env.is_quick_mode(environ, cuda_available=cuda) is expected


def test_quick_mode_rejects_unknown_value():
    with pytest.raises(ValueError, match="COURSE_QUICK='maybe'.*1 \\(on\\) or 0 \\(off\\)"):
        env.is_quick_mode({"COURSE_QUICK": "maybe"})


def test_offline_flag_is_honoured_instantly():
    start = time.perf_counter()
    assert env.is_online(environ={"HF_HUB_OFFLINE": "1"}) is False
    assert time.perf_counter() - start < 0.1


def test_online_probe_never_takes_longer_than_its_timeout():
    # an unresolvable endpoint: the probe must give up within the timeout, whatever DNS does
    env._probe_hub.cache_clear()
    start = time.perf_counter()
    assert env.is_online(timeout=0.5, environ={"HF_ENDPOINT": "https://hub.invalid"}) is False
    assert time.perf_counter() - start < 1.5


def test_seed_everything_makes_torch_reproducible():
    gen = env.seed_everything(123)
    a = torch.randn(5)
    env.seed_everything(123)
    assert torch.equal(a, torch.randn(5))
    assert torch.equal(torch.randn(3, generator=gen), torch.randn(3, generator=torch.Generator().manual_seed(123)))


def test_get_device_is_cpu_here():
    assert env.get_device().type in {"cpu", "cuda", "mps"}
    if not torch.cuda.is_available():
        assert env.get_device().type in {"cpu", "mps"}


def test_describe_device_names_what_a_timing_was_measured_on(one_thread):
    assert env.describe_device("cpu") == "cpu (1 thread)"
    assert env.describe_device(torch.device("meta")) == "meta"


def test_summary_is_one_japanese_line():
    line = env.environment_summary(torch.device("cpu"), quick=True, online=False)
    assert "\n" not in line
    for part in ("デバイス: cpu", "torch", "diffusers", "クイック", "オフライン"):
        assert part in line


def test_setup_course_announces_default_quick_mode(monkeypatch, capsys):
    monkeypatch.delenv("COURSE_QUICK", raising=False)
    monkeypatch.setattr(env.torch.cuda, "is_available", lambda: False)
    device, quick, online = env.setup_course(seed=0)
    out = capsys.readouterr().out
    assert quick and not online and device.type in {"cpu", "mps"}
    assert "COURSE_QUICK=0" in out and "クイックモード" in out
