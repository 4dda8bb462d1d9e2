"""Where learners open the course: dependency ranges against the platforms and the learners' environment file.

A notebook opened alone (as Colab opens it) is run by tests/test_notebooks.py. The platform matrix itself
(floors / Colab's versions / Kaggle's / newest, each in a fresh venv on its platform's Python and torch) is
tools/platform_matrix.py, run weekly (platform-matrix.yml) and before a release; its table is in README.md.
"""

import json
import os
import re
import subprocess

import pytest
import yaml
from notebook_runs import ROOT
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from tools import platform_matrix

RUNTIME = {req.name.lower().replace("_", "-"): req for req in platform_matrix.runtime_requirements()}


def test_colab_versions_are_inside_the_ranges_so_the_setup_cell_keeps_them():
    pins = platform_matrix.read_constraints(platform_matrix.COLAB_CONSTRAINTS)
    assert {"ipywidgets", "mlxtend", "diffusers", "datasets"} <= set(pins)
    assert {"numpy", "pyarrow", "pandas", "safetensors", "transformers"} <= set(pins)
    for name, version in pins.items():
        if name.lower().replace("_", "-") not in RUNTIME:
            continue  # transformers, pandas, pillow, scipy …: pinned for the matrix, not requirements of the course
        requirement = RUNTIME[name.lower().replace("_", "-")]
        assert requirement.specifier.contains(version), f"Colab ships {name} {version}, outside {requirement}"
    assert Version(pins["ipywidgets"]) < Version("8"), "the constraints must keep Colab's ipywidgets 7.7"


@pytest.mark.parametrize("path", [platform_matrix.COLAB_CONSTRAINTS, platform_matrix.KAGGLE_CONSTRAINTS],
                         ids=["colab", "kaggle"])
def test_constraints_pin_what_the_course_imports_and_its_requirements_talk_through(path):
    pins = platform_matrix.read_constraints(path)
    imported = {"pillow", "packaging", "ipython"}  # PIL, packaging, IPython.display: imported by utils and notebooks
    stack = {"fsspec", "requests", "httpx", "scipy", "scikit-learn"}  # datasets/huggingface_hub I/O, mlxtend's needs
    # torch: PLATFORMS names it; matplotlib-fontja: no platform ships it
    assert set(RUNTIME) - {"torch", "matplotlib-fontja"} <= {name.lower().replace("_", "-") for name in pins}
    assert imported | stack <= set(pins), (imported | stack) - set(pins)
    text = path.read_text(encoding="utf-8")
    assert re.search(r"commit [0-9a-f]{7} \(\d{4}-\d{2}-\d{2}", text), "cite the source's commit and date"


def test_ranges_keep_fresh_installs_off_mlxtends_upgrade_cascade():
    # mlxtend 0.24 and 0.25 require numpy>=2.3.5, scipy>=1.16.3, pandas>=2.3.3, scikit-learn>=1.8 …
    assert not RUNTIME["mlxtend"].specifier.contains("0.24.0")
    assert RUNTIME["mlxtend"].specifier.contains("0.23.4")
    assert RUNTIME["ipywidgets"].specifier.contains("7.7.1") and RUNTIME["ipywidgets"].specifier.contains("8.1.5")


def test_every_runtime_requirement_has_a_floor_the_matrix_installs():
    pins = platform_matrix.floor_pins()
    assert "numpy==2.0" in pins and any(pin.startswith("pyarrow==") for pin in pins)
    assert not any(pin.startswith("torch==") for pin in pins)  # each environment names its torch (PLATFORMS)
    assert len(pins) == len(RUNTIME) - 1
    for pin in pins:
        requirement = Requirement(pin)
        assert RUNTIME[requirement.name.lower().replace("_", "-")].specifier.contains(str(*requirement.specifier).lstrip("="))


def test_floor_without_a_lower_bound_is_refused():
    with pytest.raises(ValueError, match="exactly one '>=' floor"):
        platform_matrix.floor(Requirement("tqdm<5"))


def test_pytest_summary_counts():
    output = "....\n=== 183 passed, 2 deselected, 1 warning in 61.20s ===\n"
    assert platform_matrix.pytest_summary(output) == "183 passed, 2 deselected"
    assert platform_matrix.pytest_summary("1 failed, 3 passed in 2s") == "1 failed, 3 passed"
    assert platform_matrix.pytest_seconds(output) == 61.2 and platform_matrix.pytest_seconds("no summary") is None


