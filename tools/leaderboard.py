"""The course leaderboard: recipes from this repository and from the Hub, ranked by evidence.

    python -m tools.leaderboard unit1/leaderboard --readme unit1/leaderboard/README.md --summary unit1/README.md \
        --plot unit1/images/leaderboard.png
    python -m tools.leaderboard unit1/leaderboard --from-hub --verify --readme ...   # the weekly collection

A folder argument means the ``recipe.json`` inside it, or else the ``*/recipe.json`` of its sub-folders and the
entries collected from the Hub under its ``hub/`` folder. ``--from-hub`` lists the models tagged
utils.recipe.COURSE_TAG on the Hub and keeps each valid entry under ``--hub-dir`` (tools/hub_entries.py: bad
entries are skipped with a one-line reason); ``--verify`` re-scores the MNIST entries collected from the Hub with
their own sampler settings (only new or changed revisions).

MNIST recipes are ranked in one table, one row per training recipe (tools/ranking.py: seeds grouped, identical
weights merged, a seed mean with its uncertainty, shared ranks for rows that cannot be told apart); RGB entries
(butterflies and others) are listed in a table of their own that ranks nothing. ``--readme`` replaces the tables
between the markers of a markdown file, ``--summary`` a short table of the ``--top`` recipes in another file;
``--check`` only reports whether they are up to date. Missing values are shown as "—". A local recipe that does
not follow utils/recipe.py is an error. Run it from the repository root; without ``--verify`` it does not load
torch.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from pathlib import Path
from urllib.parse import quote

from tools import hub_entries
from tools.ranking import (
    Row,
    entry_name,
    is_mnist,
    largest_seed_ratio,
    rank_recipes,
    score,
    seed_group,
)
from utils.recipe import COURSE_TAG, RecipeError, command_line, recipe_problems
from utils.viz import log_axes, use_japanese_font

MISSING = "—"
TABLE_START, TABLE_END = "<!-- leaderboard:start -->", "<!-- leaderboard:end -->"
RGB_START, RGB_END = "<!-- leaderboard-rgb:start -->", "<!-- leaderboard-rgb:end -->"
SUMMARY_START, SUMMARY_END = "<!-- leaderboard-top:start -->", "<!-- leaderboard-top:end -->"
HUB_URL = "https://huggingface.co"
# Keys read beside the schema's fields: only the training script has these flags (Min-SNR weighting, the interval
# of autoguidance, the replicas' weights digest, the evaluation batch), so a notebook's or the naive baseline's
# recipe goes without them.
OPTIONAL = {"snr_gamma", "snr_plus_one", "guide_interval", "processes", "eval_batch_size"}
UNRECORDED_FLAGS = ("--check", "--from-hub", "--verify")
# The maintainer commands live in the root README's section that rebuilds the figures and tables; the generated
# pages are for learners and link there instead of carrying a command.
MAINTAINER_DOC = Path(__file__).resolve().parent.parent / "README.md"
MAINTAINER_SECTION = "図と表を作り直す"


def load_recipes(paths) -> list[dict]:
    """Read recipe.json files (a folder means its recipe.json, or its sub-folders' and its hub/ entries'); each
    gets its source path under ``_source``, a collected Hub entry its repo under ``_hub`` and its verification
    under ``_verified``.

    A file that is not JSON or does not follow utils/recipe.py raises RecipeError naming the file and what is wrong.
    """
    files = []
    for path in map(Path, paths):
        if path.is_dir() and not (path / "recipe.json").is_file():
            found = sorted(path.glob("*/recipe.json")) + sorted((path / "hub").glob("*/recipe.json"))
            if not found:
                raise RecipeError(f"{path} holds no recipe.json, nor do its sub-folders. Pass recipe.json files, "
                                  "or the output folders of the training script that contain one.")
            files += found
        else:
            files.append(path / "recipe.json" if path.is_dir() else path)
    recipes = []
    for file in files:
        if not file.is_file():
            raise RecipeError(f"{file} does not exist. Pass recipe.json files, or the output folders of "
                              "the training script that contain one.")
        try:
            recipe = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RecipeError(f"{file} is not valid JSON ({exc}).") from exc
        problems = recipe_problems(recipe)
        if problems:
            raise RecipeError(f"{file} does not follow the recipe schema (utils/recipe.py): " + "; ".join(problems)
                              + ".")
        recipe = {**recipe, "_source": str(file)}
        entry = hub_entries.read_entry(file.parent)
        if entry.get("repo_id"):
            recipe["_hub"] = {key: entry.get(key) for key in ("repo_id", "revision", "grid")}
            if entry.get("verified"):
                recipe["_verified"] = entry["verified"]
        recipes.append(recipe)
    if not recipes:
        raise RecipeError("No recipes given: pass at least one recipe.json.")
    return recipes


def metric_value(recipe: dict, metric: str) -> float | None:
    value = (recipe.get("metrics") or {}).get(metric)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _number(value, digits: int = 3) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return MISSING
    if isinstance(value, int) or (float(value).is_integer() and abs(value) >= 1000):
        return f"{int(value):,}"
    return f"{value:.{digits}g}"


def _ratio(ratio: float | None) -> str:
    """6.83×, 11.4×, 2,173×: as many digits as help to compare."""
    if ratio is None:
        return MISSING
    return f"{ratio:.2f}×" if ratio < 10 else f"{ratio:.1f}×" if ratio < 100 else f"{ratio:,.0f}×"


def _sampler(recipe: dict, cost: bool = True) -> str:
    """'ddpm 100（100 回/枚）', with autoguidance 'ddpm 100 + AG 1.5 (step 1000)（200 回/枚）': the sampler, its
    steps and the network evaluations per image."""
    sampler, steps = recipe.get("sampler"), recipe.get("num_inference_steps")
    if sampler is None:
        return MISSING
    text = f"{sampler} {steps}" if steps is not None else str(sampler)
    scale = recipe.get("guidance_scale") or 1
    if recipe.get("guide_step") and scale != 1:
        text += f" + AG {scale:g} (step {recipe['guide_step']})"
        if recipe.get("guide_interval"):
            low, high = recipe["guide_interval"]
            text += f" t∈[{low:g}, {high:g}]"
    if cost and isinstance(recipe.get("network_evaluations"), int):
        text += f"（{recipe['network_evaluations']} 回/枚）"
    return text


def _device(recipe: dict) -> str:
    device = recipe.get("device")
    if device is None:
        return MISSING
    text = str(device)
    if isinstance(recipe.get("num_processes"), int) and recipe["num_processes"] > 1:
        text += f" ×{recipe['num_processes']}"
    if recipe.get("mixed_precision") not in (None, "no"):
        text += f" ({recipe['mixed_precision']})"
    return text


def _dataset(recipe: dict) -> str:
    name = str(recipe.get("dataset", MISSING))
    return f"{name}（オフライン代替データ）" if recipe.get("dataset_fallback") else name


def _model(recipe: dict) -> str:
    size, params = recipe.get("model_size"), recipe.get("num_parameters")
    params = f"{params / 1e6:.2f} M" if isinstance(params, (int, float)) else None
    parts = [str(p) for p in (size, params) if p is not None]
    if not parts:
        return MISSING
    return parts[0] if len(parts) == 1 else f"{parts[0]} ({parts[1]})"


def _cell(text) -> str:
    """Text from a recipe as one table cell: no table breaks, and no markup (links, images, HTML) of its own, since
    a recipe from the Hub is written by anyone."""
    text = str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
    for char in "[]<>`*_":
        text = text.replace(char, "\\" + char)
    return text


def _code(text) -> str:
    """A recorded command as inline code: a backtick inside cannot end the code span."""
    return "`" + str(text).replace("`", "'").replace("|", "\\|").replace("\n", " ") + "`"


class Markup(str):
    """A cell made by this module (a link, an image), kept as it is."""


def _row(cells) -> str:
    return "| " + " | ".join(c if isinstance(c, Markup) else _cell(c) for c in cells) + " |"


def _name_link(recipe: dict) -> str:
    """The entry's name; a Hub entry links to its model page."""
    hub = recipe.get("_hub")
    if not hub:
        return entry_name(recipe)
    repo = _cell(hub["repo_id"])
    return Markup(f"[{repo}]({HUB_URL}/{quote(hub['repo_id'], safe='/')})")


