"""uqa-ray: a Ray-distributed scaling lab for UQABench (Liu et al., KDD 2025)."""
__version__ = "0.1.0"
