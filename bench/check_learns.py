"""Quick check, not part of the test run: can the tiny LM, frozen, be steered by an adapter-only soft prompt?

    python bench/check_learns.py [--device cuda] [--steps-lm 600 --steps-ad 400] [--out JSON]

Self-contained miniature of the issue-5 pipeline on planted data (no Ray): users click 20 items from 40
one-word categories, a planted favourite takes 40% of the clicks; the question asks for the favourite
among 4 options, answered by CONTENT and scored by option likelihood (the embedded default's protocol).
 1. instruction-tune the tiny Qwen2 (full fine-tuning, no soft tokens) on Text-20 prompts;
 2. freeze it; align a frozen, randomly initialised real encoder (trm_pp), adapter only, per variant:
    Mean-Pool with 8 order-preserving tokens in the user turn, the official 1-token prefix, Q-Former 16;
 3. evaluate on held-out users: Text-20, soft prompt, and the no-embedding and random-norm controls.
Writes one JSON record with accuracies, chance level, steps and wall times.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from uqa_ray.align.adapters import adapter_config, build_adapter
from uqa_ray.align.llm import TinyLMConfig, build_tiny_llm, load_llm
from uqa_ray.align.model import AlignedModel, lm_loss
from uqa_ray.align.soft_prompt import encode_chat
from uqa_ray.data.collate import collate
from uqa_ray.data.schema import ID_COLUMNS, PRETRAIN_SCHEMA, SEQ_COLUMNS
from uqa_ray.data.tokenizer import train_tokenizer
from uqa_ray.encoders import EncoderConfig, build_encoder
from uqa_ray.evaluate.controls import random_like
from uqa_ray.evaluate.decode import option_loglik

CATS = ("手机 耳机 连衣裙 运动鞋 口红 电脑 咖啡 茶叶 猫粮 狗粮 帐篷 键盘 鼠标 台灯 衬衫 裤子 帽子 围巾 手表 眼镜 "
        "背包 钱包 香水 面膜 牙刷 毛巾 枕头 被子 水杯 雨伞 玩具 积木 画笔 书包 篮球 足球 跑鞋 泳衣 相机 音箱").split()
QUESTION = "Which category is this user most interested in? Options: {opts}"
N_CLICKS, N_OPTS = 20, 4


def make_users(n: int, rng: np.random.Generator) -> list[dict]:
    users = []
    for _ in range(n):
        fav = int(rng.integers(len(CATS)))
        cats = [fav if rng.random() < 0.4 else int(rng.integers(len(CATS))) for _ in range(N_CLICKS)]
        others = rng.choice([c for c in range(len(CATS)) if c != fav], N_OPTS - 1, replace=False)
        opts = [fav, *map(int, others)]
        rng.shuffle(opts)
        users.append({"cats": cats, "fav": fav, "options": [CATS[o] for o in opts], "gold": opts.index(fav)})
    return users


def chat(u: dict, history: bool, answer: bool = True) -> list[dict[str, str]]:
    q = QUESTION.format(opts=" ".join(u["options"]))
    if history:  # the Text-k layout of questions/render.py: history, a blank line, the question
        q = f"The user's last {N_CLICKS} clicks (oldest first):\n" + "\n".join(
            f"{i}. {CATS[c]}" for i, c in enumerate(u["cats"], 1)) + "\n\n" + q
    msgs = [{"role": "user", "content": q}]
    return msgs + [{"role": "assistant", "content": CATS[u["fav"]]}] if answer else msgs


def seq_batch(users: list[dict], tok) -> dict[str, torch.Tensor]:
    name_ids = [tok.encode(c, add_special_tokens=False) for c in CATS]
    rows = [{c: [[cat * 10 + j % 10 + 1] if c == "uni_seq_item_id" else [cat + 1] if c == "uni_seq_cate_id"
                 else [1] if c in ID_COLUMNS else name_ids[cat] for j, cat in enumerate(u["cats"])]
             for c in SEQ_COLUMNS} for u in users]
    return collate(pa.Table.from_pylist(rows, schema=PRETRAIN_SCHEMA), max_len=N_CLICKS)


def accuracy(llm, tok, users, placement, history, soft_fn=None, bs=50) -> float:
    hits = 0
    for i in range(0, len(users), bs):
        part = users[i:i + bs]
        chats = [encode_chat(tok, chat(u, history, False), placement, with_answer=False) for u in part]
        soft = soft_fn(part, i) if soft_fn else None
        scores = option_loglik(llm, tok, chats, [u["options"] for u in part], soft)
        hits += sum(int(s.argmax()) == u["gold"] for s, u in zip(scores, part))
    return 100.0 * hits / len(users)


VARIANTS = {  # name -> (adapter, adapter overrides, placement)
    "meanpool8_user_turn": ("mean_pool", {"n_tokens": 8}, "user_turn"),
    "meanpool1_prefix_official": ("mean_pool", {"n_tokens": 1}, "prefix"),
    "qformer16_prefix": ("qformer", {"n_queries": 16, "d_model": 128, "heads": 4}, "prefix"),
}


def align(llm, tok, train, test, variant, args, rng, device) -> dict:
    name, over, placement = VARIANTS[variant]
    vocab = {c: 2 for c in ID_COLUMNS} | {"uni_seq_item_id": 10 * len(CATS) + 11,
                                          "uni_seq_cate_id": len(CATS) + 1, "bpe": len(tok)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)  # the same frozen random encoder for every variant
        enc = build_encoder(EncoderConfig(name="trm_pp", d_model=64, n_layers=2, n_heads=4, max_len=N_CLICKS,
                                          vocab=vocab, item_dim=32, side_dim=16))
    ad = build_adapter(adapter_config(name, {"enc_dim": 64, "llm_dim": llm.config.hidden_size, **over}),
                       seed=args.seed)
    model = AlignedModel(enc.to(device), ad.to(device), llm, "adapter", pad_id=tok.pad_token_id).train()
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=args.lr_ad, betas=(0.9, 0.98))
    real = lambda part, i: model.soft_tokens(seq_batch(part, tok))  # noqa: E731
    rand = lambda part, i: random_like(real(part, i), list(range(i, i + len(part))), seed=1)  # noqa: E731
    rec: dict = {"adapter": name, **over, "placement": placement, "curve": []}
    t0 = time.time()
    for step in range(1, args.steps_ad + 1):
        batch = [train[j] for j in rng.integers(len(train), size=args.batch)]
        loss = model({"seq": seq_batch(batch, tok),
                      "chats": [encode_chat(tok, chat(u, False), placement, "answer") for u in batch]})
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), 1.5)  # the official clip
        opt.step()
        if step % args.eval_every == 0 or step == args.steps_ad:
            model.eval()
            with torch.no_grad():
                rec["curve"].append({"step": step, "s": round(time.time() - t0, 1), "loss": round(loss.item(), 4),
                                     "acc": accuracy(llm, tok, test, placement, False, real)})
            model.train()
            print(variant, rec["curve"][-1], flush=True)
    model.eval()
    with torch.no_grad():
        rec |= {"soft_acc": rec["curve"][-1]["acc"],
                "random_control_acc": accuracy(llm, tok, test, placement, False, rand)}
    return rec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results/align_learns.json")
    ap.add_argument("--work", default="/tmp/uqa_align_learns")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps-lm", type=int, default=600)
    ap.add_argument("--steps-ad", type=int, default=400)
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr-lm", type=float, default=2e-3)
    ap.add_argument("--lr-ad", type=float, default=3e-3)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    device = torch.device(args.device)
    work = Path(args.work)
    corpus = [" ".join(CATS), QUESTION, chat(make_users(1, rng)[0], True)[0]["content"]] * 50
    train_tokenizer(corpus, 600, work / "tok")
    llm, tok = load_llm(build_tiny_llm(work / "tok", work / "llm", TinyLMConfig()), torch.float32, device)
    train, test = make_users(3000, rng), make_users(300, rng)
    rec: dict = {"device": str(device), "torch": torch.__version__, "chance": 100.0 / N_OPTS,
                 "llm_params": sum(p.numel() for p in llm.parameters()), "args": vars(args)}

    # 1. Teach the LM the task from text (full fine-tuning, no soft tokens).
    t0 = time.time()
    llm.train()
    opt = torch.optim.AdamW(llm.parameters(), lr=args.lr_lm)
    for _ in range(args.steps_lm):
        batch = [train[j] for j in rng.integers(len(train), size=args.batch)]
        loss = lm_loss(llm, [encode_chat(tok, chat(u, True), "prefix", "answer") for u in batch], None, 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    llm.eval()
    rec |= {"lm_steps": args.steps_lm, "lm_train_s": round(time.time() - t0, 1), "lm_final_loss": loss.item(),
            "text20_acc": accuracy(llm, tok, test, "prefix", True),
            "no_embedding_acc": accuracy(llm, tok, test, "prefix", False)}
    print(rec, flush=True)

    # 2. Freeze it; adapter-only alignment of a frozen random encoder, per variant.
    rec["variants"] = {}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    for v in args.variants.split(","):  # the record is rewritten after each variant: a cut run keeps some
        rec["variants"][v] = align(llm, tok, train, test, v, args, rng, device)
        Path(args.out).write_text(json.dumps(rec, indent=2) + "\n")
    print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