def test_studio_lab_environment_file_installs_the_runtime_only():
    spec = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    conda = [d for d in spec["dependencies"] if isinstance(d, str)]
    pip_lines = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
    names = {Requirement(line).name.lower().replace("_", "-") for line in pip_lines} | {
        Requirement(d.replace("=", "==", 1) if "=" in d and "==" not in d and ">" not in d else d).name
        for d in conda if not d.startswith(("python", "pip"))}
    tooling = {Requirement(line).name for line in platform_matrix.tooling_requirements()} - {"ipykernel"}
    assert not names & tooling, "the test tooling stays out of the learners' environment"
    assert set(RUNTIME) - {"torch"} <= names | {"torch"}, set(RUNTIME) - names
    for line in pip_lines:  # the same ranges as requirements.txt
        requirement = Requirement(line)
        assert requirement.specifier == RUNTIME[requirement.name.lower().replace("_", "-")].specifier, line
    assert "ipykernel" in names, "Studio Lab shows a conda environment as a kernel only with ipykernel"


def test_each_environment_names_its_python_and_torch():
    assert platform_matrix.torch_requirement("colab-2026-08") == "torch==2.11.0"
    assert platform_matrix.torch_requirement("kaggle") == "torch==2.10.0"
    assert platform_matrix.torch_requirement("kaggle", "2.13.0") == "torch==2.13.0"
    assert platform_matrix.PLATFORMS["colab-2026-08"][0] == "3.13" and platform_matrix.PLATFORMS["kaggle"][0] == "3.12"
    assert platform_matrix.interpreter("kaggle", {"kaggle": "/opt/py312"}) == "/opt/py312"
    kaggle = platform_matrix.read_constraints(platform_matrix.KAGGLE_CONSTRAINTS)
    assert kaggle["ipywidgets"] == "8.1.5"


def test_each_environment_runs_the_ci_suites_online_notebook_test():
    import test_notebooks

    runs = dict(platform_matrix.TEST_RUNS)
    assert runs["unit_tests"] == ["tests", "-m", "not slow"] and runs["notebooks"] == ["unit1"]
    module, _, case = runs["online_notebooks"][0].partition("::")
    name, _, param = case.partition("[")
    assert module == "tests/test_notebooks.py" and callable(getattr(test_notebooks, name))
    assert param.rstrip("]") in [mode.id for mode in test_notebooks.MODES]


def test_pip_in_the_matrix_ignores_this_machines_configuration(monkeypatch):
    monkeypatch.setenv("PIP_FIND_LINKS", "/opt/wheels")
    monkeypatch.setenv("PIP_CONSTRAINT", "/etc/cap.txt")
    env = platform_matrix.pip_environment()
    assert env["PIP_CONFIG_FILE"] == os.devnull and "PIP_FIND_LINKS" not in env and "PIP_CONSTRAINT" not in env


def test_readme_shows_the_matrix_table_with_every_environment(tmp_path):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("<!-- platform-matrix:start -->")[1].split("<!-- platform-matrix:end -->")[0]
    assert platform_matrix.TABLE_HEADER in block, "paste the table tools/platform_matrix.py --output writes"
    rows = [line for line in block.splitlines() if line.startswith("| ") and line != platform_matrix.TABLE_HEADER]
    assert [row.split(" | ")[0].lstrip("| ") for row in rows] == list(platform_matrix.ENVIRONMENTS)
    for row in rows:
        assert row.count(" | ") == platform_matrix.TABLE_HEADER.count(" | "), row

    runs = [{"environment": "newest", "install": "failed: no wheel"},
            {"environment": "floors", "install": "ok", "python": "3.11.7", "torch": "2.4.0",
             "versions": {"torch": "2.4.0", "numpy": "2.0.0"}, "unit_tests": "ok: 3 passed", "unit_tests_seconds": 5}]
    for index, run in enumerate(runs):
        (tmp_path / f"{index}.json").write_text(json.dumps([run]), encoding="utf-8")
    table = platform_matrix.markdown_table(platform_matrix.combine(sorted(tmp_path.glob("*.json"))))
    assert table.splitlines()[2] == "| floors | 3.11.7 | 2.4.0 | numpy 2.0.0 | 成功（3 件合格、5 秒） | — | — |"
    assert table.splitlines()[3].startswith("| newest | — | — | — | インストールに失敗: no wheel |")


def test_the_table_reports_the_pinned_libraries_learners_meet():
    assert {"pandas", "safetensors", "tqdm", "tensorboard", "numpy", "pyarrow", "ipywidgets"} <= set(
        platform_matrix.REPORTED)


