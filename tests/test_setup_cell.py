"""The notebooks' setup cell, executed for real: in a throw-away venv, against a local wheelhouse, offline.

Each test runs the generated cell (tools.sync_course.setup_cell_source) in a fresh interpreter of a venv that
sees the test interpreter's packages (torch included) and installs into its own site-packages. ``coursefake`` is a
tiny wheel built here in versions 1.0 and 2.0, so pip really installs, upgrades and fails.
"""

import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tools import sync_course

SPLIT = sync_course.REQUIREMENTS_SPLIT


def build_wheel(folder: Path, version: str) -> Path:
    path = folder / f"coursefake-{version}-py3-none-any.whl"
    info = f"coursefake-{version}.dist-info"
    files = {
        "coursefake/__init__.py": f"__version__ = {version!r}\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: coursefake\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
    return path


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """A venv over this interpreter's packages, a wheelhouse with coursefake 1.0 and 2.0, and the cell's source."""
    root = tmp_path_factory.mktemp("setup-cell")
    wheels = root / "wheels"
    wheels.mkdir()
    for version in ("1.0", "2.0"):
        build_wheel(wheels, version)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    # see this interpreter's packages (torch, pip, packaging) even when it is itself a venv, behind the venv's own
    own = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                         capture_output=True, text=True, check=True).stdout.strip()
    Path(own, "parent.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    cell = root / "cell.py"
    cell.write_text(sync_course.setup_cell_source(), encoding="utf-8")
    return {"root": root, "wheels": wheels, "python": str(venv / "bin" / "python"), "cell": cell}


def make_course(folder: Path, runtime: str) -> Path:
    """A course root: utils/ and a requirements.txt whose runtime half is ``runtime``."""
    (folder / "utils").mkdir(parents=True)
    (folder / "utils" / "__init__.py").write_text("")
    (folder / "requirements.txt").write_text(f"{runtime}\n{SPLIT} (not installed)\npytest>=8\n")
    return folder


def pip(sandbox, *args):
    subprocess.run([sandbox["python"], "-m", "pip", "install", "-q", "--no-index", "--find-links",
                    str(sandbox["wheels"]), *args], check=True, capture_output=True)


def run_cell(sandbox, cwd: Path, prelude: str = "", **extra_env):
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(sandbox["wheels"]), **extra_env}
    env.pop("PYTHONPATH", None)
    code = f"{prelude}\nexec(compile(open({str(sandbox['cell'])!r}, encoding='utf-8').read(), 'setup-cell', 'exec'))"
    result = subprocess.run([sandbox["python"], "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=300)
    return result.returncode, result.stdout + result.stderr


def installed_version(sandbox):
    return subprocess.run([sandbox["python"], "-c", "import importlib.metadata as m; print(m.version('coursefake'))"],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.slow  # runs pip in the venv
def test_nothing_is_installed_when_everything_is_in_range_and_torch_is_never_touched(sandbox, tmp_path):
    # a whole clone (utils importable): the cell still checks; torch below its floor is only a warning,
    # and a GPU that cannot run a tiny operation (this CPU build) is reported instead of crashing later
    pip(sandbox, "coursefake==2.0")
    course = make_course(tmp_path / "course", "torch>=99.0\ncoursefake>=2.0  # a comment\n")
    prelude = ("import torch; torch.cuda.is_available = lambda: True; "
               "torch.cuda.get_device_name = lambda *a: 'Tesla P100-PCIE-16GB'")
    (course / "unit1").mkdir()
    code, out = run_cell(sandbox, course / "unit1", prelude)  # the notebook's folder, below the course root
    assert code == 0, out
    assert "必要なパッケージはそろっています" in out and "インストールします" not in out
    assert "torch" in out and "古すぎます" in out and "torch>=99.0" in out
    assert "Tesla P100-PCIE-16GB" in out and "T4" in out


@pytest.mark.slow  # runs pip in the venv
def test_missing_or_too_old_packages_are_installed_and_newer_ones_kept(sandbox, tmp_path):
    pip(sandbox, "coursefake==1.0")
    course = make_course(tmp_path / "course", "torch>=2.0\ncoursefake>=2.0,<3")
    code, out = run_cell(sandbox, course)
    assert code == 0, out
    assert "インストールします: coursefake<3,>=2.0" in out or "インストールします: coursefake>=2.0,<3" in out
    assert installed_version(sandbox) == "2.0"
    # a version above the range is left alone (the cell never downgrades what the platform ships)
    course = make_course(tmp_path / "course2", "torch>=2.0\ncoursefake>=1.0,<2")
    code, out = run_cell(sandbox, course)
    assert code == 0 and "必要なパッケージはそろっています" in out, out
    assert installed_version(sandbox) == "2.0"


@pytest.mark.slow  # runs pip in the venv
def test_upgrading_an_imported_package_asks_for_a_restart(sandbox, tmp_path):
    pip(sandbox, "--force-reinstall", "coursefake==1.0")
    course = make_course(tmp_path / "course", "torch>=2.0\ncoursefake>=2.0")
    code, out = run_cell(sandbox, course, prelude="import coursefake")
    assert code != 0
    assert "coursefake 1.0 → 2.0" in out and "再起動" in out and "このセルから実行し直してください" in out
    assert installed_version(sandbox) == "2.0"


@pytest.mark.slow  # runs pip in the venv
def test_a_failed_pip_run_shows_pips_own_error(sandbox, tmp_path):
    course = make_course(tmp_path / "course", "torch>=2.0\ncoursefake>=5.0")
    code, out = run_cell(sandbox, course)
    assert code != 0
    assert "No matching distribution found for coursefake>=5.0" in out  # pip's words, not a bare CalledProcessError
    assert "pip install に失敗しました" in out and "Internet" in out


def test_a_failed_clone_explains_how_to_turn_internet_on(sandbox, tmp_path):
    empty = tmp_path / "alone"
    empty.mkdir()
    code, out = run_cell(sandbox, empty, COURSE_REPO_URL=str(tmp_path / "no-such-repository"))
    assert code != 0
    assert "コースのリポジトリ" in out and "「Settings」→「Internet」" in out and "電話番号" in out
    assert not (empty / "diffusion-course").exists()


@pytest.mark.slow  # runs pip in the venv
def test_a_single_notebook_clones_the_course_and_checks_it_the_same_way(sandbox, tmp_path):
    pip(sandbox, "--force-reinstall", "coursefake==1.0")
    origin = make_course(tmp_path / "origin", "torch>=2.0\ncoursefake>=2.0")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q", "-b", sync_course.BRANCH, str(origin)], check=True)
    subprocess.run([*git, "-C", str(origin), "add", "."], check=True)
    subprocess.run([*git, "-C", str(origin), "commit", "-q", "-m", "course"], check=True)
    alone = tmp_path / "alone"
    alone.mkdir()
    code, out = run_cell(sandbox, alone, COURSE_REPO_URL=str(origin))
    assert code == 0, out
    clone = alone / sync_course.GITHUB_REPO.split("/")[1]
    assert (clone / "utils" / "__init__.py").exists()
    assert "インストールします: coursefake>=2.0" in out and installed_version(sandbox) == "2.0"
