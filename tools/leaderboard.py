"""Collect training recipes (``recipe.json`` files, see utils/recipe.py) into a leaderboard.

    python -m tools.leaderboard RUN_DIR/recipe.json [MORE ...] --markdown OUT.md --plot OUT.png
    python -m tools.leaderboard unit1/leaderboard --readme unit1/leaderboard/README.md --summary unit1/README.md \
        --plot unit1/images/leaderboard.png

The markdown table is sorted by the metric (lower FID is better) and shows the device, training minutes,
images seen and the exact command of each recipe; the plot shows quality against compute.
A folder argument means the ``recipe.json`` inside it, or else the ``*/recipe.json`` of its sub-folders.
``--readme`` replaces the full table between the leaderboard markers of a markdown file; ``--summary``
replaces a short table of the ``--top`` best recipes (rank, recipe, FID, coverage, minutes, main settings)
between the summary markers of another file. ``--check`` only reports whether both are up to date.
Missing values are shown as "—". A recipe that lacks a field of utils.recipe.RECIPE_FIELDS is an error.
Run it from the repository root; it does not load torch.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
from pathlib import Path

from utils.recipe import RecipeError, recipe_problems
from utils.viz import log_axes, use_japanese_font

MISSING = "—"
TABLE_START, TABLE_END = "<!-- leaderboard:start -->", "<!-- leaderboard:end -->"
SUMMARY_START, SUMMARY_END = "<!-- leaderboard-top:start -->", "<!-- leaderboard-top:end -->"
LOWER_IS_BETTER = {"fid": True, "kid_mean": True, "coverage": False, "confidence": False}
DISPLAY_NAMES = {"fid": "FID", "kid_mean": "KID"}
# Keys read beside the schema's fields: only the training script has these flags (Min-SNR weighting, the interval
# of autoguidance), so a
# notebook's or the naive baseline's recipe goes without them.
OPTIONAL = {"snr_gamma", "snr_plus_one", "guide_interval"}


def load_recipes(paths) -> list[dict]:
    """Read recipe.json files (a folder means its recipe.json); each gets its source path under ``_source``.

    A file that is not JSON or does not follow utils/recipe.py raises RecipeError naming the file and what is wrong.
    """
    files = []
    for path in map(Path, paths):
        if path.is_dir() and not (path / "recipe.json").is_file():
            found = sorted(path.glob("*/recipe.json"))
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
        recipes.append({**recipe, "_source": str(file)})
    if not recipes:
        raise RecipeError("No recipes given: pass at least one recipe.json.")
    return recipes


def metric_value(recipe: dict, metric: str) -> float | None:
    value = (recipe.get("metrics") or {}).get(metric)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def sort_recipes(recipes: list[dict], metric: str = "fid") -> list[dict]:
    """Best first by ``metric`` within each dataset (the offline fallback is a dataset of its own); recipes
    without the metric go last."""
    sign = 1 if LOWER_IS_BETTER.get(metric, True) else -1

    def key(recipe):
        value = metric_value(recipe, metric)
        return (_dataset(recipe), value is None, 0.0 if value is None else sign * value)

    return sorted(recipes, key=key)


def recipe_name(recipe: dict) -> str:
    """The run's folder name (the folder that holds its recipe.json)."""
    return Path(recipe.get("_source", "?")).parent.name or "?"


def _number(value, digits: int = 3) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return MISSING
    if isinstance(value, int) or (float(value).is_integer() and abs(value) >= 1000):
        return f"{int(value):,}"
    return f"{value:.{digits}g}"


def _ratio(ratio: float) -> str:
    """6.83×, 11.4×, 2,173×: as many digits as help to compare."""
    return f"{ratio:.2f}×" if ratio < 10 else f"{ratio:.1f}×" if ratio < 100 else f"{ratio:,.0f}×"


def _sampler(recipe: dict) -> str:
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
    if isinstance(recipe.get("network_evaluations"), int):
        text += f"（{recipe['network_evaluations']} 回/枚）"
    return text


SEED_FLAGS = ("--seed", "--output_dir", "--resume_from_checkpoint")  # what may differ between seeds of one recipe