def main_idea(recipe: dict) -> str:
    """The settings that set a recipe apart, in a few words made from its recipe.json (e.g. 'micro-conv · v 予測 ·
    バッチ 32 · Min-SNR 5 · AG 1.5 · ddpm 250')."""
    parts = [str(recipe["model_size"])] if recipe.get("model_size") else []
    if recipe.get("prediction_type"):
        parts.append({"v_prediction": "v 予測", "epsilon": "ε 予測"}.get(recipe["prediction_type"],
                                                                       str(recipe["prediction_type"])))
    if recipe.get("train_batch_size"):
        parts.append(f"バッチ {recipe['train_batch_size']}")
    if recipe.get("snr_gamma"):
        parts.append(f"Min-SNR {recipe['snr_gamma']:g}" + (" (+1)" if recipe.get("snr_plus_one") else ""))
    scale = recipe.get("guidance_scale") or 1
    if recipe.get("guide_step") and scale != 1:
        parts.append(f"AG {scale:g}")
    if recipe.get("sampler"):
        steps = recipe.get("num_inference_steps")
        parts.append(f"{recipe['sampler']} {steps}" if steps is not None else str(recipe["sampler"]))
        if isinstance(recipe.get("network_evaluations"), int):
            parts[-1] += f"（{recipe['network_evaluations']} 回/枚）"
    return " · ".join(parts) or MISSING


