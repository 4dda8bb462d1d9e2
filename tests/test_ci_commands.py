"""The test commands are written once: README.md's table names them, .ci/run and the workflows run them as written."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    """The commands of the table in README.md's "## テストと CI": the CI suite, the fast loop, the nightly extras."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## テストと CI\n", 1)[1].split("\n## ", 1)[0]
    return [re.match(r"\| `([^`]+)` \|", line).group(1) for line in section.splitlines()
            if re.match(r"\| `[^`]+` \|", line)]


def workflow_commands(name: str) -> list[str]:
    """Each ``run`` step of a workflow as one shell line, its ``env`` written in front (KEY=value ... command)."""
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text(encoding="utf-8"))
    return [" ".join([*(f"{key}={value}" for key, value in step.get("env", {}).items()), step["run"].strip()])
            for job in workflow["jobs"].values() for step in job["steps"] if "run" in step]


def test_ci_and_the_workflows_run_the_commands_readme_gives():
    suite, fast, nightly = readme_commands()
    assert fast == f'{suite} -m "not slow"'
    assert suite in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert suite in workflow_commands("ci.yml")
    assert any(command.startswith(f"{nightly} ") for command in workflow_commands("nightly.yml"))
    assert any(command.endswith(" python -m pytest") for command in workflow_commands("gpu-notebooks.yml"))
