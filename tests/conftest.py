"""Test configuration: make the repository importable and keep every test offline."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("COURSE_QUICK", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
