"""Course-wide constants: the single place that names the GitHub repository.

The notebooks' setup cell clones https://github.com/GITHUB_REPO (branch BRANCH) when it is opened alone; the
environment variable COURSE_REPO_URL replaces that URL (any URL or path git can clone: tests use a local copy).
"""

GITHUB_REPO = "diffusion-course-ja/diffusion-course"
BRANCH = "main"
NOTEBOOKS = {
    "unit1/01_introduction_to_diffusers.ipynb": "Diffusers 入門 (Introduction to Diffusers)",
    "unit1/02_diffusion_models_from_scratch.ipynb": "ゼロから作る拡散モデル (Diffusion Models from Scratch)",
}