# ---------------------------------------------------------------- one row per recipe
def _rank(row: Row) -> str:
    if row.rank is None:
        return MISSING
    return f"{row.rank}{' ≈' if row.tied else ''}"


def _seed_mean(row: Row) -> str:
    """'0.706 ± 0.081': the ranked variant's seed mean with one standard error."""
    if row.best is None:
        return MISSING
    error = f" ± {_number(row.error, 2)}" if row.error is not None else ""
    return f"{_number(row.best.mean)}{error}"


def _seeds(row: Row) -> str:
    if row.best is None:
        return MISSING
    seeds = ", ".join(map(str, row.best.seeds))
    return f"1（{seeds}、1 回のみ）" if len(row.best.values) == 1 else f"{len(row.best.values)}（{seeds}）"


def _floor_ratio(row: Row) -> str:
    """The seed mean over the mean floor of the ranked variant's evaluations."""
    if row.best is None:
        return MISSING
    floors = [metric_value(e, "fid_floor") for e in row.best.entries]
    floors = [f for f in floors if f]
    return _ratio(row.best.mean / (sum(floors) / len(floors))) if floors else MISSING


def _other_samplers(row: Row) -> str:
    """The recipe's other sampling variants with their seed means: the sampler comparison beside the rank."""
    parts = [f"{_sampler(v.representative, cost=False)}: {_number(v.mean)}（{len(v.values)}）"
             for v in row.variants[1:]]
    return "; ".join(parts) or MISSING


def _verification(row: Row) -> str:
    """What re-scoring the published weights gave for the ranked variant's entries."""
    entries = row.best.entries if row.best else row.entries
    hub = [e for e in entries if e.get("_hub")]
    if not hub:
        return "未検証（重みが Hub にない）"
    parts = []
    for entry in hub:
        verified = entry.get("_verified") or {}
        reported = f"（自己申告 {_number(metric_value(entry, 'fid'))}）"
        if "fid" not in verified:  # a Hub entry ranks only on what its weights give
            parts.append(f"未検証のため順位なし{reported}")
        else:
            mark = "⚠ 不一致" if verified.get("agrees") is False else "✓"
            parts.append(f"{_number(verified['fid'])} {mark}{reported}")
    return ", ".join(parts)


HEADERS = ["順位", "レシピ", "FID ↓（シード平均 ± 標準誤差）", "シード", "下限比", "Hub での検証", "coverage",
           "サンプラー（ネットワーク評価回数）", "ほかのサンプラー: シード平均（シード数）", "モデル", "データ", "デバイス",
           "学習時間（分）", "学習画像数", "評価枚数", "コマンド"]


def made_by(what: str, page: Path | None) -> list[str]:
    """A line for ``page`` saying where the commands that make ``what`` are (none without a page)."""
    if page is None:
        return []
    link = f"{_relative_link(MAINTAINER_DOC, page)}#{MAINTAINER_SECTION}"
    return [f"{what}を作り直すコマンドは [README の「{MAINTAINER_SECTION}」]({link}) にあります。"]


