"""Fixtures for the alignment tests (see tiny_lm.py)."""
from tests.align.tiny_lm import llm_tok, tiny_llm_dir, tok_dir  # noqa: F401
