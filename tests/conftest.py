"""Test configuration: keep every test offline (the course is importable: pip install -e . or the repository root)."""

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("COURSE_QUICK", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread (and do not suffer when the machine is busy)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def hub():
    """The local Hub look-alike (tests/hub_server.py) on 127.0.0.1, seeded with the course's repositories."""
    from hub_server import FakeHub, seed_course_repos

    server = seed_course_repos(FakeHub())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def origin(tmp_path_factory):
    """A git snapshot of this working tree's tracked files, for the setup cell of a notebook run alone to clone."""
    from notebook_runs import snapshot_repository

    return snapshot_repository(tmp_path_factory.mktemp("origin"))


@pytest.fixture
def hub_env(hub, tmp_path):
    """Environment for a subprocess that talks to the local Hub, logged in with its dummy token.

    HF_ENDPOINT is read when huggingface_hub is imported, so online code runs in a fresh process. The server
    speaks the LFS upload protocol, not Xet, hence HF_HUB_DISABLE_XET.
    """
    hub.failure = None
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=hub.endpoint, HF_HOME=str(tmp_path / "hf-home"), HF_HUB_OFFLINE="0", HF_TOKEN=hub.token,
               HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_PROGRESS_BARS="1", COURSE_QUICK="1", PYTHONPATH=str(ROOT))
    yield env
    hub.failure = None


def pytest_collection_modifyitems(items):
    """Notebook runs (nbval items) are slow tests: `pytest -m "not slow"` leaves them out."""
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)