def leaderboard_markdown(recipes: list[dict], page: Path | None = None, collection: dict | None = None) -> str:
    """The MNIST table (one row per recipe, best first) with the notes on how to read it and where it is made
    (a link from ``page``, the file the table goes in)."""
    mnist = [r for r in recipes if is_mnist(r)]
    rows, spread, dof = rank_recipes(mnist)
    lines = ["| " + " | ".join(HEADERS) + " |",
             "|" + "|".join(["---:", "---", "---:", "---", "---:", "---", "---:", "---", "---", "---", "---", "---",
                             "---:", "---:", "---:", "---"]) + "|"]
    for row in rows:
        recipe = row.representative
        command_text = Markup(_code(recipe["command"])) if recipe.get("command") else MISSING
        cells = [_rank(row), _name_link(recipe), _seed_mean(row), _seeds(row), _floor_ratio(row), _verification(row),
                 _number(metric_value(recipe, "coverage")), _sampler(recipe), _other_samplers(row), _model(recipe),
                 _dataset(recipe), _device(recipe), _number(recipe.get("train_minutes")),
                 _number(recipe.get("images_seen")), _number(metric_value(recipe, "num_samples"))]
        lines.append(_row([*cells, command_text]))
    notes = ["", *reading_notes(rows, spread, dof), *verification_notes(mnist), collection_note(collection),
             *made_by("この表と図", page)]
    return "\n".join(lines + notes) + "\n"


FLOOR_NOTE = ("「下限比」は FID を、学習用の本物の数字を評価したときの FID（fid_floor、下限）で割った値です。"
              "学習データをそのまま写しただけの「モデル」でも下限比はほぼ 1 になるので、この指標では暗記と新しい数字の生成を"
              "区別できません。また下限比は評価枚数で変わるため、比べられるのは同じデータ・同じ評価枚数のレシピどうしだけです。")
GROUP_NOTE = ("1 行が 1 つのレシピです。コマンドのうちシード（`--seed`）・出力フォルダー・`--resume_from_checkpoint` と、"
              "生成と評価の設定（サンプラー、ステップ数、autoguidance、評価枚数）だけが違う記録は、同じレシピの別の学習か"
              "別の評価としてまとめます。記録された最後の重みのハッシュが同じ記録は、同じ学習を別の方法で生成・評価したもの"
              "です。同じコマンド・同じシードの学習は、別のマシンで重みの最後の桁が変わってハッシュが違っても、1 回の学習として"
              "数えます。順位には、シード平均がいちばん良い生成の設定を使い、ほかの設定は「ほかのサンプラー」に並べます。")
EVALUATIONS_NOTE = ("「ネットワーク評価回数」は、1 枚を生成するのにモデルを使った回数です。autoguidance で"
                    "ガイドも使うステップは 2 回と数えます。生成の時間はほぼこの回数に比例します。")


def reading_notes(rows: list[Row], spread: float | None, dof: int) -> list[str]:
    """How to read the ranks: the seed spread they rest on, measured from the table itself."""
    notes = ["FID が小さいほど本物の画像に近いことを表します。", FLOOR_NOTE, GROUP_NOTE]
    if spread is not None:
        largest = largest_seed_ratio(rows)
        ratio = (f"同じレシピ・同じ生成の設定で、2 つのシードの FID は最大 {largest[0]:.2f} 倍"
                 f"（{_number(largest[1])} と {_number(largest[2])}）違いました。" if largest else "")
        notes.append(f"1 回の学習の FID は、シードを変えるだけで約 {100 * (math.exp(spread) - 1):.0f} % 揺れます"
                     f"（シードが複数あるレシピから求めた対数の標準偏差 {spread:.2f}、自由度 {dof}）。{ratio}"
                     "「± 標準誤差」はこの揺れをシード数の平方根で割ったもので、評価そのものの揺れ（生成する画像の選び方）も"
                     "含みます。シードが 1 つだけのレシピも同じ揺れを持つとみなしています。")
    notes.append("順位は「その行より確かに良い行の数 + 1」です。2 つの行の FID の比（対数）が、標準誤差を合わせた値の 2 倍"
                 "（約 95 %）以内なら区別できないとみなし、同じ順位になります。「≈」の行は、すぐ上か下の行と区別できません。"
                 "「1 回のみ」の順位は、1 回の学習だけに基づいています。")
    notes.append(EVALUATIONS_NOTE)
    return notes


