"""Platform detection, device choice, seeding, quick mode and online/offline detection."""

from __future__ import annotations

import functools
import os
import platform as _platform
import random
import re
import socket
import sys
import threading
from pathlib import Path

import numpy as np
import torch

PLATFORM_NAMES = {
    "colab": "Google Colab",
    "kaggle": "Kaggle",
    "gradient": "Paperspace Gradient",
    "studiolab": "SageMaker Studio Lab",
    "local": "ローカル",
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_KAGGLE_HINT = "Kaggle では GPU に P100 ではなく T4 を選んでください"


def detect_platform(environ=None) -> str:
    """Return 'colab', 'kaggle', 'gradient', 'studiolab' or 'local' from the platform's markers."""
    env = os.environ if environ is None else environ
    if "COLAB_RELEASE_TAG" in env or "COLAB_GPU" in env or (environ is None and "google.colab" in sys.modules):
        return "colab"
    if "KAGGLE_KERNEL_RUN_TYPE" in env or "KAGGLE_URL_BASE" in env:
        return "kaggle"
    if any(key.startswith("PAPERSPACE_") for key in env):
        return "gradient"
    if "studio-lab-user" in env.get("HOME", "") or env.get("USER") == "studio-lab-user":
        return "studiolab"
    return "local"


def cuda_arch_supported(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """True when a build compiled for ``arch_list`` (torch.cuda.get_arch_list()) runs on a GPU of ``capability``.

    A cubin for sm_XY runs on the same major version with an equal or higher minor; PTX (compute_XY) is
    compiled just in time for any newer GPU.
    """
    for arch in arch_list:
        kind, _, number = arch.partition("_")
        digits = re.match(r"\d+", number)
        if digits is None or len(digits.group()) < 2:
            continue
        built = (int(digits.group()[:-1]), int(digits.group()[-1]))
        if (kind == "sm" and built[0] == capability[0] and built[1] <= capability[1]) or (
                kind == "compute" and built <= tuple(capability)):
            return True
    return False


@functools.cache
def cuda_problem() -> str | None:
    """None when CUDA is available and works; '' when there is no GPU; otherwise why not (printed once, Japanese).

    ``torch.cuda.is_available() == True`` does not promise a working GPU: a GPU the installed build was not compiled
    for (a Kaggle P100 with a cu128 torch) fails on its first kernel, and a driver that is too old, a build without
    CUDA or a device that fails at initialisation raise from the first query. Every query runs inside this guard:
    the device's name, capability and the build's architectures, then one tiny operation.
    """
    gpu, kernel = "GPU", False
    try:
        if not torch.cuda.is_available():
            return ""
        device_name = torch.cuda.get_device_name(0)
        gpu = f"GPU（{device_name}）"
        capability = tuple(torch.cuda.get_device_capability(0))
        arch_list = torch.cuda.get_arch_list()
        if getattr(torch.version, "hip", None) is None and arch_list and not cuda_arch_supported(capability, arch_list):
            problem = (f"GPU（{device_name}、compute capability {capability[0]}.{capability[1]}）は、入っている torch "
                       f"{torch.__version__}（対応: {' '.join(arch_list)}）では動きません。{_KAGGLE_HINT}")
        else:
            kernel = True
            torch.ones(1, device="cuda").add_(1).item()  # the first kernel launch is where an unsupported GPU fails
            problem = None
    except Exception as error:  # noqa: BLE001 - whatever CUDA raises, the course runs on the CPU instead
        if kernel:
            problem = f"{gpu}で小さな計算が失敗しました（{error_summary(error)}）。{_KAGGLE_HINT}"
        else:
            problem = (f"{gpu}があると報告されましたが、初期化できませんでした（{error_summary(error)}）。"
                       "NVIDIA ドライバーが古くないか、torch が CUDA 版かを確かめてください")
    if problem:
        print(f"⚠️ {problem}。CPU（とクイックモード）で実行します。")
    return problem


def cuda_usable() -> bool:
    """True when CUDA is available and a tiny operation runs on it (see cuda_problem)."""
    return cuda_problem() is None


def get_device() -> torch.device:
    """The best usable device: cuda (when a tiny op runs on it), then mps, then cpu."""
    if cuda_usable():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and PyTorch; return a CPU generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _env_flag(name: str, environ=None) -> bool | None:
    env = os.environ if environ is None else environ
    value = env.get(name)
    if value is None or value.strip() == "":
        return None
    value = value.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name}={env.get(name)!r} is not understood: use 1 (on) or 0 (off).")


def is_quick_mode(environ=None, cuda_available: bool | None = None) -> bool:
    """COURSE_QUICK=1 forces quick mode, =0 forces full mode; unset: quick exactly when no usable GPU."""
    flag = _env_flag("COURSE_QUICK", environ)
    if flag is not None:
        return flag
    return not (cuda_usable() if cuda_available is None else cuda_available)


def _can_connect(host: str, port: int, timeout: float) -> bool:
    result = []

    def probe():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    # DNS lookups ignore socket timeouts, so the probe runs in a daemon thread with a hard limit.
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


@functools.cache
def _probe_hub(host: str, port: int, timeout: float) -> bool:
    return _can_connect(host, port, timeout)


def hub_address(environ=None) -> tuple[str, int]:
    """(host, port) of HF_ENDPOINT (default https://huggingface.co); the port defaults by scheme."""
    from urllib.parse import urlsplit

    endpoint = (os.environ if environ is None else environ).get("HF_ENDPOINT") or "https://huggingface.co"
    url = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    try:
        port = url.port
    except ValueError as error:
        raise ValueError(f"HF_ENDPOINT={endpoint!r} has an invalid port: {error}.") from None
    return url.hostname or "huggingface.co", port or (80 if url.scheme == "http" else 443)


def offline_requested(environ=None) -> bool:
    """True when HF_HUB_OFFLINE or HF_DATASETS_OFFLINE asks for offline mode (parsed as huggingface_hub does)."""
    env = os.environ if environ is None else environ
    return any(env.get(name, "").strip().lower() in _TRUE for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def is_online(timeout: float = 2.0, environ=None) -> bool:
    """True when the Hub at HF_ENDPOINT is reachable; honours HF_HUB_OFFLINE and never waits > timeout.

    HF_HUB_OFFLINE / HF_DATASETS_OFFLINE are read as huggingface_hub reads them: 1/true/yes/on mean offline,
    anything else (0, false, unset) means online.
    """
    if offline_requested(environ):
        return False
    return _probe_hub(*hub_address(environ), timeout)


def error_summary(error: BaseException, limit: int = 200) -> str:
    """'ErrorType: first line of the message', short enough for a notebook output."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:limit]}" if lines else type(error).__name__


def library_versions() -> dict[str, str]:
    """Versions of the main libraries (missing ones are reported as 'なし')."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("torch", "diffusers", "datasets", "accelerate"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "なし"
    return versions


def describe_device(device: torch.device | str) -> str:
    """'cuda (NVIDIA H100 80GB HBM3)', 'cpu (2 threads)' or 'mps': what a timing was measured on."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        threads = torch.get_num_threads()
        return f"cpu ({threads} thread{'s' if threads > 1 else ''})"
    return str(device)


def environment_summary(device: torch.device | None = None, quick: bool | None = None,
                        online: bool | None = None) -> str:
    """One Japanese line: platform, device, library versions, quick/full mode, online/offline."""
    device = get_device() if device is None else device
    quick = is_quick_mode() if quick is None else quick
    online = is_online() if online is None else online
    device_name = describe_device(device)
    versions = " ".join(f"{k} {v}" for k, v in library_versions().items())
    return (
        f"環境: {PLATFORM_NAMES[detect_platform()]} (Python {_platform.python_version()}) | "
        f"デバイス: {device_name} | {versions} | "
        f"モード: {'クイック（軽量設定）' if quick else 'フル'} | "
        f"ネットワーク: {'オンライン' if online else 'オフライン'}"
    )


def repo_root() -> Path:
    """The course repository's root folder (the parent of utils/)."""
    return Path(__file__).resolve().parent.parent
