"""Analysis of result records: scaling-law fits, paper-style tables and figure-3-style plots.

A plain package at the repo root (not installed). It reads only `results/<experiment>/*.json` records
and the paper's own numbers (`analysis.paper`); it never imports training code, so reports can be
rebuilt anywhere from the records alone. Run its scripts from the repo root, e.g.
`python -m analysis.fit_scaling --results results/scale_model_size --x params --out reports/scale_model_size`.
"""
