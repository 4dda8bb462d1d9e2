"""tools.leaderboard: recipe.json files -> a sorted markdown table and a quality-vs-compute plot."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tools import leaderboard
from tools.leaderboard import (
    MISSING,
    OPTIONAL,
    RecipeError,
    label_groups,
    leaderboard_markdown,
    load_recipes,
    main,
    main_idea,
    seed_group,
    seed_means,
    sort_recipes,
)
from utils.recipe import RECIPE_FIELDS

ROOT = Path(__file__).resolve().parent.parent


def write_recipe(folder, **fields):
    """A recipe.json with every schema field (None unless given), as the writers of utils/recipe.py make it."""
    folder.mkdir(parents=True, exist_ok=True)
    recipe = {**dict.fromkeys(RECIPE_FIELDS), "metrics": {}, **fields}
    (folder / "recipe.json").write_text(json.dumps(recipe), encoding="utf-8")
    return folder / "recipe.json"


@pytest.fixture
def recipes(tmp_path):
    common = dict(dataset="mnist", device="cpu", num_processes=1, mixed_precision="no", model_size="small",
                  num_parameters=687_000, train_batch_size=64, learning_rate=1e-3)
    return [
        write_recipe(tmp_path / "ddpm-3min", **common, train_minutes=3.1, images_seen=25_600, sampler="dpm++",
                     num_inference_steps=20, guide_step=None, guidance_scale=1.0,
                     command="python unit1/train_unconditional.py --max_train_steps 400 --sampler dpm++",
                     metrics={"fid": 12.0, "fid_floor": 1.5, "kid_mean": 0.02, "kid_std": 0.001,
                              "coverage": 0.97, "confidence": 0.9, "num_samples": 1000}),
        write_recipe(tmp_path / "ddpm-15min", **common, train_minutes=15.0, images_seen=128_000, sampler="ddpm",
                     num_inference_steps=100, guide_step=1000, guidance_scale=1.5,
                     command="accelerate launch unit1/train_unconditional.py --max_train_steps 2000 --guide_step 1000",
                     metrics={"fid": 3.0, "fid_floor": 1.5, "kid_mean": 0.004, "kid_std": 0.0005,
                              "coverage": 0.99, "confidence": 0.95, "num_samples": 1000}),
        write_recipe(tmp_path / "naive-baseline", dataset="mnist", dataset_fallback="OFFLINE FALLBACK: digits",
                     train_minutes=3.0, images_seen=40_000,
                     command="python naive.py --note 'a|b'", metrics={"fid": 80.0, "fid_floor": 1.5}),
        write_recipe(tmp_path / "not-evaluated", dataset="mnist", device="cuda", num_processes=2,
                     mixed_precision="fp16", train_minutes=1.0, images_seen=10_000, metrics={}),
    ]


def table_rows(markdown):
    return [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| 順位")]


def test_table_is_sorted_by_fid_with_missing_values_as_dashes(recipes):
    rows = table_rows(leaderboard_markdown(load_recipes(recipes)))
    # the offline fallback data is a dataset of its own, ranked after (not between) the Hub MNIST recipes
    assert [row.split(" | ")[1] for row in rows] == ["ddpm-15min", "ddpm-3min", "not-evaluated", "naive-baseline"]
    best = rows[0].split(" | ")
    assert best[:6] == ["| 1", "ddpm-15min", "3", "2.00×", MISSING, "0.004 ± 0.0005"]  # one seed: no seed mean
    assert "cpu" in best and "15" in best and "128,000" in best and "1,000" in best and "small (0.69 M)" in best
    assert best[-1] == "`accelerate launch unit1/train_unconditional.py --max_train_steps 2000 --guide_step 1000` |"
    assert "ddpm 100 + AG 1.5 (step 1000)" in best and "dpm++ 20" in rows[1].split(" | ")  # AG: autoguidance
    unevaluated = rows[2].split(" | ")
    assert unevaluated[2] == MISSING and unevaluated[-1] == f"{MISSING} |"
    assert "cuda ×2 (fp16)" in unevaluated
    assert "`python naive.py --note 'a\\|b'`" in rows[3]  # a pipe inside a command does not break the table
    assert "mnist（オフライン代替データ）" in rows[3].split(" | ") and "mnist" in best


def test_sorting_direction_follows_the_metric(recipes):
    loaded = load_recipes(recipes)
    by_coverage = [r["metrics"].get("coverage") for r in sort_recipes(loaded, "coverage")]
    assert by_coverage == [0.99, 0.97, None, None]


def test_command_line_writes_markdown_and_plot(recipes, tmp_path, capsys):
    markdown, plot = tmp_path / "out" / "leaderboard.md", tmp_path / "out" / "leaderboard.png"
    folders = [str(path.parent) for path in recipes]  # a folder means its recipe.json
    assert main([*folders, "--markdown", str(markdown), "--plot", str(plot)]) == 0
    text = markdown.read_text(encoding="utf-8")
    assert len(table_rows(text)) == 4
    assert "`python -m tools.leaderboard " in text and "--plot" in text  # the command that made it
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.width > 600


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not a list"),
    (json.dumps({**dict.fromkeys(RECIPE_FIELDS), "metrics": 3}), "'metrics' must be an object"),
    (json.dumps({name: None for name in RECIPE_FIELDS if name != "guidance_scale"} | {"metrics": {}}),
     r"does not follow the recipe schema \(utils/recipe.py\): missing field 'guidance_scale'"),
])
def test_unreadable_recipes_get_clear_messages(tmp_path, content, message):
    path = tmp_path / "recipe.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(RecipeError, match=message):
        load_recipes([path])


def test_plot_without_any_metric_is_an_error_not_an_empty_figure(tmp_path, capsys):
    path = write_recipe(tmp_path / "run", dataset="mnist", metrics={})
    assert main([str(path), "--plot", str(tmp_path / "plot.png")]) == 2
    assert "nothing to plot" in capsys.readouterr().err
    assert not (tmp_path / "plot.png").exists()


def test_a_folder_of_run_folders_means_all_their_recipes(recipes, tmp_path):
    assert len(load_recipes([tmp_path])) == 4
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecipeError, match="holds no recipe.json"):
        load_recipes([tmp_path / "empty"])


def test_readme_table_is_replaced_between_markers_and_checked(recipes, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# Unit\n\n<!-- leaderboard:start -->\nold table\n<!-- leaderboard:end -->\n\nMore text.\n",
                      encoding="utf-8")
    args = [str(path) for path in recipes] + ["--readme", str(readme)]
    assert main([*args, "--check"]) == 1
    assert "out of date" in capsys.readouterr().out and "old table" in readme.read_text(encoding="utf-8")
    assert main(args) == 0
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("# Unit\n\n<!-- leaderboard:start -->\n| 順位") and text.endswith("<!-- leaderboard:end -->\n\nMore text.\n")
    assert len(table_rows(text)) == 4 and "old table" not in text
    assert main([*args, "--check"]) == 0  # --check is not part of the recorded command
    readme.write_text("# No markers\n", encoding="utf-8")
    assert main(args) == 2
    assert "no leaderboard markers" in capsys.readouterr().err


def test_plot_labels_of_near_identical_recipes_are_merged_not_overprinted():
    points = [(1.0, 1.0, 1), (1.0, 1.003, 2), (10.0, 1.0, 3), (1.01, 1.002, 4), (1.0, 10.0, 5), (2.0, -0.1, 6)]
    assert label_groups(points) == [(1.0, 1.0, [1, 2, 4]), (10.0, 1.0, [3]), (1.0, 10.0, [5]), (2.0, -0.1, [6])]


def test_summary_shows_the_top_recipes_in_a_short_table_and_is_checked(recipes, tmp_path, capsys):
    full, unit = tmp_path / "leaderboard" / "README.md", tmp_path / "README.md"
    full.parent.mkdir()
    full.write_text("<!-- leaderboard:start -->\n<!-- leaderboard:end -->\n", encoding="utf-8")
    unit.write_text("# Unit\n<!-- leaderboard-top:start -->\nold\n<!-- leaderboard-top:end -->\nEnd.\n", encoding="utf-8")
    args = [str(path) for path in recipes] + ["--readme", str(full), "--summary", str(unit), "--top", "2"]
    assert main([*args, "--check"]) == 1
    assert capsys.readouterr().out.count("out of date") == 2
    assert main(args) == 0
    text = unit.read_text(encoding="utf-8")
    rows = table_rows(text)
    assert len(rows) == 2 and rows[0].split(" | ")[:4] == ["| 1", "ddpm-15min", "3", "2.00×"]
    assert rows[0].count(" | ") == 7 and "`" not in rows[0]  # rank, recipe, FID, ratio, seed mean, coverage,
    # minutes, idea
    assert "[leaderboard/README.md](leaderboard/README.md)" in text and text.endswith("<!-- leaderboard-top:end -->\nEnd.\n")
    assert len(table_rows(full.read_text(encoding="utf-8"))) == 4
    assert main([*args, "--check"]) == 0
    unit.write_text("# No summary markers\n", encoding="utf-8")
    assert main(args) == 2
    assert "leaderboard-top:start" in capsys.readouterr().err


def test_main_idea_is_made_from_the_recipe():
    recipe = dict(model_size="micro-conv", prediction_type="v_prediction", train_batch_size=32, snr_gamma=5.0,
                  snr_plus_one=True, guide_step=1000, guidance_scale=1.5, sampler="ddpm", num_inference_steps=250,
                  seed=1)
    assert main_idea(recipe) == "micro-conv · v 予測 · バッチ 32 · Min-SNR 5 (+1) · AG 1.5 · ddpm 250 · seed 1"
    assert main_idea({}) == MISSING


def test_seeds_of_one_recipe_are_averaged_and_other_recipes_are_not(tmp_path):
    base = "python unit1/train_unconditional.py --max_train_steps 4600 --guide_step 1000"
    made = [write_recipe(tmp_path / f"run-seed{seed}", seed=seed, sampler="dpm++", num_inference_steps=25,
                         guide_step=1000, guidance_scale=1.5, network_evaluations=50,
                         command=f"{base} --seed {seed} --output_dir out/run-seed{seed}"
                         + (" --resume_from_checkpoint latest" if seed == 2 else ""),
                         metrics={"fid": fid, "fid_floor": 0.2})
            for seed, fid in ((0, 0.5), (1, 0.8), (2, 0.5))]
    made.append(write_recipe(tmp_path / "other", seed=0, command=f"{base} --sampler ddpm --seed 0",
                             metrics={"fid": 0.4, "fid_floor": 0.2}))
    made.append(write_recipe(tmp_path / "notebook", seed=0, command=None, metrics={"fid": 9.0, "fid_floor": 0.2}))
    loaded = load_recipes(made)
    assert seed_group(loaded[0]) == seed_group(loaded[2]) == base and seed_group(loaded[4]) is None
    means = seed_means(loaded)
    assert list(means) == [base]
    assert means[base]["mean"] == pytest.approx(0.6) and means[base]["ratio"] == pytest.approx(3.0)
    assert means[base]["seeds"] == [0, 1, 2]
    rows = {row.split(" | ")[1]: row.split(" | ") for row in table_rows(leaderboard_markdown(loaded))}
    assert rows["run-seed1"][4] == "0.6（3.00×、シード 0, 1, 2）"
    assert rows["other"][4] == rows["notebook"][4] == MISSING
    assert "dpm++ 25 + AG 1.5 (step 1000)（50 回/枚）" in rows["run-seed0"]


def test_the_floor_note_says_what_the_metric_cannot_show(recipes):
    note = leaderboard_markdown(load_recipes(recipes))
    assert "暗記" in note and "評価枚数" in note


def keys_read_from_recipes() -> set[str]:
    """The string keys tools/leaderboard.py reads from a recipe: recipe.get("x"), recipe["x"], r.get("x"), r["x"]."""
    keys = set()
    for node in ast.walk(ast.parse(Path(leaderboard.__file__).read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            target, key = node.func.value, node.args[0] if node.args else None
        elif isinstance(node, ast.Subscript):
            target, key = node.value, node.slice
        else:
            continue
        if isinstance(target, ast.Name) and target.id in ("recipe", "r") and isinstance(key, ast.Constant) \
                and isinstance(key.value, str):
            keys.add(key.value)
    return keys - {"_source"}  # added by load_recipes, not read from the file


def test_the_leaderboard_reads_only_schema_fields_and_its_declared_optional_keys():
    keys = keys_read_from_recipes()
    assert {"command", "dataset", "guide_step", "metrics"} <= keys  # the scan sees the reads
    assert keys - set(RECIPE_FIELDS) == OPTIONAL, "read a new key? add it to utils/recipe.py (or to OPTIONAL)"
    assert not OPTIONAL & set(RECIPE_FIELDS)


def test_recipes_without_the_optional_keys_are_shown(recipes):
    """A notebook's recipe has no --snr_gamma: the optional keys are read with .get, never required."""
    loaded = load_recipes(recipes)
    assert all(OPTIONAL.isdisjoint(recipe) for recipe in loaded)
    assert [main_idea(recipe).split(" · ")[0] for recipe in loaded[:2]] == ["small", "small"]
    assert len(table_rows(leaderboard_markdown(loaded))) == 4


def test_the_command_line_does_not_load_torch(recipes, tmp_path):
    code = ("import sys\nfrom tools.leaderboard import main\n"
            f"assert main({[str(path) for path in recipes]!r} + ['--markdown', {str(tmp_path / 'a.md')!r}, "
            f"'--plot', {str(tmp_path / 'a.png')!r}]) == 0\n"
            "assert 'torch' not in sys.modules, 'torch was imported'")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "a.png").is_file()