def seed_group(recipe: dict) -> str | None:
    """The recipe's command without --seed, --output_dir and --resume_from_checkpoint: the same for the runs of
    one recipe that differ only in the seed (None without a command)."""
    if not recipe.get("command"):
        return None
    tokens, kept = shlex.split(recipe["command"]), []
    skip = False
    for token in tokens:
        if skip:
            skip = False
        elif token in SEED_FLAGS:
            skip = True
        elif not token.startswith(tuple(f"{flag}=" for flag in SEED_FLAGS)):
            kept.append(token)
    return " ".join(kept)


def seed_means(recipes: list[dict], metric: str = "fid") -> dict[str, dict]:
    """For each recipe run with two or more seeds: the mean metric, the mean floor ratio and the seeds."""
    groups: dict[str, list[dict]] = {}
    for recipe in recipes:
        if seed_group(recipe) is not None and metric_value(recipe, metric) is not None:
            groups.setdefault(seed_group(recipe), []).append(recipe)
    means = {}
    for key, members in groups.items():
        seeds = sorted({member.get("seed") for member in members}, key=str)
        if len(seeds) < 2:
            continue
        values = [metric_value(member, metric) for member in members]
        ratios = [metric_value(m, metric) / metric_value(m, "fid_floor") for m in members
                  if metric == "fid" and metric_value(m, "fid_floor")]
        means[key] = {"mean": sum(values) / len(values), "seeds": seeds,
                      "ratio": sum(ratios) / len(ratios) if len(ratios) == len(members) else None}
    return means


def _seed_mean(recipe: dict, means: dict[str, dict]) -> str:
    """'0.705（3.42×、シード 0, 1, 2）' for a recipe run with several seeds, else '—'."""
    mean = means.get(seed_group(recipe) or "")
    if mean is None:
        return MISSING
    ratio = f"{_ratio(mean['ratio'])}、" if mean["ratio"] is not None else ""
    return f"{_number(mean['mean'])}（{ratio}シード {', '.join(map(str, mean['seeds']))}）"


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
    return str(text).replace("|", "\\|").replace("\n", " ")


FLOOR_NOTE = ("「下限比」は FID を、学習用の本物の数字を評価したときの FID（fid_floor、下限）で割った値です。"
              "学習データをそのまま写しただけの「モデル」でも下限比はほぼ 1 になるので、この指標では暗記と新しい数字の生成を"
              "区別できません。また下限比は評価枚数で変わるため、比べられるのは同じデータ・同じ評価枚数のレシピどうしだけです。")


SEED_NOTE = ("「シード平均」は、コマンドの `--seed`（と `--output_dir`・`--resume_from_checkpoint`）だけが違うレシピを"
             "まとめた平均です。1 回の学習の値はシードで 1〜3 割揺れるので、レシピどうしの比較はこの平均でするのが確かです。")
EVALUATIONS_NOTE = ("「評価回数」は、1 枚を生成するのにモデルを使った回数（ネットワーク評価回数）です。autoguidance で"
                    "ガイドも使うステップは 2 回と数えます。生成の時間はほぼこの回数に比例します。")


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
    if recipe.get("seed") not in (None, 0):
        parts.append(f"seed {recipe['seed']}")
    return " · ".join(parts) or MISSING


def summary_markdown(recipes: list[dict], top: int = 5, metric: str = "fid", command: str | None = None,
                     full_table: str | None = None) -> str:
    """A short table of the ``top`` best recipes: rank, recipe, metric, floor ratio, coverage, minutes, main idea."""
    name = DISPLAY_NAMES.get(metric, metric)
    lines = [f"| 順位 | レシピ | {name} {'↓' if LOWER_IS_BETTER.get(metric, True) else '↑'} | 下限比 | "
             f"シード平均の {name}（下限比） | coverage | 学習時間（分） | 主な設定 |", "|---:|---|---:|---:|---|---:|---:|---|"]
    means = seed_means(recipes, metric)
    for rank, recipe in enumerate(sort_recipes(recipes, metric)[:top], start=1):
        value, floor = metric_value(recipe, metric), metric_value(recipe, "fid_floor")
        ratio = _ratio(value / floor) if metric == "fid" and value is not None and floor else MISSING
        row = [rank, recipe_name(recipe), _number(value), ratio, _seed_mean(recipe, means),
               _number((recipe.get("metrics") or {}).get("coverage")), _number(recipe.get("train_minutes")),
               main_idea(recipe)]
        lines.append("| " + " | ".join(map(_cell, row)) + " |")
    notes = [""]
    if full_table:
        notes.append(f"全 {len(recipes)} 件の表（コマンド付き）は [{full_table}]({full_table}) にあります。")
    if command:
        notes.append(f"この表は `{command}` で作成しました。")
    return "\n".join(lines + notes) + "\n"


