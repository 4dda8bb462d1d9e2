"""Regenerate every open-in badge table and every notebook setup cell (source and metadata) from utils/course.py.

    python -m tools.sync_course          # rewrite README badges and setup cells
    python -m tools.sync_course --check  # exit 1 if anything is out of date (used by the tests)

A fork re-points the whole course by editing GITHUB_REPO in utils/course.py and running this.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from utils.course import BRANCH, GITHUB_REPO, NOTEBOOKS
from utils.setup import REQUIREMENTS_SPLIT  # noqa: F401 (the divider's one definition; tests read it here)

ROOT = Path(__file__).resolve().parent.parent
SETUP_TAG = "course-setup"
BADGES_START, BADGES_END = "<!-- badges:start -->", "<!-- badges:end -->"

SETUP_TITLE = "セットアップ：コースの取得と、足りないパッケージのインストール（実行するだけで、編集は不要です）"
# How the setup cell opens: Colab shows a cell with cellView "form" as its #@title line only (the code stays hidden
# until the learner double-clicks it); JupyterLab and Jupyter Notebook 7 collapse a cell whose source_hidden is true.
SETUP_METADATA = {"cellView": "form", "jupyter": {"source_hidden": True}, "tags": [SETUP_TAG]}

SETUP_CELL = '''\
#@title {title} {{ display-mode: "form" }}
# コース共通のセットアップ（`python -m tools.sync_course` が生成するセルです。編集しないでください）
# 1. utils が見つからないとき（Colab や Kaggle でこのノートブックだけを開いたとき）は、コースのリポジトリを取得します。
# 2. ensure_packages（utils/setup.py）が requirements.txt の前半（実行に必要な部分）と入っているバージョンを比べ、
#    足りないもの・古すぎるものだけをインストールします。torch はインストールも更新もしません（入っているものを使います）。
import os
import subprocess
import sys
from pathlib import Path

COURSE_ROOT = next((p for p in [Path.cwd(), *Path.cwd().parents] if (p / "utils" / "__init__.py").exists()), None)
if COURSE_ROOT is None:
    COURSE_REPO = os.environ.get("COURSE_REPO_URL", "https://github.com/{repo}")
    COURSE_ROOT = Path.cwd() / "{name}"
    if not COURSE_ROOT.exists():
        clone = subprocess.run(["git", "clone", "--depth", "1", "--branch", "{branch}", COURSE_REPO, str(COURSE_ROOT)],
                               capture_output=True, text=True)
        if clone.returncode != 0:
            print(clone.stderr[-1500:])
            raise RuntimeError(
                f"コースのリポジトリ（{{COURSE_REPO}}）を取得できませんでした。インターネットに接続できるか確認してください。\\n"
                "- Kaggle: 右の「Settings」→「Internet」をオンにします（電話番号の認証が必要です）。切り替えると"
                "セッションが再起動するので、このセルから実行し直してください。\\n"
                "- ほかの環境: ネットワークを確認するか、リポジトリを clone したフォルダーでノートブックを開いてください。")
if str(COURSE_ROOT) not in sys.path:
    sys.path.insert(0, str(COURSE_ROOT))

try:
    from utils import ensure_packages
except ImportError:  # utils/setup.py がなかったころに取得した、古いコースのコピーです
    raise RuntimeError(f"{{COURSE_ROOT}} は古いコースのコピーです。そのフォルダーを削除して（セルに "
                       f"!rm -rf '{{COURSE_ROOT}}' と書いて実行します）、このセルをもう一度実行してください。") from None
ensure_packages(COURSE_ROOT)'''


def setup_cell_source() -> str:
    """The setup cell shared by every notebook."""
    return SETUP_CELL.format(title=SETUP_TITLE, repo=GITHUB_REPO, name=GITHUB_REPO.split("/")[1], branch=BRANCH)


def setup_cell_metadata(current: dict) -> dict:
    """``current`` with the keys that open the setup cell collapsed (other keys, e.g. an editor's, are kept)."""
    metadata = {**current, **SETUP_METADATA, "jupyter": {**current.get("jupyter", {}), **SETUP_METADATA["jupyter"]}}
    metadata["tags"] = list(dict.fromkeys([*current.get("tags", []), SETUP_TAG]))
    return metadata


def badge_links(notebook: str) -> dict[str, str]:
    """Markdown badges (Colab, Kaggle, Gradient, Studio Lab) that open ``notebook`` from GitHub."""
    blob = f"{GITHUB_REPO}/blob/{BRANCH}/{notebook}"
    targets = {
        "Colab": ("https://colab.research.google.com/assets/colab-badge.svg",
                  f"https://colab.research.google.com/github/{blob}"),
        "Kaggle": ("https://kaggle.com/static/images/open-in-kaggle.svg",
                   f"https://kaggle.com/kernels/welcome?src=https://github.com/{blob}"),
        "Gradient": ("https://assets.paperspace.io/img/gradient-badge.svg",
                     f"https://console.paperspace.com/github/{blob}"),
        "Studio Lab": ("https://studiolab.sagemaker.aws/studiolab.svg",
                       f"https://studiolab.sagemaker.aws/import/github/{blob}"),
    }
    return {name: f"[![Open in {name}]({img})]({url})" for name, (img, url) in targets.items()}


def badge_table(relative_to: str = "") -> str:
    """The notebook table with open-in badges, links relative to the README's folder."""
    rows = ["| ノートブック | Colab | Kaggle | Gradient | Studio Lab |", "|:--|:--:|:--:|:--:|:--:|"]
    for path, title in NOTEBOOKS.items():
        link = path.removeprefix(relative_to)
        badges = badge_links(path)
        rows.append(f"| [{title}]({link}) | " + " | ".join(badges.values()) + " |")
    return "\n".join(rows)


def _sync_readme(path: Path, relative_to: str, check: bool) -> bool:
    if not path.exists():
        return True
    text = path.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(BADGES_START) + ".*?" + re.escape(BADGES_END), re.S)
    if not pattern.search(text):
        return True
    new = pattern.sub(lambda _: f"{BADGES_START}\n{badge_table(relative_to)}\n{BADGES_END}", text)
    if new != text and not check:
        path.write_text(new, encoding="utf-8")
    return new == text