def verification_notes(recipes: list[dict]) -> list[str]:
    notes = ["「Hub での検証」は、Hub に公開された重み（safetensors）を `--verify` がダウンロードし、記録どおりのサンプラー・"
             "ステップ数・ガイド・シードで生成し直して、同じ指標で測った FID です。かっこの中に自己申告の FID を並べ、2 つの差が、"
             "両方の評価の揺れ（生成した画像のブートストラップによる標準偏差）を合わせた値の 3 倍を超えると「⚠ 不一致」と"
             "表示します。Hub から集めたエントリーは、検証できるまで順位を付けません（「未検証のため順位なし」）。自己申告の数字は"
             "だれでも書けるからです。このリポジトリにある記録は重みを含まないので「未検証」ですが、プルリクエストで"
             "確認してから加えたものなので、自己申告の FID で順位を付けます。"]
    failed = [f"{e['_hub']['repo_id']}: {e['_verified']['note']}"
              + ("（次の集計でもう一度試します）" if e["_verified"].get("retry") else "")
              for e in recipes if e.get("_hub") and (e.get("_verified") or {}).get("note")]
    if failed:
        notes.append("検証できなかったエントリー: " + "; ".join(failed))
    return notes


def collection_note(collection: dict | None) -> str:
    if not collection:
        return (f"Hub のエントリー（タグ `{COURSE_TAG}`）は、まだ集めていません。")
    skipped, stale = len(collection.get("skipped") or []), len(collection.get("stale") or [])
    return (f"Hub のエントリー（タグ `{COURSE_TAG}`）を最後に集めた日: {collection.get('collected')}"
            f"（{collection.get('listed')} 件のうち {collection.get('entries')} 件を掲載"
            + (f"、うち {stale} 件は今回読み込めなかったので前回の内容のまま" if stale else "")
            + (f"、{skipped} 件は理由を付けて除外" if skipped else "") + "）。")


SLOW = 1.5  # a run this many times slower per image than the median of its model and device gets a footnote


def _images_per_minute(recipe: dict) -> float | None:
    minutes, images = recipe.get("train_minutes"), recipe.get("images_seen")
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in (minutes, images)):
        return images / minutes
    return None


def slowness(recipe: dict, recipes: list[dict]) -> float | None:
    """How many times slower per training image ``recipe`` ran than the median of ``recipes`` with its model size
    and device, when that is at least SLOW (its minutes then say more about the machine's day than the recipe). The
    median, since a resumed run may record only its last minutes."""
    rate = _images_per_minute(recipe)
    same = [r for r in (_images_per_minute(r) for r in recipes if recipe.get("model_size")
                        and (r.get("model_size"), _device(r)) == (recipe["model_size"], _device(recipe)))
            if r is not None]
    if not rate or not same:
        return None
    median = statistics.median(same)
    return median / rate if median / rate >= SLOW else None


def summary_markdown(recipes: list[dict], top: int = 5, page: Path | None = None,
                     full_table: str | None = None) -> str:
    """A short table of the ``top`` recipes: rank, recipe, seed mean ± error, seeds, floor ratio, coverage,
    minutes and the main settings; minutes of a run much slower per image than its peers get a footnote."""
    mnist = [r for r in recipes if is_mnist(r)]
    rows, _, _ = rank_recipes(mnist)
    lines = ["| 順位 | レシピ | FID ↓（シード平均 ± 標準誤差） | シード | 下限比 | coverage | 学習時間（分） | 主な設定 |",
             "|---:|---|---:|---|---:|---:|---:|---|"]
    footnotes = []
    for row in [r for r in rows if r.best][:top]:
        recipe = row.representative
        minutes, slow = _number(recipe.get("train_minutes")), slowness(recipe, mnist)
        if slow:
            footnotes.append(f"※{len(footnotes) + 1} 1 分あたりの学習画像数が、同じモデル・同じデバイスの記録の中央値の"
                             f" 1/{slow:.1f} でした（マシンの速さは日やほかの処理の負荷で変わります）。計算量は学習画像数"
                             f"（{_number(recipe['images_seen'])} 枚）で比べてください。")
            minutes += f" ※{len(footnotes)}"
        cells = [_rank(row), _name_link(recipe), _seed_mean(row), _seeds(row), _floor_ratio(row),
                 _number(metric_value(recipe, "coverage")), minutes, main_idea(recipe)]
        lines.append(_row(cells))
    notes = ["", *footnotes,
             "順位が同じ行は、シードによる揺れの範囲で区別できません（「≈」はすぐ上か下の行と区別できない行）。"]
    if full_table:
        notes.append(f"全レシピの表（コマンド、ほかのサンプラー、Hub での検証付き）は [{full_table}]({full_table}) に"
                     "あります。")
    return "\n".join(lines + notes + made_by("この表", page)) + "\n"