def leaderboard_markdown(recipes: list[dict], metric: str = "fid", command: str | None = None) -> str:
    """A markdown table of the recipes, best first, with a note on how to read it and the command that made it."""
    name = DISPLAY_NAMES.get(metric, metric)
    headers = ["順位", "レシピ", f"{name} {'↓' if LOWER_IS_BETTER.get(metric, True) else '↑'}", "下限比",
               f"シード平均の {name}（下限比）", "KID", "coverage", "確信度", "データ", "モデル", "サンプラー（評価回数）",
               "デバイス", "学習時間（分）", "学習画像数", "評価枚数", "コマンド"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---:"] + ["---"] + ["---:"] * 2 + ["---"]
                                                                   + ["---:"] * 3 + ["---"] * 4
                                                                   + ["---:"] * 3 + ["---"]) + "|"]
    means = seed_means(recipes, metric)
    for rank, recipe in enumerate(sort_recipes(recipes, metric), start=1):
        metrics = recipe.get("metrics") or {}
        value, floor = metric_value(recipe, metric), metric_value(recipe, "fid_floor")
        ratio = _ratio(value / floor) if metric == "fid" and value is not None and floor else MISSING
        kid = _number(metrics.get("kid_mean"))
        if kid != MISSING and isinstance(metrics.get("kid_std"), (int, float)):
            kid += f" ± {_number(metrics['kid_std'], 2)}"
        command_text = f"`{_cell(recipe['command'])}`" if recipe.get("command") else MISSING
        row = [rank, recipe_name(recipe), _number(value), ratio, _seed_mean(recipe, means), kid,
               _number(metrics.get("coverage")),
               _number(metrics.get("confidence")), _dataset(recipe), _model(recipe), _sampler(recipe),
               _device(recipe), _number(recipe.get("train_minutes")), _number(recipe.get("images_seen")),
               _number(metrics.get("num_samples"))]
        lines.append("| " + " | ".join([*map(_cell, row), command_text]) + " |")
    notes = ["", f"{name} が小さいほど本物の画像に近いことを表します。" if LOWER_IS_BETTER.get(metric, True)
             else f"{name} が大きいほど良い結果です。",
             FLOOR_NOTE, SEED_NOTE, EVALUATIONS_NOTE]
    if command:
        notes.append(f"この表と図は `{command}` で作成しました。")
    return "\n".join(lines + notes) + "\n"


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


