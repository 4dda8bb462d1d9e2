"""utils/setup.py, the setup cell's logic, in this process: what to install, version comparison, restart detection.

pip, the installed versions and torch are stand-ins here; tests/test_setup_cell.py runs the generated cell with real
pip in a throw-away venv.
"""

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from packaging.requirements import Requirement

from utils import setup

ROOT = Path(__file__).resolve().parent.parent
CHECK_TORCH = setup.check_torch  # the course fixture replaces it with a stand-in


def requirements(*lines):
    return [Requirement(line) for line in lines]


def test_the_runtime_is_the_part_above_the_divider_without_comments_or_blank_lines():
    text = f"# a comment\ntorch>=2.4\n\nnumpy>=2.0          # why\nipywidgets>=7.7,<9\n{setup.REQUIREMENTS_SPLIT} …\npytest>=8\n"
    assert [str(r) for r in setup.runtime_requirements(text)] == ["torch>=2.4", "numpy>=2.0", "ipywidgets<9,>=7.7"]
    real = {r.name for r in setup.runtime_requirements((ROOT / "requirements.txt").read_text(encoding="utf-8"))}
    assert {"torch", "diffusers", "mlxtend"} <= real and not {"pytest", "ruff", "nbval"} & real


@pytest.mark.parametrize(("installed", "old"), [("0.9", True), ("0.10", False), ("0.10.0", False), ("1.2", False),
                                                 ("0.10rc1", True), ("0.10.post1", False), ("0.10+local", False)])
def test_versions_are_compared_as_versions_against_the_floor(installed, old):
    assert setup.too_old(Requirement("pkg>=0.10"), installed) is old


def test_only_floors_count_so_a_newer_platform_version_is_kept():
    assert not setup.too_old(Requirement("ipywidgets>=7.7,<9"), "9.1")  # never a downgrade
    assert not setup.too_old(Requirement("anything"), "0.1")


def test_what_to_install_is_what_is_missing_or_too_old_and_never_torch():
    versions = {"torch": "1.0", "old": "1.0", "equal": "2.0", "newer": "5.0"}
    needed = setup.missing_or_too_old(
        requirements("torch>=2.4", "old>=2.0", "equal>=2.0", "newer>=2.0,<3", "missing>=1.0"), versions.get)
    assert [str(r) for r in needed] == ["old>=2.0", "missing>=1.0"]
    assert setup.missing_or_too_old(requirements("torch>=2.4"), {}.get) == []  # a missing torch is not pip's job


def test_torch_versions_with_build_tags_are_compared_by_their_release():
    floor = Requirement("torch>=2.4")
    assert not setup.torch_too_old(floor, "2.11.0+cu128") and not setup.torch_too_old(floor, "2.4.0a0+git1234")
    assert setup.torch_too_old(floor, "2.1.0+cu121")


def test_a_restart_is_asked_for_exactly_the_imported_distributions_whose_version_changed():
    before = {"coursefake": "1.0", "numpy": "2.0.0"}
    assert setup.changed_loaded(before, {"coursefake": "2.0", "numpy": "2.0.0", "other": "9"}) == ["coursefake 1.0 → 2.0"]
    assert setup.changed_loaded(before, before) == []
    assert setup.changed_loaded({"gone": "1.0"}, {}) == ["gone 1.0 → None"]


def test_imported_distributions_maps_imported_modules_to_canonical_names():
    mapping = {"PIL": ["Pillow"], "yaml": ["PyYAML"], "matplotlib_fontja": ["matplotlib_fontja"], "np": ["numpy"]}
    assert setup.imported_distributions({"PIL", "PIL.Image", "matplotlib_fontja"}, mapping) == {
        "pillow", "matplotlib-fontja"}
    assert "packaging" in setup.imported_distributions()  # this process's modules and installed distributions


def test_module_distributions_maps_wheels_without_top_level_txt_by_their_files():
    # Python 3.10's packages_distributions reads only top_level.txt, which packaging's and numpy's wheels lack
    from importlib.metadata import PackagePath

    def dist(name, top_level, files):
        return SimpleNamespace(metadata={"Name": name}, read_text=lambda file: top_level,
                               files=[PackagePath(path) for path in files])

    installed = [dist("packaging", None, ["packaging/__init__.py", "packaging-26.0.dist-info/RECORD"]),
                 dist("six", None, ["six.py", "../../bin/tool"]),
                 dist("Pillow", "PIL\n", ["PIL/Image.py"])]
    assert setup.module_distributions(installed) == {
        "packaging": ["packaging"], "six": ["six"], "PIL": ["Pillow"]}
    assert setup.imported_distributions({"packaging", "six"}, setup.module_distributions(installed)) == {
        "packaging", "six"}


