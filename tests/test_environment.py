import pytest
import torch

from utils import course
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


def test_offline_flag_is_honoured_without_a_probe(monkeypatch):
    probes = []
    monkeypatch.setattr(env, "_probe_hub", lambda *address: probes.append(address) or True)
    assert env.is_online(environ={"HF_HUB_OFFLINE": "1"}) is False
    assert env.is_online(environ={"HF_DATASETS_OFFLINE": "yes"}) is False
    assert probes == []
    assert env.is_online(timeout=0.5, environ={"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}) is True
    assert probes == [("127.0.0.1", 9, 0.5)]


def test_online_probe_waits_for_at_most_its_timeout(monkeypatch):
    """The probe thread is joined with the timeout, so a DNS lookup that hangs cannot hold the notebook."""
    import threading

    release, joins = threading.Event(), []

    def hanging_connection(address, timeout):
        release.wait()
        raise OSError("unreachable")

    real_join = threading.Thread.join

    def recording_join(self, timeout=None):
        joins.append(timeout)
        return real_join(self, 0)  # the probe is still hanging: return at once instead of waiting

    monkeypatch.setattr(env.socket, "create_connection", hanging_connection)
    monkeypatch.setattr(threading.Thread, "join", recording_join)
    try:
        assert env._can_connect("hub.invalid", 443, timeout=0.5) is False
    finally:
        release.set()
    assert joins == [0.5]


def test_seed_everything_makes_torch_reproducible():
    gen = env.seed_everything(123)
    a = torch.randn(5)
    env.seed_everything(123)
    assert torch.equal(a, torch.randn(5))
    assert torch.equal(torch.randn(3, generator=gen), torch.randn(3, generator=torch.Generator().manual_seed(123)))


def test_get_device_prefers_a_usable_gpu_then_mps_then_cpu(monkeypatch):
    mps = env.torch.backends.mps
    for usable, mps_available, expected in ((True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")):
        monkeypatch.setattr(env, "cuda_usable", lambda usable=usable: usable)
        monkeypatch.setattr(mps, "is_available", lambda available=mps_available: available)
        assert env.get_device() == torch.device(expected)


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
    device, quick, online = course.setup_course(seed=0)
    out = capsys.readouterr().out
    assert quick and not online and device.type in {"cpu", "mps"}
    assert "COURSE_QUICK=0" in out and "クイックモード" in out


CU128_ARCHS = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]


@pytest.mark.parametrize("capability, arch_list, expected", [
    ((6, 0), CU128_ARCHS, False),  # Kaggle's P100 beside a cu128 build
    ((7, 5), CU128_ARCHS, True),  # T4
    ((8, 9), ["sm_80", "sm_86", "sm_90"], True),  # an sm_86 cubin runs on 8.9
    ((8, 0), ["sm_86", "sm_90"], False),  # but not on an older minor
    ((9, 0), ["sm_80", "compute_80"], True),  # PTX is compiled just in time for newer GPUs
    ((9, 0), ["sm_80", "sm_86"], False),
    ((12, 0), ["sm_90a", "sm_100", "sm_120"], True),
    ((6, 1), ["sm_50", "sm_60"], True),
])
def test_cuda_arch_supported(capability, arch_list, expected):
    assert env.cuda_arch_supported(capability, arch_list) is expected


@pytest.fixture
def fake_gpu(monkeypatch):
    """Pretend a CUDA device is present; returns a function to set its name, capability and the build's archs."""
    def configure(name, capability, arch_list):
        monkeypatch.setattr(env.torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(env.torch.cuda, "get_device_name", lambda *_: name)
        monkeypatch.setattr(env.torch.cuda, "get_device_capability", lambda *_: capability)
        monkeypatch.setattr(env.torch.cuda, "get_arch_list", lambda: arch_list)
        monkeypatch.setattr(env.torch.version, "hip", None)
        env.cuda_problem.cache_clear()

    yield configure
    env.cuda_problem.cache_clear()


def test_gpu_the_build_was_not_compiled_for_falls_back_to_cpu_and_quick_mode(fake_gpu, capsys):
    fake_gpu("Tesla P100-PCIE-16GB", (6, 0), CU128_ARCHS)
    assert env.get_device().type in {"cpu", "mps"}
    assert env.is_quick_mode({}) is True
    out = capsys.readouterr().out
    assert "Tesla P100-PCIE-16GB" in out and "6.0" in out and "CPU" in out and "T4" in out
    env.get_device()
    assert capsys.readouterr().out == "", "the warning is printed once, not at every call"


def test_gpu_whose_first_operation_fails_falls_back_to_cpu(fake_gpu, capsys):
    # the capability matches, but this CPU build cannot launch a CUDA kernel: the tiny operation fails
    fake_gpu("Tesla T4", (7, 5), CU128_ARCHS)
    assert env.get_device().type in {"cpu", "mps"}
    assert env.is_quick_mode({}) is True
    assert env.is_quick_mode({"COURSE_QUICK": "0"}) is False  # an explicit setting still wins
    assert "小さな計算が失敗" in capsys.readouterr().out


def test_gpu_that_runs_the_tiny_operation_is_used(fake_gpu, monkeypatch, capsys):
    fake_gpu("Tesla T4", (7, 5), CU128_ARCHS)
    ones = env.torch.ones
    ran = []
    monkeypatch.setattr(env.torch, "ones", lambda *size, device=None, **kw: ran.append(device) or ones(*size, **kw))
    assert env.get_device() == torch.device("cuda")
    assert env.is_quick_mode({}) is False
    assert ran == ["cuda"] and capsys.readouterr().out == ""


DRIVER_TOO_OLD = "The NVIDIA driver on your system is too old (found version 11040)."


@pytest.mark.parametrize("query", ["is_available", "get_device_name", "get_device_capability", "get_arch_list",
                                   "first operation"])
def test_gpu_that_claims_to_be_there_but_cannot_start_falls_back_to_cpu(fake_gpu, monkeypatch, capsys, query):
    """A driver that is too old, a build without CUDA, a device that fails at initialisation: whichever CUDA query
    raises first, the course runs on the CPU in quick mode with the Japanese message, and the setup line says so."""
    fake_gpu("Tesla T4", (7, 5), CU128_ARCHS)

    def fail(*args, **kwargs):
        raise RuntimeError(DRIVER_TOO_OLD)

    if query == "first operation":
        monkeypatch.setattr(env.torch, "ones", fail)
    else:
        monkeypatch.setattr(env.torch.cuda, query, fail)
    assert env.cuda_usable() is False
    assert env.get_device().type in {"cpu", "mps"}
    assert env.is_quick_mode({}) is True
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("⚠️ ") and "CPU（とクイックモード）で実行します" in out
    assert "RuntimeError: The NVIDIA driver on your system is too old" in out
    if query in ("is_available", "get_device_name", "get_device_capability", "get_arch_list"):
        assert "初期化できませんでした" in out and "ドライバー" in out
    else:
        assert "Tesla T4" in out and "小さな計算が失敗" in out

    monkeypatch.delenv("COURSE_QUICK", raising=False)
    device, quick, online = course.setup_course(seed=0)
    line = capsys.readouterr().out
    assert device.type in {"cpu", "mps"} and quick
    assert "クイックモード" in line and "デバイス: cpu" in line.replace("デバイス: mps", "デバイス: cpu")
