"""The generated setup cell opens collapsed: a Colab form with a one-line title, hidden source in JupyterLab."""

import json
from pathlib import Path

import pytest

from tools import sync_course

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "unit1").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_setup_cell_opens_as_a_titled_form_with_its_source_hidden(path):
    cell = json.loads(path.read_text(encoding="utf-8"))["cells"][1]
    assert cell["metadata"]["cellView"] == "form"  # Colab: only the #@title line is shown
    assert cell["metadata"]["jupyter"]["source_hidden"] is True  # JupyterLab: the source is collapsed
    assert sync_course.SETUP_TAG in cell["metadata"]["tags"]
    first_line = cell["source"][0]
    assert first_line.startswith("#@title ") and sync_course.SETUP_TITLE in first_line
    assert first_line.rstrip().endswith('{ display-mode: "form" }')


def test_the_title_is_one_short_japanese_line():
    assert "\n" not in sync_course.SETUP_TITLE and len(sync_course.SETUP_TITLE) <= 60
    assert "セットアップ" in sync_course.SETUP_TITLE


def test_a_cell_whose_metadata_was_lost_is_stale_and_sync_restores_it_keeping_other_keys(tmp_path, monkeypatch):
    notebook = json.loads(NOTEBOOKS[0].read_text(encoding="utf-8"))
    notebook["cells"][1]["metadata"] = {"tags": [sync_course.SETUP_TAG], "jupyter": {"outputs_hidden": True},
                                        "editable": False}
    copy = tmp_path / "copy.ipynb"
    copy.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    assert not sync_course._sync_notebook(copy, check=True)
    assert not sync_course._sync_notebook(copy, check=False)  # rewrote it
    metadata = json.loads(copy.read_text(encoding="utf-8"))["cells"][1]["metadata"]
    assert metadata["cellView"] == "form" and metadata["editable"] is False
    assert metadata["jupyter"] == {"outputs_hidden": True, "source_hidden": True}
    assert sync_course._sync_notebook(copy, check=True)
