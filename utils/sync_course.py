"""Regenerate every open-in badge table and every notebook setup cell from utils/course.py.

    python -m utils.sync_course          # rewrite README badges and setup cells
    python -m utils.sync_course --check  # exit 1 if anything is out of date (used by the tests)

A fork re-points the whole course by editing GITHUB_REPO in utils/course.py and running this.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from .course import BRANCH, GITHUB_REPO, NOTEBOOKS

ROOT = Path(__file__).resolve().parent.parent
SETUP_TAG = "course-setup"
BADGES_START, BADGES_END = "<!-- badges:start -->", "<!-- badges:end -->"
REQUIREMENTS_SPLIT = "# --- tests and tooling"

SETUP_CELL = '''\
# コース共通のセットアップ（`python -m utils.sync_course` が生成するセルです。編集しないでください）
# utils パッケージが見つからないとき（Colab や Kaggle でこのノートブックだけを開いたとき）に限り、
# コースのリポジトリを取得し、足りないパッケージをインストールします。ローカルの clone では何もしません。
import subprocess
import sys
from pathlib import Path

COURSE_REPO = "https://github.com/{repo}"
COURSE_ROOT = next((p for p in [Path.cwd(), *Path.cwd().parents] if (p / "utils" / "__init__.py").exists()), None)
if COURSE_ROOT is None:
    COURSE_ROOT = Path.cwd() / "{name}"
    if not COURSE_ROOT.exists():
        subprocess.run(["git", "clone", "--depth", "1", "--branch", "{branch}", COURSE_REPO, str(COURSE_ROOT)], check=True)
    # requirements.txt の前半（実行に必要な部分）だけを入れます。入っている torch はそのまま使います。
    runtime = (COURSE_ROOT / "requirements.txt").read_text().split("{split}")[0].splitlines()
    runtime = [line.split("#")[0].strip() for line in runtime if line.split("#")[0].strip()]
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *runtime], check=True)
if str(COURSE_ROOT) not in sys.path:
    sys.path.insert(0, str(COURSE_ROOT))'''


def setup_cell_source() -> str:
    """The setup cell shared by every notebook."""
    return SETUP_CELL.format(repo=GITHUB_REPO, name=GITHUB_REPO.split("/")[1], branch=BRANCH,
                             split=REQUIREMENTS_SPLIT)


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
    source = setup_cell_source()
    current = "".join(cells[0]["source"])
    if current != source and not check:
        cells[0]["source"] = source.splitlines(keepends=True)
        path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return current == source


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