def test_table_cells_are_japanese():
    assert platform_matrix.japanese_summary("429 passed, 33 deselected") == "429 件合格、33 件対象外"
    assert platform_matrix.japanese_summary("1 failed, 2 errors, 3 skipped") == "1 件失敗、2 件エラー、3 件スキップ"
    assert platform_matrix.japanese_summary("no pytest summary (see the log)") == "pytest の集計なし（ログを参照）"
    run = {"environment": "kaggle", "install": "ok", "unit_tests": "FAILED: 1 failed, 428 passed",
           "unit_tests_seconds": 30, "notebooks": "ok: 56 passed"}
    assert platform_matrix._cell(run, "unit_tests") == "失敗（1 件失敗、428 件合格、30 秒）"
    assert platform_matrix._cell(run, "notebooks") == "成功（56 件合格）"
    assert platform_matrix._cell(run, "online_notebooks") == "—"


def test_the_tool_splits_requirements_where_the_setup_cell_does():
    from utils.setup import REQUIREMENTS_SPLIT

    assert platform_matrix.SPLIT == REQUIREMENTS_SPLIT  # the tool repeats it to run without the course installed


def _minimum(specifier: str) -> str:
    (floor,) = [spec.version for spec in SpecifierSet(specifier) if spec.operator == ">="]
    return floor


def test_floors_run_on_the_oldest_python_the_readme_and_pyproject_promise():
    # A regex, not tomllib: the floors environment runs these tests on Python 3.10, which has no tomllib.
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    requires_python = re.search(r'^requires-python\s*=\s*"([^"]+)"', pyproject, re.MULTILINE).group(1)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    promised = set(re.findall(r"Python (\d+\.\d+) 以上", readme)) | set(re.findall(r"Python ≥ (\d+\.\d+)", readme))
    floors_python = platform_matrix.PLATFORMS["floors"][0]
    assert promised == {_minimum(requires_python)} == {floors_python}, (promised, requires_python, floors_python)
    torch = Requirement(platform_matrix.PLATFORMS["floors"][1])
    assert torch.specifier == SpecifierSet(f"=={Version(platform_matrix.floor(RUNTIME['torch']))}"), torch


def test_the_weekly_workflow_runs_each_environment_on_the_tools_python():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "platform-matrix.yml").read_text(encoding="utf-8"))
    include = workflow["jobs"]["matrix"]["strategy"]["matrix"]["include"]
    assert {row["environment"]: row["python"] for row in include} == {
        name: python for name, (python, _) in platform_matrix.PLATFORMS.items()}
    assert len(include) == len(platform_matrix.PLATFORMS)


def test_the_weekly_workflow_keeps_the_wheels_between_runs():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "platform-matrix.yml").read_text(encoding="utf-8"))
    steps = workflow["jobs"]["matrix"]["steps"]
    (cache,) = [step for step in steps if step.get("uses", "").startswith("actions/cache@")]
    assert cache["with"]["path"].endswith("/platform-matrix/wheels")  # wheel_folder() without --torch-index
    assert "requirements.txt" in cache["with"]["key"] and "constraints/*.txt" in cache["with"]["key"]
    assert "matrix.environment" in cache["with"]["key"] and "matrix.python" in cache["with"]["key"]
    build = next(index for index, step in enumerate(steps) if "platform_matrix.py" in step.get("run", ""))
    assert steps.index(cache) < build
    for step in steps:  # a step that deletes something says what, and never the cached wheels
        if "rm -rf" in step.get("run", ""):
            assert "/wheels" not in step["run"] and "wheels stay" in step["name"]


def test_interpreter_asks_pyenv_for_the_minor_version(monkeypatch):
    calls = []

    def fake_run(command, **kwargs):
        calls.append(command)
        return subprocess.CompletedProcess(command, 0, stdout="/opt/pyenv/versions/2.7.18\n", stderr="")

    monkeypatch.setitem(platform_matrix.PLATFORMS, "floors", ("2.7", "torch==2.4.0"))  # never the running Python
    monkeypatch.setattr(platform_matrix.shutil, "which", lambda name: "/usr/bin/pyenv")
    monkeypatch.setattr(platform_matrix.subprocess, "run", fake_run)
    assert platform_matrix.interpreter("floors", {}) == "/opt/pyenv/versions/2.7.18/bin/python"
    assert calls == [["pyenv", "prefix", "2.7"]]  # no hand-kept map of patch versions