@pytest.fixture
def course(tmp_path, monkeypatch):
    """A course whose runtime half is torch and coursefake; installed versions, pip and torch are stand-ins."""
    state = {"versions": {"torch": "2.13.0", "coursefake": "1.0"}, "imported": {"torch", "coursefake"},
             "installs": [], "upgrades": {}, "torch": []}
    (tmp_path / "requirements.txt").write_text(f"torch>=2.4\ncoursefake>=2.0\n{setup.REQUIREMENTS_SPLIT}\npytest>=8\n")

    def pip_install(*args):
        state["installs"].append(list(args))
        state["versions"].update(state["upgrades"])

    monkeypatch.setattr(setup, "installed_version", lambda name: state["versions"].get(name))
    monkeypatch.setattr(setup, "pip_install", pip_install)
    monkeypatch.setattr(setup, "imported_distributions", lambda: state["imported"])
    monkeypatch.setattr(setup, "check_torch", lambda requirement: state["torch"].append(str(requirement)))
    state["root"] = tmp_path
    return state


def test_nothing_is_installed_when_everything_is_in_range_and_torch_is_still_checked(course, capsys):
    course["versions"]["coursefake"] = "3.0"
    assert setup.ensure_packages(course["root"]) == []
    assert "必要なパッケージはそろっています" in capsys.readouterr().out
    assert course["installs"] == [] and course["torch"] == ["torch>=2.4"]


def test_a_too_old_package_that_was_not_imported_is_installed_without_a_restart(course, capsys):
    course["upgrades"], course["imported"] = {"coursefake": "2.0"}, {"torch"}
    course["versions"]["torch"] = "2.1.0"  # too old: check_torch warns, pip never replaces it
    assert setup.ensure_packages(str(course["root"])) == ["coursefake>=2.0"]
    assert course["installs"] == [["coursefake>=2.0"]] and course["torch"] == ["torch>=2.4"]
    assert "インストールします: coursefake>=2.0" in capsys.readouterr().out


def test_upgrading_an_imported_package_asks_for_a_restart(course):
    course["upgrades"] = {"coursefake": "2.0"}
    with pytest.raises(RuntimeError, match="coursefake 1.0 → 2.0") as error:
        setup.ensure_packages(course["root"])
    assert "再起動" in str(error.value) and "このセルから実行し直してください" in str(error.value)
    assert course["torch"] == []  # stops before torch is imported


def test_without_torch_the_learner_is_sent_to_pytorch_org_and_nothing_is_installed(course):
    del course["versions"]["torch"]
    with pytest.raises(RuntimeError, match="torch が入っていません.*pytorch.org"):
        setup.ensure_packages(course["root"])
    assert course["installs"] == []


def test_packaging_is_installed_first_when_the_image_lacks_it(course, monkeypatch):
    course["versions"]["coursefake"] = "2.0"
    find_spec = setup.importlib.util.find_spec
    monkeypatch.setattr(setup.importlib.util, "find_spec",
                        lambda name, *args: None if name == "packaging" else find_spec(name, *args))
    setup.ensure_packages(course["root"])
    assert course["installs"] == [["packaging"]]


def test_a_failed_pip_run_shows_the_end_of_pips_own_output(monkeypatch, capsys):
    output = "\n".join(f"line {i}" for i in range(40)) + "\nERROR: No matching distribution found for coursefake>=5.0"
    calls = []

    def run(command, **kwargs):
        calls.append(command)
        return subprocess.CompletedProcess(command, 1, stdout=output, stderr="")

    monkeypatch.setattr(setup.subprocess, "run", run)
    with pytest.raises(RuntimeError, match="pip install に失敗しました.*Internet"):
        setup.pip_install("coursefake>=5.0")
    assert calls == [[sys.executable, "-m", "pip", "install", "-q", "coursefake>=5.0"]]
    shown = capsys.readouterr().out
    assert "No matching distribution found for coursefake>=5.0" in shown  # pip's words, not a bare exit status
    assert "line 11" in shown and "line 10\n" not in shown  # its last 30 lines


DRIVER_TOO_OLD = "The NVIDIA driver on your system is too old (found version 11040)."
CUDA_QUERIES = ["is_available", "get_device_name", "get_device_capability", "get_arch_list", "first operation"]


