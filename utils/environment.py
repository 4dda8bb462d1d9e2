"""Platform detection, device choice, seeding, quick mode and online/offline detection."""

from __future__ import annotations

import functools
import os
import platform as _platform
import random
import socket
import sys
import threading
from pathlib import Path

import numpy as np
import torch

# The CUDA guard lives in utils/setup.py (the bottom layer) so the notebooks' setup cell uses the same check
from .setup import cuda_arch_supported as cuda_arch_supported
from .setup import cuda_problem as cuda_problem
from .setup import error_summary as error_summary

PLATFORM_NAMES = {
    "colab": "Google Colab",
    "kaggle": "Kaggle",
    "gradient": "Paperspace Gradient",
    "studiolab": "SageMaker Studio Lab",
    "local": "ローカル",
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


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