# ---------------------------------------------------------------- RGB entries: listed, not ranked
def _grid(recipe: dict) -> str:
    hub = recipe.get("_hub")
    if hub and hub.get("grid"):
        return Markup(f"![サンプル]({HUB_URL}/{quote(hub['repo_id'], safe='/')}/resolve/{quote(str(hub['revision']))}/"
                      f"{quote(hub['grid'], safe='/')})")
    return MISSING


def _reported(recipe: dict) -> str:
    metrics = recipe.get("metrics") or {}
    if not isinstance(metrics.get("fid"), (int, float)):
        return "なし"
    return f"FID {_number(metrics['fid'])}（{_number(metrics.get('num_samples'))} 枚）"


def _rgb_verification(recipe: dict) -> str:
    verified = recipe.get("_verified") or {}
    return f"FID {_number(verified['fid'])}" if "fid" in verified else "未検証"


def rgb_markdown(recipes: list[dict]) -> str:
    """The entries that are not MNIST digits: listed by data set, never ranked against each other."""
    others = sorted((r for r in recipes if not is_mnist(r)), key=lambda r: (str(r.get("dataset")), entry_name(r)))
    if not others:
        return ("まだエントリーはありません。ノートブック 01 のアップロードのセルか、学習スクリプトの `--push_to_hub` で"
                "公開したチョウなどのモデルは、次に Hub から集めたときにここに並びます。\n")
    lines = ["| モデル | サンプル | データ | モデルの大きさ | 学習（デバイス、分、画像数） | 自己申告の指標 | 検証 |",
             "|---|---|---|---|---|---|---|"]
    for recipe in others:
        cells = [_name_link(recipe), _grid(recipe), _dataset(recipe), _model(recipe),
                 f"{_device(recipe)}、{_number(recipe.get('train_minutes'))} 分、{_number(recipe.get('images_seen'))} 枚",
                 _reported(recipe), _rgb_verification(recipe)]
        lines.append(_row(cells))
    return "\n".join(lines + ["", "この表は順位を付けません。データ・解像度・評価の仕方がエントリーごとに違い、FID を比べられないから"
                                  "です。RGB の FID（Inception-v3）は、torch-fidelity が使える環境でだけ測れます。"]) + "\n"


# ---------------------------------------------------------------- files
def replace_table(text: str, table: str, name: str = "the file", markers=(TABLE_START, TABLE_END)) -> str:
    """``text`` with the part between the leaderboard markers (or the given ``markers``) replaced by ``table``."""
    first, last = markers
    start, end = text.find(first), text.find(last)
    if start < 0 or end < start:
        raise RecipeError(f"{name} has no leaderboard markers: put the lines {first} and {last} "
                          "where the table should go.")
    return text[:start + len(first)] + "\n" + table + text[end:]


def label_groups(points, fraction: float = 0.025) -> list[tuple[float, float, list[int]]]:
    """Merge the labels of points closer than ``fraction`` of the points' log span on both axes.

    ``points`` are (x, y, rank) in rank order; each group is labelled once, at its best-ranked point, with
    all its ranks ("1,2"), so that near-identical recipes do not print their numbers on top of each other.
    """
    positive = [(x, y) for x, y, _ in points if x > 0 and y > 0]
    x_tolerance, y_tolerance = [fraction * math.log10(max(v) / min(v)) for v in zip(*positive)] or (0, 0)
    groups = []
    for x, y, rank in points:
        for group in groups:
            if min(x, y, group[0], group[1]) > 0 and abs(math.log10(x / group[0])) <= x_tolerance \
                    and abs(math.log10(y / group[1])) <= y_tolerance:
                group[2].append(rank)
                break
        else:
            groups.append((x, y, [rank]))
    return groups


