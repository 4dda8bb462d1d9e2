"""Repository hygiene: clean notebooks, linted workflows, generated files in sync."""

import json
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tools import sync_course
from utils import course

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(ROOT.rglob("*.ipynb"))


def test_course_notebooks_exist():
    for path in course.NOTEBOOKS:
        assert (ROOT / path).exists(), f"{path} is listed in utils/course.py but missing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_notebook_is_committed_without_outputs(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    for i, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"cell {i} has outputs: clear them before committing"
            assert cell.get("execution_count") is None, f"cell {i} has an execution count"
    assert "widgets" not in notebook.get("metadata", {}), "widget state is stored in the notebook metadata"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_notebook_starts_with_intro_setup_and_summary(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    assert cells[0]["cell_type"] == "markdown"
    assert sync_course.SETUP_TAG in cells[1]["metadata"].get("tags", [])
    assert "setup_course(" in "".join(cells[2]["source"])


def test_badges_and_setup_cells_are_in_sync():
    stale = sync_course.sync(check=True)
    assert not stale, f"run `python -m tools.sync_course` to regenerate: {stale}"


LEADERBOARD_COMMAND = ["unit1/leaderboard", "--readme", "unit1/leaderboard/README.md", "--summary", "unit1/README.md",
                       "--plot", "unit1/images/leaderboard.png"]


def test_leaderboard_in_the_unit_readme_is_made_from_the_committed_recipes(monkeypatch, capsys):
    from tools import leaderboard

    monkeypatch.chdir(ROOT)
    recipes = leaderboard.load_recipes([ROOT / "unit1" / "leaderboard"])
    assert len(recipes) >= 5
    for recipe in (r for r in recipes if "_hub" not in r):  # the committed runs; Hub entries have their own checks
        folder = Path(recipe["_source"]).parent
        assert recipe["dataset"] == "mnist" and recipe["metrics"]["num_samples"] == 1000, folder.name
        assert recipe["command"].startswith("python "), folder.name
        assert (folder / "samples" / "final.png").is_file(), folder.name
    assert (ROOT / "unit1" / "images" / "leaderboard.png").is_file()
    assert leaderboard.main([*LEADERBOARD_COMMAND, "--check"]) == 0, capsys.readouterr().out


def test_unit_readme_is_short_and_its_relative_links_resolve():
    unit = (ROOT / "unit1" / "README.md").read_text(encoding="utf-8")
    assert len(unit) < 12_000, f"unit1/README.md has {len(unit)} characters; move details to unit1/leaderboard/"
    for readme in (ROOT / "README.md", ROOT / "unit1" / "README.md", ROOT / "unit1" / "TRAINING.md",
                   ROOT / "unit1" / "leaderboard" / "README.md"):
        for target in re.findall(r"\]\(([^)\s]+)\)", readme.read_text(encoding="utf-8")):
            path = target.split("#")[0]
            if path and not re.match(r"[a-z]+:", path):
                assert (readme.parent / path).exists(), f"{readme.relative_to(ROOT)} links to missing {target}"


def test_repository_name_lives_in_one_source_file():
    pattern = re.compile(re.escape(course.GITHUB_REPO))
    generated = {ROOT / "README.md", ROOT / "unit1" / "README.md", *NOTEBOOKS}
    sources = [p for p in ROOT.rglob("*") if p.is_file() and ".git" not in p.parts and p not in generated
               and p.suffix in {".py", ".md", ".yml", ".yaml", ".toml", ".txt", ".cfg", ""}]
    holders = [str(p.relative_to(ROOT)) for p in sources if pattern.search(p.read_text(errors="ignore"))]
    assert holders == ["utils/course.py"]


def test_setup_cell_installs_only_runtime_requirements():
    runtime = (ROOT / "requirements.txt").read_text().split(sync_course.REQUIREMENTS_SPLIT)
    assert len(runtime) == 2, "requirements.txt must keep the '# --- tests and tooling' divider"
    assert "torch" in runtime[0] and "diffusers" in runtime[0] and "pytest" not in runtime[0]
    requirements = [line.split("#")[0] for line in "".join(runtime).splitlines()]
    assert not any("torchvision" in line for line in requirements)  # it does not import beside the CPU torch


def find_tool(name: str) -> str | None:
    """``name`` on PATH, else among the scripts of the running interpreter's environment, so that
    `.venv/bin/python -m pytest` finds the venv's tools without an activated venv: sysconfig's scripts folder, the
    interpreter's own folder, then the user scripts folder (``pip install --user``)."""
    folders = [sysconfig.get_path("scripts"), str(Path(sys.executable).parent),
               sysconfig.get_path("scripts", sysconfig.get_preferred_scheme("user"))]
    return shutil.which(name) or next((found for folder in folders if (found := shutil.which(name, path=folder))),
                                      None)


@pytest.mark.parametrize("beside", ["the interpreter", "the scripts folder"])
def test_a_tool_is_found_beside_the_running_interpreter_with_an_empty_path(tmp_path, monkeypatch, beside):
    folder, elsewhere = tmp_path / "venv" / "bin", tmp_path / "elsewhere"
    folder.mkdir(parents=True)
    tool = folder / "actionlint"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    get_path = sysconfig.get_path
    scripts = str(folder if beside == "the scripts folder" else elsewhere)
    monkeypatch.setattr(sysconfig, "get_path", lambda name, *args, **kwargs: scripts if name == "scripts"
                        else get_path(name, *args, **kwargs))
    monkeypatch.setattr(sys, "executable", str((folder if beside == "the interpreter" else elsewhere) / "python"))
    monkeypatch.setenv("PATH", "")
    assert find_tool("actionlint") == str(tool)
    tool.unlink()
    assert find_tool("actionlint") is None


def test_workflows_pass_actionlint():
    binary = find_tool("actionlint")
    assert binary, "actionlint is missing: pip install -r requirements.txt"
    result = subprocess.run([binary, "-no-color"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

