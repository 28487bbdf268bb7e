"""`LabConfig`: one experiment of the scaling lab (a paper table), as YAML overrides of this schema.

An experiment = data (synthetic preset, a raw click log, or the official files) -> prepare -> a set of
encoder *variants* (each a PretrainConfig override: a size, a sequence length, an input mode, a loss)
-> questions -> an alignment *grid* (adapters x strategies x learning rates x seeds, plus baseline and
control methods) run as Ray Tune trials -> result records -> fits, plots and tables.

Each stage's block is that stage's own typed config (`prepare: PrepareConfig`, `questions:
QuestionConfig`, `pretrain: PretrainConfig`, `grid: GridSpec`), so a key is checked where it is written
and means what it means when the stage runs alone. The lab sets two things in its stages unless they set
them themselves (`derived_defaults`): every stage's seed is the lab's `seed`, and pretraining runs live
under `<workdir>/runs`.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal, Mapping

from uqa_ray.data.prepare import PrepareConfig
from uqa_ray.pretrain.config import PretrainConfig
from uqa_ray.questions.spec import QuestionConfig
from uqa_ray.tune.grid import GridSpec


@dataclasses.dataclass(frozen=True)
class LabConfig:
    experiment: str = ""  # results/<experiment>/, reports/<experiment>/ (default: the script's name)
    workdir: str = "lab"  # every stage output lives under here, keyed by content hash
    # Data: exactly one source. Synthetic by default (the embedded default is `small`).
    synth: str = "small"
    synth_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)  # over the preset's SynthConfig
    raw: str = ""  # a raw click log folder (clicks/*.parquet + items.parquet)
    official: str = ""  # a folder with the official Kaggle Arrow files (already prepared)
    seed: int = 0  # the seed of every stage below that does not set its own
    prepare: PrepareConfig = PrepareConfig()
    tokenizer: str = ""  # HF tokenizer for prepare ("" = train the embedded one on the catalog)
    questions: QuestionConfig = QuestionConfig()
    # Pretraining: `pretrain` applies to every variant, each variant adds its own overrides of it.
    pretrain: PretrainConfig = PretrainConfig()
    variants: tuple[dict[str, Any], ...] = ()
    pretrain_concurrency: int = 1  # variants pretrained at once (each a Ray Train run; Ray places them)
    # Alignment / evaluation as Ray Tune trials (uqa_ray/tune/grid.py): adapters, strategies, lrs, seeds,
    # methods (encoder, random, no_embedding, oracle, text20, text50), align_preset, align, llm, resources
    # per trial, ... The encoders are the variants above (`grid.encoders` stays empty here).
    grid: GridSpec = GridSpec()
    # Analysis.
    x: Literal["params", "seq_len", "none"] = "params"  # the scaling axis fitted and plotted
    scorer: Literal["official", "likelihood"] = "official"
    table: int = 0  # which paper table to render (0 = none)

    @staticmethod
    def derived_defaults(over: Mapping[str, Any]) -> dict[str, Any]:
        """What the lab sets in its stages unless they set it themselves (config.build applies these
        under the overrides): the lab's seed, and pretraining runs under the workdir."""
        seed, work = over.get("seed", 0), over.get("workdir", "lab")
        out: dict[str, Any] = {"prepare": {}, "questions": {}, "pretrain": {}}
        if isinstance(seed, int) and not isinstance(seed, bool):  # else the error names `seed` itself
            out = {"prepare": {"seed": seed}, "questions": {"seed": seed}, "pretrain": {"seed": seed}}
        if isinstance(work, str):
            out["pretrain"]["scaling"] = {"storage": str(Path(work).resolve() / "runs")}
        return out

    def __post_init__(self) -> None:
        if self.pretrain_concurrency < 1:
            raise ValueError(f"pretrain_concurrency must be >= 1, got {self.pretrain_concurrency}")
        sources = [s for s in (self.raw, self.official) if s]
        if len(sources) > 1:
            raise ValueError("give at most one of raw= and official= (synthetic data is the default)")
        if self.grid.encoders:
            raise ValueError("grid.encoders: the lab's encoders are its variants (pretrained by the lab)")
        if not self.variants and {"encoder", "random"} & set(self.grid.methods):
            raise ValueError("grid methods 'encoder'/'random' need encoder variants")
        for i, v in enumerate(self.variants):
            if not isinstance(v, dict):
                raise ValueError(f"variants[{i}] must be a mapping of PretrainConfig overrides")
