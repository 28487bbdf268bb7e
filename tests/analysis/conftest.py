"""Fixtures for the analysis tests (hand-made records: see factory.py)."""
from tests.analysis.factory import scaling_dir  # noqa: F401
