"""GPU check, not part of the test run (needs CUDA): the evaluation primitives on the GPU, fp32 and bf16.

    python bench/check_cuda.py --out cuda.json

Records, for the tiny LM on CUDA: the default dtype `load_llm` picks; batched vs batch-1 one-token
predictions (agreement) and next-token logits / option log-likelihoods (max |difference|) in fp32 and
bf16; and that an adapter-only step on a bf16 LLM gives a finite loss with gradients on the adapter only.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: tests.align.tiny_lm
from uqa_ray.align.adapters import adapter_config, build_adapter  # noqa: E402
from uqa_ray.align.llm import TinyLMConfig, build_tiny_llm, load_llm  # noqa: E402
from uqa_ray.align.model import lm_loss  # noqa: E402
from uqa_ray.align.soft_prompt import encode_chat  # noqa: E402
from uqa_ray.evaluate.decode import greedy_one_token, next_token_logits, option_loglik  # noqa: E402
from tests.align.tiny_lm import QUESTIONS, TINY, make_tokenizer  # noqa: E402

OPTIONS = [["手机", "耳机", "咖啡 茶叶"], ["A", "B", "C", "D"], ["猫粮 狗粮 帐篷", "运动鞋"], ["title brand shop", "x"]]


def compare(llm, tok, soft) -> dict:
    chats = [encode_chat(tok, q, "user_turn", with_answer=False) for q in QUESTIONS]
    ids, _ = greedy_one_token(llm, tok, chats, soft)
    logits = next_token_logits(llm, tok.pad_token_id, chats, soft)
    scores = option_loglik(llm, tok, chats, OPTIONS, soft)
    agree, dl, ds = 0, 0.0, 0.0
    for b, c in enumerate(chats):
        s1 = soft[b:b + 1]
        agree += int(greedy_one_token(llm, tok, [c], s1)[0][0] == ids[b])
        dl = max(dl, (next_token_logits(llm, tok.pad_token_id, [c], s1)[0] - logits[b]).abs().max().item())
        ds = max(ds, (option_loglik(llm, tok, [c], [OPTIONS[b]], s1)[0] - scores[b]).abs().max().item())
    return {"greedy_agree": f"{agree}/{len(chats)}", "max_logit_diff": dl, "max_loglik_diff": ds}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="cuda.json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp())
    folder = build_tiny_llm(make_tokenizer(work / "tok"), work / "llm", TinyLMConfig(**TINY, init_std=0.2))
    rec: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    llm, tok = load_llm(folder, device="cuda")
    rec["default_dtype"] = str(llm.dtype)
    soft = torch.randn(len(QUESTIONS), 3, llm.config.hidden_size, generator=torch.Generator().manual_seed(0))
    for dtype in (torch.float32, torch.bfloat16):
        llm, tok = load_llm(folder, dtype=dtype, device="cuda")
        rec[str(dtype)] = compare(llm, tok, soft.to("cuda", dtype))
    # adapter-only step on the bf16 LLM (adapter in fp32, its output cast to the LLM dtype)
    llm.requires_grad_(False)
    ad = build_adapter(adapter_config("qformer", {"enc_dim": 16, "llm_dim": llm.config.hidden_size,
                                                  "n_queries": 4, "d_model": 32, "heads": 4}), seed=0).cuda()
    states, mask = torch.randn(len(QUESTIONS), 7, 16, device="cuda"), torch.ones(len(QUESTIONS), 7, dtype=torch.bool,
                                                                                    device="cuda")
    loss = lm_loss(llm, [encode_chat(tok, q) for q in QUESTIONS], ad(states, mask).to(llm.dtype), tok.pad_token_id)
    loss.backward()
    rec["bf16_adapter_step"] = {"loss": loss.item(),
                                "adapter_grads": all(p.grad is not None for p in ad.parameters()),
                                "llm_grads_none": all(p.grad is None for p in llm.parameters())}
    Path(args.out).write_text(json.dumps(rec, indent=2) + "\n")
    print(json.dumps(rec, indent=2))


if __name__ == "__main__":
    main()