def plot_leaderboard(recipes: list[dict], metric: str = "fid"):
    """Quality against compute: the metric versus training minutes and versus images seen; returns the figure."""
    import matplotlib.pyplot as plt

    use_japanese_font()
    ranked = [(rank, r) for rank, r in enumerate(sort_recipes(recipes, metric), start=1)
              if metric_value(r, metric) is not None]
    if not ranked:
        raise RecipeError(f"None of the recipes has the metric {metric!r} in its 'metrics'; nothing to plot.")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    devices = sorted({_device(r) for _, r in ranked})
    colors = dict(zip(devices, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 10))
    floors = [metric_value(r, "fid_floor") for _, r in ranked if metric == "fid"]
    floors = [f for f in floors if f is not None]
    for ax, key, label in zip(axes, ("train_minutes", "images_seen"), ("学習時間（分）", "学習に使った画像の枚数")):
        for device in devices:
            points = [(r[key], metric_value(r, metric), rank) for rank, r in ranked
                      if _device(r) == device and isinstance(r.get(key), (int, float)) and r[key] > 0]
            if not points:
                continue
            xs, ys, ranks = zip(*points)
            ax.scatter(xs, ys, color=colors[device], label=device, s=40, zorder=3)
            for x, y, ranks in label_groups(points):  # a merged label goes on the left, clear of its neighbours
                single = len(ranks) == 1
                ax.annotate(",".join(map(str, ranks)), (x, y), textcoords="offset points", fontsize=9,
                            xytext=(5 if single else -5, 4), ha="left" if single else "right")
        if floors:
            ax.axhline(sum(floors) / len(floors), color="gray", linestyle="--", label="本物どうし（下限）")
        log_axes(ax)
        ax.set_xlabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel(f"{DISPLAY_NAMES.get(metric, metric)}（{'小さいほど良い' if LOWER_IS_BETTER.get(metric, True) else '大きいほど良い'}）")
    axes[0].legend(fontsize=9)
    fig.suptitle("レシピの品質と計算量（点の番号は表の順位）")
    fig.tight_layout()
    return fig


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipes", nargs="+", help="recipe.json files, or folders that contain one")
    parser.add_argument("--metric", default="fid", help="key of the recipes' 'metrics' to sort by (default: fid)")
    parser.add_argument("--markdown", type=Path, help="write the table here (default: print it)")
    parser.add_argument("--readme", type=Path, help="replace the full table between the leaderboard markers "
                        f"({TABLE_START} ... {TABLE_END}) of this markdown file")
    parser.add_argument("--summary", type=Path, help="replace a short table of the --top best recipes between the "
                        f"summary markers ({SUMMARY_START} ... {SUMMARY_END}) of this markdown file")
    parser.add_argument("--top", type=int, default=5, help="how many recipes the --summary table shows (default: 5)")
    parser.add_argument("--check", action="store_true", help="with --readme and/or --summary: write nothing, exit 1 "
                        "when a table there differs from the recipes")
    parser.add_argument("--plot", type=Path, help="write the quality-vs-compute scatter plot (PNG) here")
    args = parser.parse_args(argv)
    if args.check and not (args.readme or args.summary):
        parser.error("--check needs --readme or --summary")
    if args.top < 1:
        parser.error("--top must be at least 1")
    return args


def _relative_link(target: Path, source: Path) -> str:
    """A markdown link from the file ``source`` to ``target`` (both relative to the same folder)."""
    return Path(os.path.relpath(target.resolve(), source.resolve().parent)).as_posix()


def main(argv=None) -> int:
    args = parse_args(argv)
    command = " ".join(["python -m tools.leaderboard",
                        *map(shlex.quote, [a for a in (sys.argv[1:] if argv is None else argv) if a != "--check"])])
    updates = {}  # path -> (old text, new text)
    try:
        recipes = load_recipes(args.recipes)
        table = leaderboard_markdown(recipes, args.metric, command)
        targets = []
        if args.readme:
            targets.append((args.readme, table, (TABLE_START, TABLE_END)))
        if args.summary:
            link = _relative_link(args.readme, args.summary) if args.readme else None
            targets.append((args.summary, summary_markdown(recipes, args.top, args.metric, command, link),
                            (SUMMARY_START, SUMMARY_END)))
        for path, text, markers in targets:
            if not path.is_file():
                raise RecipeError(f"{path} does not exist.")
            old = path.read_text(encoding="utf-8")
            updates[path] = (old, replace_table(old, text, str(path), markers))
        if args.check:
            stale = [path for path, (old, new) in updates.items() if old != new]
            for path in updates:
                print(f"{path}: the leaderboard is " + (f"out of date; run: {command}" if path in stale
                                                         else "up to date."))
            return int(bool(stale))
        figure = plot_leaderboard(recipes, args.metric) if args.plot else None
    except RecipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path, (_, new) in updates.items():
        path.write_text(new, encoding="utf-8")
        print(f"updated the leaderboard in {path}")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table, encoding="utf-8")
        print(f"wrote {args.markdown}")
    elif not updates:
        print(table)
    if figure is not None:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(args.plot, dpi=120)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