def plot_leaderboard(recipes: list[dict]):
    """Quality against compute, one point per recipe (its seed mean with one standard error): FID versus
    training minutes and versus images seen; returns the figure."""
    import matplotlib.pyplot as plt

    use_japanese_font()
    rows = [row for row in rank_recipes([r for r in recipes if is_mnist(r)])[0] if row.best]
    if not rows:
        raise RecipeError("None of the MNIST recipes has an FID in its 'metrics'; nothing to plot.")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    devices = sorted({_device(r.representative) for r in rows})
    colors = dict(zip(devices, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 10))
    floors = [metric_value(r.representative, "fid_floor") for r in rows]
    floors = [f for f in floors if f is not None]
    for ax, key, label in zip(axes, ("train_minutes", "images_seen"), ("学習時間（分）", "学習に使った画像の枚数")):
        for device in devices:
            points = [(row.representative[key], row) for row in rows if _device(row.representative) == device
                      and isinstance(row.representative.get(key), (int, float)) and row.representative[key] > 0]
            if not points:
                continue
            xs = [x for x, _ in points]
            ys = [row.best.mean for _, row in points]
            spreads = [math.exp(row.log_error) if row.log_error is not None else 1.0 for _, row in points]
            ax.errorbar(xs, ys, yerr=[[y - y / s for y, s in zip(ys, spreads)], [y * s - y for y, s in zip(ys, spreads)]],
                        fmt="o", color=colors[device], label=device, markersize=6, capsize=3, zorder=3)
            labelled = [(x, row.best.mean, row.rank) for x, row in points]
            for x, y, ranks in label_groups(labelled):  # a merged label goes on the left, clear of its neighbours
                single = len(ranks) == 1
                ax.annotate(",".join(map(str, ranks)), (x, y), textcoords="offset points", fontsize=9,
                            xytext=(5 if single else -5, 4), ha="left" if single else "right")
        if floors:
            ax.axhline(sum(floors) / len(floors), color="gray", linestyle="--", label="本物どうし（下限）")
        log_axes(ax)
        ax.set_xlabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("FID（シード平均 ± 標準誤差、小さいほど良い）")
    axes[0].legend(fontsize=9)
    fig.suptitle("レシピの品質と計算量（1 点が 1 レシピ、番号は表の順位）")
    fig.tight_layout()
    return fig


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipes", nargs="+", help="recipe.json files, or folders that contain them")
    parser.add_argument("--from-hub", action="store_true", help=f"collect the models tagged {COURSE_TAG!r} on the "
                        "Hub into --hub-dir first (bad entries are skipped with a one-line reason)")
    parser.add_argument("--verify", action="store_true", help="re-score the collected MNIST entries whose revision "
                        "has no verification yet, with their own sampler settings (loads torch)")
    parser.add_argument("--max-verify", type=int, metavar="N", help="with --verify: verify at most N entries this "
                        "run; the others stay not verified (and unranked) until a later run")
    parser.add_argument("--hub-dir", type=Path, help="where collected Hub entries are kept (default: the hub/ "
                        "folder of the first folder argument)")
    parser.add_argument("--markdown", type=Path, help="write the MNIST table here (default: print it)")
    parser.add_argument("--readme", type=Path, help="replace the MNIST table between the leaderboard markers "
                        f"({TABLE_START} ... {TABLE_END}) of this markdown file, and the RGB table between "
                        f"{RGB_START} ... {RGB_END} where it has them")
    parser.add_argument("--summary", type=Path, help="replace a short table of the --top recipes between the "
                        f"summary markers ({SUMMARY_START} ... {SUMMARY_END}) of this markdown file")
    parser.add_argument("--top", type=int, default=5, help="how many recipes the --summary table shows (default: 5)")
    parser.add_argument("--check", action="store_true", help="with --readme and/or --summary: write nothing, exit 1 "
                        "when a table there differs from the recipes")
    parser.add_argument("--plot", type=Path, help="write the quality-vs-compute scatter plot (PNG) here")
    args = parser.parse_args(argv)
    if args.check and not (args.readme or args.summary):
        parser.error("--check needs --readme or --summary")
    if args.check and (args.from_hub or args.verify):
        parser.error("--check compares the committed entries; it cannot be combined with --from-hub or --verify")
    if args.top < 1:
        parser.error("--top must be at least 1")
    if args.max_verify is not None and (args.max_verify < 1 or not args.verify):
        parser.error("--max-verify needs --verify and a number of at least 1")
    if args.hub_dir is None:
        folders = [Path(p) for p in args.recipes if Path(p).is_dir()]
        args.hub_dir = folders[0] / "hub" if folders else None
    if (args.from_hub or args.verify) and args.hub_dir is None:
        parser.error("--from-hub and --verify need --hub-dir (or a folder argument)")
    return args