def fake_torch(version, cuda=None, failing=None):
    """A stand-in torch: ``cuda`` None (no GPU), True (a GPU that works) or False (a GPU the build cannot run: its
    first operation fails); ``failing`` names the CUDA query (or "first operation") that raises as a driver that is
    too old does."""
    def query(name, answer):
        def call(*args, **kwargs):
            if name == failing:
                raise RuntimeError(DRIVER_TOO_OLD)
            return answer
        return call

    def ones(*args, device=None):
        if device == "cuda" and failing == "first operation":
            raise RuntimeError(DRIVER_TOO_OLD)
        if device == "cuda" and cuda is False:
            raise RuntimeError("CUDA error: no kernel image is available for execution on the device")
        return SimpleNamespace(add_=lambda value: SimpleNamespace(item=lambda: 2.0))

    cuda_module = SimpleNamespace(is_available=query("is_available", cuda is not None),
                                  get_device_name=query("get_device_name", "Tesla P100-PCIE-16GB"),
                                  get_device_capability=query("get_device_capability", (6, 0)),
                                  get_arch_list=query("get_arch_list", ["sm_60", "sm_70", "sm_80"]))
    return SimpleNamespace(__version__=version, ones=ones, cuda=cuda_module, version=SimpleNamespace(hip=None))


@pytest.fixture
def fresh_cuda_check():
    """cuda_problem answers once per process: each test asks its own stand-in torch."""
    setup.cuda_problem.cache_clear()
    yield
    setup.cuda_problem.cache_clear()


@pytest.mark.parametrize(("version", "cuda", "expected"), [
    ("2.13.0+cpu", None, []),
    ("2.11.0+cu128", True, []),
    ("2.1.0", None, ["torch 2.1.0 は古すぎます", "torch>=2.4 が必要です"]),
    ("2.13.0+cu130", False, ["Tesla P100-PCIE-16GB", "RuntimeError", "CPU（とクイックモード）で実行します",
                             "P100 ではなく T4"]),
])
def test_torch_is_checked_for_its_version_and_for_a_gpu_it_cannot_run(monkeypatch, capsys, fresh_cuda_check, version,
                                                                      cuda, expected):
    monkeypatch.setitem(sys.modules, "torch", fake_torch(version, cuda))
    setup.check_torch(Requirement("torch>=2.4"))
    out = capsys.readouterr().out
    assert all(text in out for text in expected) and bool(out) == bool(expected), out


@pytest.mark.parametrize("failing", CUDA_QUERIES)
def test_the_setup_cell_survives_a_gpu_that_claims_to_be_there_but_cannot_start(monkeypatch, capsys, course,
                                                                                 fresh_cuda_check, failing):
    """A driver that is too old, a build without CUDA: whichever CUDA query raises, the setup cell ends with the
    Japanese one-line message (the CPU and quick mode), not a traceback."""
    monkeypatch.setitem(sys.modules, "torch", fake_torch("2.11.0+cu128", True, failing))
    monkeypatch.setattr(setup, "check_torch", CHECK_TORCH)  # the fixture's stand-in: use the real check here
    course["versions"]["coursefake"] = "3.0"
    assert setup.ensure_packages(course["root"]) == []
    out = capsys.readouterr().out.replace("必要なパッケージはそろっています。\n", "")
    assert out.count("\n") == 1 and out.startswith("⚠️ ") and out.endswith("CPU（とクイックモード）で実行します。\n"), out
    assert f"RuntimeError: {DRIVER_TOO_OLD}" in out
    if failing == "first operation":
        assert "GPU（Tesla P100-PCIE-16GB）で小さな計算が失敗しました" in out
    else:
        assert "初期化できませんでした" in out and "NVIDIA ドライバーが古くないか" in out
    assert setup.cuda_problem() == out[3:-len("。CPU（とクイックモード）で実行します。\n")]
    assert capsys.readouterr().out == "", "asked again (get_device in setup_course), it answers without a second line"


def test_the_setup_cell_and_the_course_share_one_cuda_check(monkeypatch, capsys, fresh_cuda_check):
    import torch

    from utils import environment

    def driver_too_old(*args):
        raise RuntimeError(DRIVER_TOO_OLD)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", driver_too_old)
    setup.check_torch(Requirement("torch>=2.4"))
    assert "初期化できませんでした" in capsys.readouterr().out
    assert environment.cuda_problem is setup.cuda_problem
    assert environment.get_device().type in {"cpu", "mps"} and environment.is_quick_mode({}) is True
    assert capsys.readouterr().out == "", "the message is printed once, by the setup cell"


def test_the_module_imports_without_packaging_torch_or_the_course_packages():
    # it runs on an image that has none of them yet (packaging is installed by ensure_packages itself)
    code = ("import sys\nsys.modules['packaging'] = None\nfrom utils import ensure_packages\nimport utils.setup\n"
            "imported = {name.split('.')[0] for name, module in sys.modules.items() if module is not None}\n"
            "loaded = {'torch', 'numpy', 'datasets', 'diffusers', 'packaging'} & imported\n"
            "assert not loaded, loaded")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
