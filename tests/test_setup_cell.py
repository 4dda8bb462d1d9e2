"""The notebooks' setup cell, executed for real: in a throw-away venv, against a local wheelhouse, offline.

The cell only finds or clones the course and calls utils.setup.ensure_packages, whose decisions (what to install,
version comparison, restart detection, the torch checks, pip's failure) tests/test_setup.py covers in-process. The
tests here run the generated cell (tools.sync_course.setup_cell_source) in a fresh interpreter of a venv that sees
the test interpreter's packages (torch included) and installs into its own site-packages, so pip really installs
and upgrades. ``coursefake`` is a tiny wheel built here in versions 1.0 and 2.0.
"""

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tools import sync_course

ROOT = Path(__file__).resolve().parent.parent
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
    """A course root: the real utils/__init__.py and utils/setup.py, and a requirements.txt whose runtime half is
    ``runtime``."""
    (folder / "utils").mkdir(parents=True)
    for name in ("__init__.py", "setup.py"):
        shutil.copy(ROOT / "utils" / name, folder / "utils" / name)
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


def commit(folder: Path) -> Path:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q", "-b", sync_course.BRANCH, str(folder)], check=True)
    subprocess.run([*git, "-C", str(folder), "add", "."], check=True)
    subprocess.run([*git, "-C", str(folder), "commit", "-q", "-m", "course"], check=True)
    return folder


def test_the_cell_only_fetches_the_course_and_calls_ensure_packages():
    source = sync_course.setup_cell_source()
    assert len(source.splitlines()) <= 40, "the setup cell's logic belongs in utils/setup.py"
    assert source.rstrip().endswith("ensure_packages(COURSE_ROOT)") and "pip" not in source


@pytest.mark.slow  # runs pip in the venv
def test_a_single_notebook_clones_the_course_installs_what_is_missing_or_too_old_and_keeps_newer(sandbox, tmp_path):
    pip(sandbox, "--force-reinstall", "coursefake==1.0")
    origin = commit(make_course(tmp_path / "origin", "torch>=2.0\ncoursefake>=2.0,<3  # a comment"))
    alone = tmp_path / "alone"
    alone.mkdir()
    code, out = run_cell(sandbox, alone, COURSE_REPO_URL=str(origin))  # opened alone, as on Colab
    assert code == 0, out
    assert (alone / sync_course.GITHUB_REPO.split("/")[1] / "utils" / "setup.py").exists()
    assert "インストールします: coursefake<3,>=2.0" in out or "インストールします: coursefake>=2.0,<3" in out
    assert installed_version(sandbox) == "2.0"
    # a whole clone, from the notebook's folder below the course root: a version above the range is left alone
    # (the cell never downgrades what the platform ships)
    course = make_course(tmp_path / "course", "torch>=2.0\ncoursefake>=1.0,<2")
    (course / "unit1").mkdir()
    code, out = run_cell(sandbox, course / "unit1")
    assert code == 0 and "必要なパッケージはそろっています" in out and "インストールします" not in out, out
    assert installed_version(sandbox) == "2.0"


@pytest.mark.slow  # runs pip in the venv
def test_upgrading_an_imported_package_asks_for_a_restart(sandbox, tmp_path):
    pip(sandbox, "--force-reinstall", "coursefake==1.0")
    course = make_course(tmp_path / "course", "torch>=2.0\ncoursefake>=2.0")
    code, out = run_cell(sandbox, course, prelude="import coursefake")
    assert code != 0
    assert "coursefake 1.0 → 2.0" in out and "再起動" in out and "このセルから実行し直してください" in out
    assert installed_version(sandbox) == "2.0"


def test_a_failed_clone_explains_how_to_turn_internet_on(sandbox, tmp_path):
    empty = tmp_path / "alone"
    empty.mkdir()
    code, out = run_cell(sandbox, empty, COURSE_REPO_URL=str(tmp_path / "no-such-repository"))
    assert code != 0
    assert "コースのリポジトリ" in out and "「Settings」→「Internet」" in out and "電話番号" in out
    assert not (empty / "diffusion-course").exists()


def test_an_old_copy_of_the_course_from_an_earlier_session_says_to_delete_it(sandbox, tmp_path):
    alone = tmp_path / "alone"  # a kept working folder (Kaggle, a laptop) with a clone older than utils/setup.py
    old = alone / sync_course.GITHUB_REPO.split("/")[1]
    (old / "utils").mkdir(parents=True)
    (old / "utils" / "__init__.py").write_text("")
    code, out = run_cell(sandbox, alone, COURSE_REPO_URL=str(tmp_path / "no-such-repository"))
    assert code != 0 and "古いコースのコピー" in out and f"!rm -rf '{old}'" in out, out
    assert "Traceback" in out and out.count("ImportError") == 0  # the message, not the import error behind it