def _relative_link(target: Path, source: Path) -> str:
    """A markdown link from the file ``source`` to ``target`` (both relative to the same folder)."""
    return Path(os.path.relpath(target.resolve(), source.resolve().parent)).as_posix()


def _collection(hub_dir: Path | None) -> dict | None:
    path = hub_dir / hub_entries.COLLECTION_FILE if hub_dir else None
    return json.loads(path.read_text(encoding="utf-8")) if path and path.is_file() else None


def main(argv=None) -> int:
    args = parse_args(argv)
    recorded = [a for a in (sys.argv[1:] if argv is None else argv) if a not in UNRECORDED_FLAGS]
    command = command_line("-m", "tools.leaderboard", argv=recorded)
    updates = {}  # path -> (old text, new text)
    try:
        if args.from_hub:
            from utils.environment import is_online

            if not is_online():
                raise RecipeError("--from-hub: the Hugging Face Hub is not reachable (offline or HF_HUB_OFFLINE=1); "
                                  "the collected entries are kept as they are.")
            try:
                hub_entries.collect(args.hub_dir)
            except Exception as error:  # noqa: BLE001 - the listing itself failed: nothing was changed
                raise RecipeError(f"--from-hub: listing the models tagged {COURSE_TAG} failed "
                                  f"({hub_entries._one_line(error)}); the collected entries are kept as they "
                                  "are. Try again later.") from None
        recipes = load_recipes(args.recipes)
        if args.verify:
            hub_entries.verify(args.hub_dir, recipes, limit=args.max_verify)
        collection = _collection(args.hub_dir)
        targets = []
        if args.readme:
            targets.append((args.readme, leaderboard_markdown(recipes, args.readme, collection), (TABLE_START, TABLE_END)))
            if args.readme.is_file() and RGB_START in args.readme.read_text(encoding="utf-8"):
                targets.append((args.readme, rgb_markdown(recipes), (RGB_START, RGB_END)))
        if args.summary:
            link = _relative_link(args.readme, args.summary) if args.readme else None
            targets.append((args.summary, summary_markdown(recipes, args.top, args.summary, link),
                            (SUMMARY_START, SUMMARY_END)))
        for path, text, markers in targets:
            if not path.is_file():
                raise RecipeError(f"{path} does not exist.")
            old = updates[path][0] if path in updates else path.read_text(encoding="utf-8")
            current = updates[path][1] if path in updates else old
            updates[path] = (old, replace_table(current, text, str(path), markers))
        if args.check:
            stale = [path for path, (old, new) in updates.items() if old != new]
            for path in updates:
                print(f"{path}: the leaderboard is " + (f"out of date; run: {command}" if path in stale
                                                         else "up to date."))
            return int(bool(stale))
        figure = plot_leaderboard(recipes) if args.plot else None
    except RecipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path, (_, new) in updates.items():
        path.write_text(new, encoding="utf-8")
        print(f"updated the leaderboard in {path}")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(leaderboard_markdown(recipes, args.markdown, collection), encoding="utf-8")
        print(f"wrote {args.markdown}")
    elif not updates:
        print(leaderboard_markdown(recipes, None, collection))
    if figure is not None:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(args.plot, dpi=120)
        print(f"wrote {args.plot}")
    return 0


__all__ = ["load_recipes", "leaderboard_markdown", "summary_markdown", "rgb_markdown", "main", "seed_group", "score"]

if __name__ == "__main__":
    sys.exit(main())
