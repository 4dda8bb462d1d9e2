"""Maintainer command lines (run from the repository root as ``python -m tools.NAME``); not used by the notebooks."""
