"""`LabConfig`: one experiment of the scaling lab (a paper table), as YAML overrides of this schema.

An experiment = data (synthetic preset, a raw click log, or the official files) -> prepare -> a set of
encoder *variants* (each a PretrainConfig override: a size, a sequence length, an input mode, a loss)
-> questions -> an alignment *grid* (adapters x strategies x learning rates x seeds, plus baseline and
control methods) run as Ray Tune trials -> result records -> fits, plots and tables.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal


@dataclasses.dataclass(frozen=True)
class LabConfig:
    experiment: str = ""  # results/<experiment>/, reports/<experiment>/ (default: the script's name)
    workdir: str = "lab"  # every stage output lives under here, keyed by content hash
    # Data: exactly one source. Synthetic by default (the embedded default is `small`).
    synth: str = "small"
    synth_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    raw: str = ""  # a raw click log folder (clicks/*.parquet + items.parquet)
    official: str = ""  # a folder with the official Kaggle Arrow files (already prepared)
    seed: int = 0
    prepare: dict[str, Any] = dataclasses.field(default_factory=dict)  # PrepareConfig overrides
    tokenizer: str = ""  # HF tokenizer for prepare ("" = train the embedded one on the catalog)
    questions: dict[str, Any] = dataclasses.field(default_factory=dict)  # QuestionConfig overrides
    # Pretraining: `pretrain` applies to every variant, each variant adds its own overrides.
    pretrain: dict[str, Any] = dataclasses.field(default_factory=dict)
    variants: tuple[dict[str, Any], ...] = ()
    pretrain_concurrency: int = 1  # variants pretrained at once (each a Ray Train run; Ray places them)
    # Alignment / evaluation as Ray Tune trials: GridSpec overrides (uqa_ray/tune/grid.py) — adapters,
    # strategies, lrs, seeds, methods (encoder, random, no_embedding, oracle, text20, text50),
    # align_preset, align, llm, resources per trial, ... The encoders are the variants above.
    grid: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Analysis.
    x: Literal["params", "seq_len", "none"] = "params"  # the scaling axis fitted and plotted
    scorer: Literal["official", "likelihood"] = "official"
    table: int = 0  # which paper table to render (0 = none)

    def __post_init__(self) -> None:
        if self.pretrain_concurrency < 1:
            raise ValueError(f"pretrain_concurrency must be >= 1, got {self.pretrain_concurrency}")
        sources = [s for s in (self.raw, self.official) if s]
        if len(sources) > 1:
            raise ValueError("give at most one of raw= and official= (synthetic data is the default)")
        methods = self.grid.get("methods", ("encoder",))
        if not self.variants and {"encoder", "random"} & set(methods):
            raise ValueError("grid methods 'encoder'/'random' need encoder variants")
        for i, v in enumerate(self.variants):
            if not isinstance(v, dict):
                raise ValueError(f"variants[{i}] must be a mapping of PretrainConfig overrides")
