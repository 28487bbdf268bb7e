"""What a question set is: the seven sub-tasks, their groups, and the generator's frozen config.

Default counts per sub-task (eval set, 7,192 questions, UQABENCH.md section 2). The paper gives only the
total, but table 2 pins the split down, because groups and "overall" are MICRO averages of the sub-task
accuracies (section 5):
  * every MF score in table 2 is a multiple of 1/128 (27.34 = 35/128, 18.75 = 24/128, ...): MF = 128;
  * every IP score is a multiple of 1/1165 and the IP/AP weight in the group average is 0.444: IP = 1165;
  * the remaining weights, solved from the group and overall averages of all seven rows of table 2 with
    the total fixed at 7,192, give DF 1501-1511, AP 1453-1462, LI 791-800, SI 1371-1374, IT 761-772
    (every row reproduced to within the table's rounding); we take DF 1503, AP 1461, LI 796, SI 1372,
    IT 767, which reproduce all 7 rows x 4 averages to within 0.005 points.
The alignment (train) set has no published size: by default it asks the same number of questions per
user as the eval set, in the same proportions (`train_counts=None`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

SUBTASKS = ("DF", "MF", "IP", "AP", "LI", "SI", "IT")  # also the official routing order
GROUPS = ("sequence_understanding", "action_prediction", "interest_perception")
GROUP_OF = {
    "DF": "sequence_understanding", "MF": "sequence_understanding",
    "IP": "action_prediction", "AP": "action_prediction",
    "LI": "interest_perception", "SI": "interest_perception", "IT": "interest_perception",
}
SPLITS = ("train", "eval")
# Option labels: single capital letters, each one token in the Qwen/GPT-style BPE vocabularies.
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class Counts:
    """Questions per sub-task. Defaults: the paper's eval split inferred from table 2 (module doc)."""

    DF: int = 1503
    MF: int = 128
    IP: int = 1165
    AP: int = 1461
    LI: int = 796
    SI: int = 1372
    IT: int = 767

    def __post_init__(self):
        for name in SUBTASKS:
            if getattr(self, name) < 0:
                raise ValueError(f"count {name} must be >= 0, got {getattr(self, name)}")

    def as_dict(self) -> dict[str, int]:
        return {s: int(getattr(self, s)) for s in SUBTASKS}

    @property
    def total(self) -> int:
        return sum(self.as_dict().values())

    def scaled(self, factor: float) -> "Counts":
        """Counts x factor, rounded by largest remainder so the total is round(total x factor)."""
        want = round(self.total * factor)
        raw = {s: c * factor for s, c in self.as_dict().items()}
        out = {s: int(v) for s, v in raw.items()}
        order = sorted(SUBTASKS, key=lambda s: (-(raw[s] - out[s]), SUBTASKS.index(s)))
        for s in order[: max(0, want - sum(out.values()))]:
            out[s] += 1
        return Counts(**out)


@dataclass(frozen=True)
class QuestionConfig:
    eval_counts: Counts = Counts()
    # None: the eval counts x (train users / eval users), i.e. the same questions per user and proportions.
    train_counts: Counts | None = None
    n_options: int = 4
    answer_format: Literal["letter", "content"] = "letter"  # letter = the official release's format
    lang: Literal["zh", "en"] = "zh"
    # The encoder input is the last `max_seq_len` clicks (official max length 512); every question is
    # about that stored sequence, so its answer is recoverable from the encoder's input.
    max_seq_len: int = 512
    df_max_k: int = 10  # DF asks about click k with 1 <= k <= df_max_k (paper: "k is less than N")
    df_last_k: tuple[int, ...] = (2, 3)  # DF "the last k clicks, in order" sizes
    si_window: int = 20  # SI: "recent" = the last si_window clicks (= the synthetic log's `recent`)
    it_phases: int = 3  # IT: the history is cut into this many equal windows -> path A -> B -> C
    it_min_window: int = 5  # IT: each window must hold at least this many clicks
    min_len: int = 5  # users with fewer clicks (after the held-out click for IP/AP) ask nothing
    max_per_user: int = 1  # questions per user per sub-task (extra passes over the users if > 1)
    popular_pool: int = 100  # distractors: draw from the this-many most clicked values/items
    seed: int = 0

    def __post_init__(self):
        if not 2 <= self.n_options <= len(LETTERS):
            raise ValueError(f"n_options must be in [2, {len(LETTERS)}], got {self.n_options}")
        if self.max_seq_len < 2 or self.min_len < 2 or self.min_len > self.max_seq_len:
            raise ValueError("need 2 <= min_len <= max_seq_len")
        if self.df_max_k < 1 or not self.df_last_k or min(self.df_last_k) < 2:
            raise ValueError("need df_max_k >= 1 and df_last_k sizes >= 2")
        if self.si_window < 2 or self.it_phases < 2 or self.it_min_window < 1:
            raise ValueError("need si_window >= 2, it_phases >= 2, it_min_window >= 1")
        if self.max_per_user < 1 or self.popular_pool < self.n_options:
            raise ValueError("need max_per_user >= 1 and popular_pool >= n_options")


def with_counts(cfg: QuestionConfig, **counts: int) -> QuestionConfig:
    """Same config, both splits set to the same explicit counts (tests, small runs)."""
    c = Counts(**{s: counts.get(s, 0) for s in SUBTASKS})
    return dataclasses.replace(cfg, eval_counts=c, train_counts=c)
