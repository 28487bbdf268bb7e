"""Benchmark: evaluation throughput, batched vs batch 1, side by side -> bench/results/evaluate.json.

    python bench/evaluate.py                 # tiny synthetic log, built and cached in --work
    python bench/evaluate.py --data DIR      # a prepared folder with generated questions

The system is the embedded default's: the tiny default LM (align/llm.py TinyLMConfig: 2 layers, 128 wide),
an exported `tiny` trm_pp encoder, and the embedded alignment preset (Mean-Pool, 8 soft tokens in the
user turn, content answers). Weights are untrained: throughput does not depend on them. On the same
questions, in the same process, one after the other:
  both      decode.score_prompts: the official greedy token AND every option's log-likelihood from one
            prompt pass (options continue from the prompt's KV cache) - what evaluate/run.py does;
  official  decode.greedy_one_token alone;
  nocache   option likelihood WITHOUT sharing the prompt: one full row per (question, option), as the
            phase-1 option_loglik did - kept here only as the reference for the KV-cache gain;
each at the embedded preset's batch size (16; --batch) and at batch size 1 (the issue's goal: >= 10x),
plus Text20 prompts (1,100+ tokens) for `both` under the preset's token budget per batch. Each timing is
the best of --repeat runs (the machine is shared); soft tokens are computed inside the timed region.
Predictions of batched and batch-1 runs are checked to be identical. One block per torch thread count.
On a CPU batching removes per-call overhead only (BENCHMARKS.md); the 10x goal is a GPU goal.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent


def build_data(work: Path) -> Path:
    """synth (tiny) -> Ray Data prepare -> questions, cached in `work`."""
    data = work / "data"
    if (data / "questions_train.parquet").is_file():
        return data
    from uqa_ray.data.prepare import prepare
    from uqa_ray.questions.render import prompt_text
    from uqa_ray.data.synthetic import generate, preset
    from uqa_ray.questions.generate import generate as questions
    from uqa_ray.questions.spec import QuestionConfig
    from uqa_ray.raysetup import init_ray

    init_ray()
    generate(preset("tiny"), work / "raw", seed=0)
    prepare(work / "raw", data, prompt_text=prompt_text())
    questions(data, QuestionConfig(answer_format="content"))
    return data


def build_system(data: Path, work: Path, device: torch.device = torch.device("cpu")):
    from uqa_ray.align.config import align_config
    from uqa_ray.align.llm import TinyLMConfig, build_tiny_llm
    from uqa_ray.align.steps import build_model
    from uqa_ray.encoders import build_encoder, preset_config, save_encoder
    from uqa_ray.encoders.presets import load_vocab

    enc_dir = work / "encoder"
    if not (enc_dir / "config.json").is_file():
        cfg = preset_config("tiny", load_vocab(data / "meta.json"))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            save_encoder(build_encoder(cfg), cfg, enc_dir)
    llm_dir = build_tiny_llm(data / "tokenizer", work / "llm", TinyLMConfig())
    cfg = align_config("embedded")
    model, tok, enc_cfg = build_model(cfg, enc_dir, llm_dir, device)  # bf16 on a GPU (align/llm.py)
    return model.eval(), tok, enc_cfg, cfg


@torch.no_grad()
def nocache_loglik(llm, tok, chats, options, soft):
    """Reference: every (question, option) pair as its own full row (no shared prompt)."""
    from uqa_ray.align.soft_prompt import IGNORE, build_inputs, llm_kwargs
    from uqa_ray.evaluate.decode import tokenize_options

    opt_ids = tokenize_options(tok, options)
    rows = [c.with_target(t) for c, ids in zip(chats, opt_ids) for t in ids]
    owner = [q for q, ids in enumerate(opt_ids) for _ in ids]
    inputs = build_inputs(rows, soft[owner], llm.get_input_embeddings(), tok.pad_token_id, padding_side="left")
    k = max(len(r.target) for r in rows)
    logits = llm(**llm_kwargs(inputs), logits_to_keep=k + 1).logits[:, :-1].float()
    labels = inputs["labels"][:, -k:]
    logp = F.log_softmax(logits, -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    flat = torch.where(labels != IGNORE, logp, torch.zeros_like(logp)).sum(-1)
    return list(torch.split(flat, [len(i) for i in opt_ids]))


def run_mode(mode, model, tok, data, rows, chats, columns, max_len, batch):
    """One mode over `rows`, batched longest prompt first (as evaluate/run.py does); predictions in row order."""
    from uqa_ray.evaluate.decode import greedy_one_token
    from uqa_ray.evaluate.run import score_split

    def soft_fn(part):
        return model.soft_tokens(data.sequences(part, columns, max_len))

    if mode == "both":  # the real evaluation path
        msgs = data.messages(rows, "content", with_answer=False)
        out = score_split(model.llm, tok, data, rows, msgs, "content", "user_turn", soft_fn, batch, model.n_soft)
        return list(zip(out["predictions"], out["loglik"].argmax(1).tolist()))
    order = sorted(range(len(rows)), key=lambda i: -(len(chats[i].before) + len(chats[i].after)))
    out = [None] * len(rows)
    for s in range(0, len(order), batch):
        idx = order[s:s + batch]
        part = rows[idx].tolist()
        c, soft = [chats[i] for i in idx], soft_fn(part)
        if mode == "official":
            got = greedy_one_token(model.llm, tok, c, soft)[1]
        else:
            got = [int(x.argmax()) for x in nocache_loglik(model.llm, tok, c, data.options(part, "content"), soft)]
        for i, g in zip(idx, got):
            out[i] = g
    return out


def timed(fn, repeat):
    best, result = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def main() -> None:
    from uqa_ray.align.data import QuestionSplit
    from uqa_ray.align.soft_prompt import encode_chat
    from uqa_ray.encoders.config import input_columns
    from uqa_ray.evaluate.baselines import text_k_messages
    from uqa_ray.evaluate.run import score_split
    from uqa_ray.io import write_json

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=None, help="prepared folder with questions (default: build tiny)")
    ap.add_argument("--work", default=str(ROOT / "work" / "evaluate"))
    ap.add_argument("--questions", type=int, default=384)
    ap.add_argument("--text-questions", type=int, default=64, help="questions for the Text20 rows")
    ap.add_argument("--batch", type=int, default=0, help="batch size (0 = the embedded preset's eval_batch_size)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch threads, one block each")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="cuda: the GPU figure of the issue's 10x goal (the data must exist: building it needs Ray)")
    ap.add_argument("--out", default=str(ROOT / "results" / "evaluate.json"))
    args = ap.parse_args()
    work = Path(args.work)
    data_dir = Path(args.data) if args.data else build_data(work)
    device = torch.device(args.device)
    model, tok, enc_cfg, cfg = build_system(data_dir, work, device)
    data = QuestionSplit(data_dir, "train")  # the largest split of the folder; the code is split-agnostic
    rows = np.arange(min(args.questions, len(data)))
    columns, max_len = list(input_columns(enc_cfg.input_mode)), enc_cfg.max_len
    chats = [encode_chat(tok, m, cfg.placement, with_answer=False) for m in data.messages(rows, "content", False)]
    args.batch = args.batch or cfg.eval_batch_size
    trow = rows[: args.text_questions]
    msgs = text_k_messages(data_dir, "train", 20, "content")
    tmsgs = [msgs[r] for r in trow]
    load = os.getloadavg()
    res: dict = {"questions": int(len(rows)), "batch": args.batch, "n_soft": model.n_soft, "device": str(device),
                 "dtype": str(model.llm.dtype),
                 "mean_prompt_tokens": float(np.mean([c.prompt_tokens(model.n_soft) for c in chats])),
                 "by_threads": {}}
    for threads in args.threads:
        torch.set_num_threads(threads)
        block: dict = {}
        for mode in ("both", "official", "nocache"):
            tb, pb = timed(lambda: run_mode(mode, model, tok, data, rows, chats, columns, max_len, args.batch),
                           args.repeat)
            t1, p1 = timed(lambda: run_mode(mode, model, tok, data, rows, chats, columns, max_len, 1), args.repeat)
            block[mode] = {"batched_qps": len(rows) / tb, "batch1_qps": len(rows) / t1, "speedup": t1 / tb,
                           "batched_s": tb, "batch1_s": t1, "same_predictions": pb == p1}
            print(threads, mode, block[mode], flush=True)
        block["kv_cache_gain_batched"] = block["nocache"]["batched_s"] / block["both"]["batched_s"]
        block["kv_cache_gain_batch1"] = block["nocache"]["batch1_s"] / block["both"]["batch1_s"]

        def text_run(batch):  # Text20 prompts (the baseline's long histories), both scorers, no soft tokens
            out = score_split(model.llm, tok, data, trow, tmsgs, "content", "prefix", None, batch,
                              max_batch_tokens=cfg.eval_batch_tokens if batch > 1 else 0)
            return list(zip(out["predictions"], out["loglik"].argmax(1).tolist())), out["prompt_tokens"].mean()

        tb, (pb, ntok) = timed(lambda: text_run(args.batch), args.repeat)
        t1, (p1, _) = timed(lambda: text_run(1), args.repeat)
        block["text20_both"] = {"questions": int(len(trow)), "batch": args.batch,
                                "batch_tokens": cfg.eval_batch_tokens, "batched_qps": len(trow) / tb,
                                "batch1_qps": len(trow) / t1, "speedup": t1 / tb, "same_predictions": pb == p1,
                                "mean_prompt_tokens": float(ntok)}
        print(threads, "text20", block["text20_both"], flush=True)
        res["by_threads"][str(threads)] = block
    res["machine"] = {"cpus": os.cpu_count(), "load_avg_at_start": list(load), "load_avg_at_end": list(os.getloadavg()),
                      "python": platform.python_version(), "torch": torch.__version__,
                      "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                      "llm_params": sum(p.numel() for p in model.llm.parameters())}
    write_json(args.out, res)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
