"""The study's named choices, one home each, with the label the tables print, in the paper's row order.

Input modes and loss kinds are table 3's rows, strategies table 4's (UQABENCH.md sections 3-4). The
configs that take them validate against these, and analysis/ reads them (this module imports nothing,
so reading a record never imports torch). Encoders and adapters have their own registries
(encoders/registry.py, align/registry.py).
"""
from __future__ import annotations

INPUT_MODES: dict[str, str] = {"full": "Full Info", "no_text": "w/o Text", "no_side": "w/o Side"}
LOSS_KINDS: dict[str, str] = {"ce": "SL (CE)", "sampled": "SL (sampled CE)", "infonce": "CL (InfoNCE)"}
STRATEGIES: dict[str, str] = {"full": "Full FT", "adapter": "Adapter", "lora": "LoRA"}
