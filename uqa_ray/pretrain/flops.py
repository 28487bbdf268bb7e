"""Training FLOPs per position and device peaks, for MFU.

MFU = achieved model FLOP/s / peak FLOP/s (Chowdhery et al., PaLM, appendix B): a forward+backward pass
costs 6 FLOPs per weight per position for the dense matmuls, plus 6 * n_layers * T * d for attention
scores and values (causal attention halves the 12 of the full matrix), plus the full-vocabulary output
layer: 6 * item_dim per item row a position is scored against (every item under the full CE, the shared
negatives and the target under sampled softmax; InfoNCE's in-batch logits are not counted).
Recomputation is not counted.
"""
from __future__ import annotations

import torch

from uqa_ray.encoders.base import count_params

# Dense bf16 tensor-core peaks (FLOP/s) by device name fragment, from the vendors' data sheets (SXM parts).
PEAK_BF16 = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 70e12,
}


def flops_per_position(enc_cfg, loss_cfg=None) -> float:
    """Training FLOPs per position (module doc); `loss_cfg` (a LossConfig; None = the full CE) sets the
    item rows each position is scored against."""
    dense = count_params(enc_cfg)["dense"]
    attention = 6 * enc_cfg.n_layers * enc_cfg.max_len * enc_cfg.d_model if enc_cfg.name != "gru4rec" else 0
    kind = loss_cfg.kind if loss_cfg is not None else "ce"
    rows = {"ce": enc_cfg.vocab["uni_seq_item_id"] - 1, "infonce": 0,
            "sampled": loss_cfg.n_negatives + 1 if kind == "sampled" else 0}[kind]
    head = 6 * (enc_cfg.d_model * enc_cfg.item_dim + enc_cfg.item_dim * rows)
    return float(6 * dense + attention + head)


def peak_flops(device: torch.device) -> float | None:
    """The device's dense bf16 peak, or None where unknown (MFU is then not reported)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peak in PEAK_BF16.items():
        if key in name:
            return peak
    return None
