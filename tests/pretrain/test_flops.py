"""Training FLOPs per position (pretrain/flops.py): the head counts the item rows each position is scored
against, so a sampled-softmax run's MFU is not credited with the full softmax it never computes."""
from __future__ import annotations

from uqa_ray.encoders import OFFICIAL_VOCAB, count_params, preset_config
from uqa_ray.pretrain.flops import flops_per_position
from uqa_ray.pretrain.losses import LossConfig


def test_head_flops_follow_the_loss():
    cfg = preset_config("trm_pp-official", OFFICIAL_VOCAB, max_len=512)
    body = 6 * count_params(cfg)["dense"] + 6 * cfg.n_layers * 512 * cfg.d_model + 6 * cfg.d_model * cfg.item_dim
    items = OFFICIAL_VOCAB["uni_seq_item_id"] - 1
    assert flops_per_position(cfg) == flops_per_position(cfg, LossConfig()) == body + 6 * cfg.item_dim * items
    assert flops_per_position(cfg, LossConfig(kind="sampled", n_negatives=1024)) == body + 6 * cfg.item_dim * 1025
    assert flops_per_position(cfg, LossConfig(kind="infonce")) == body