def _sync_notebook(path: Path, check: bool) -> bool:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    cells = [c for c in notebook["cells"] if SETUP_TAG in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        print(f"{path}: expected exactly one cell tagged {SETUP_TAG!r}, found {len(cells)}", file=sys.stderr)
        return False
    source, metadata = setup_cell_source(), setup_cell_metadata(cells[0]["metadata"])
    fresh = "".join(cells[0]["source"]) == source and cells[0]["metadata"] == metadata
    if not fresh and not check:
        cells[0]["source"] = source.splitlines(keepends=True)
        cells[0]["metadata"] = metadata
        path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return fresh


def sync(check: bool = False) -> list[str]:
    """Regenerate (or with check=True only compare) badges and setup cells; return stale files."""
    stale = []
    for readme, rel in ((ROOT / "README.md", ""), (ROOT / "unit1" / "README.md", "unit1/")):
        if not _sync_readme(readme, rel, check):
            stale.append(str(readme.relative_to(ROOT)))
    for notebook in sorted((ROOT / "unit1").glob("*.ipynb")):
        if not _sync_notebook(notebook, check):
            stale.append(str(notebook.relative_to(ROOT)))
    return stale


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report out-of-date files (exit 1 if any)")
    args = parser.parse_args(argv)
    stale = sync(check=args.check)
    if stale:
        print(("Out of date: " if args.check else "Updated: ") + ", ".join(stale))
    return 1 if (stale and args.check) else 0


if __name__ == "__main__":
    raise SystemExit(main())
