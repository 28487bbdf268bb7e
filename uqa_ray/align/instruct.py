"""Teach the tiny default LM the task before alignment, as instruction tuning teaches an instruct LLM.

Why: the official recipe freezes an INSTRUCT LLM and trains only the adapter (UQABENCH.md section 4),
which works because that LLM already answers multiple-choice questions about text it is given. A random
tiny Qwen2 answers nothing, so it is first fully fine-tuned (no soft tokens, no encoder) on the questions
of TRAIN users with the history written as text, in the Text-k layout of questions/render.py: the history
stands where a `user_turn` soft prompt will later stand (soft_prompt.USER_TURN_LAYOUT). Eval users are
never seen. Each batch draws one history length k (k = 0: the question alone, so the no-embedding
control faces an LM that learnt the question priors, an honest floor).

Two phases, each cached by content hash: short histories (`history_k`), then longer ones from the first
phase's model (`StretchConfig`). The model folder records what it was taught (`uqa_tiny_llm.json`, key
"taught"): config, fingerprint (lm_cache.py), data, steps, losses, wall time and held-out accuracy per k.
Measurements and history: docs/taught_lm.md.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch

import torch.nn.functional as F

from uqa_ray.align.data import QuestionSplit
from uqa_ray.align.llm import TINY_INFO_FILE, TinyLMConfig, build_tiny_llm, load_llm
from uqa_ray.align.lm_cache import SHIPPED_DIR, TEACHING_CODE, teaching_fingerprint
from uqa_ray.align.model import DivergedError, lm_loss
from uqa_ray.align.soft_prompt import IGNORE, EncodedChat, build_inputs, encode_chat, llm_kwargs
from uqa_ray.config import content_hash, source_hash, to_dict
from uqa_ray.data.schema import QUESTIONS_FILES, TOKENIZER_DIR
from uqa_ray.io import InputError, atomic_path
from uqa_ray.stage import Stage


@dataclasses.dataclass(frozen=True)
class StretchConfig:
    """A second teaching phase on LONGER Text-k histories, continuing from the first phase's model.

    Why: taught on short histories the LM reads 50 clicks (~2,750 tokens) at chance, and taught from
    scratch on long ones it learns nothing; so the long histories come second, once reading is learnt
    (docs/taught_lm.md has the figures)."""
    history_k: tuple[int, ...] = (0, 5, 10, 20, 50)
    steps: int = 300  # 0 = no second phase
    lr: float = 1e-3
    warmup: int = 20

    def __post_init__(self) -> None:
        if not self.history_k or min(self.history_k) < 0:
            raise ValueError(f"history_k must be non-empty and >= 0, got {self.history_k}")
        if self.steps < 0 or self.lr <= 0 or self.warmup < 0:
            raise ValueError("need steps >= 0, lr > 0 and warmup >= 0")


@dataclasses.dataclass(frozen=True)
class InstructConfig:
    tiny: TinyLMConfig = TinyLMConfig()
    # Text-k history lengths, one drawn per batch. Short histories keep a step cheap on a CPU (a click
    # renders to ~55 tokens) and the reading they teach carries over to the Text20/Text50 baselines.
    history_k: tuple[int, ...] = (0, 3, 5, 10)
    answer_format: Literal["letter", "content"] = "content"  # content: see align/config.py "embedded"
    label_mode: Literal["official", "answer"] = "answer"
    # Weight of a plain language-modelling loss on the PROMPT tokens (history + question), added to the
    # answer loss. The rendered history repeats each click's names (the category ends the title and
    # follows 品类, the brand starts the title and names the shop), so predicting it rewards copying
    # from context - the circuit that answering from a history needs, which the few answer tokens
    # alone teach slowly. 0 = answer loss only.
    # (what other values gave: docs/taught_lm.md)
    prompt_loss: float = 1.0
    steps: int = 1500
    batch_size: int = 16
    lr: float = 5e-3
    warmup: int = 100  # linear warm-up steps, then cosine decay to lr / 10
    grad_clip: float = 1.0
    max_questions: int = 0  # 0 = every train question
    holdout: int = 200  # train questions kept out of training to measure what was learnt
    eval_batch_size: int = 16
    threads: int = 0  # torch intra-op threads; 0 = leave as is
    seed: int = 0
    stretch: StretchConfig = StretchConfig()  # the second phase (long histories), cached on its own

    def __post_init__(self) -> None:
        if not self.history_k or min(self.history_k) < 0:
            raise ValueError(f"history_k must be non-empty and >= 0, got {self.history_k}")
        for name in ("steps", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.prompt_loss < 0:
            raise ValueError(f"prompt_loss must be >= 0, got {self.prompt_loss}")
        if self.lr <= 0 or self.grad_clip < 0 or self.warmup < 0 or self.holdout < 0 or self.max_questions < 0:
            raise ValueError("need lr > 0 and grad_clip, warmup, holdout, max_questions >= 0")


def _file_fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _phase1_key(cfg: InstructConfig) -> dict:
    """The first phase's cache key: the config without `stretch` (so a first phase taught before the
    stretch phase existed is still found) and without `threads` (speed, not what is learnt)."""
    d = to_dict(dataclasses.replace(cfg, threads=0))
    d.pop("stretch")
    return d


def instruct_dir(data_dir: str | Path, out_dir: str | Path, cfg: InstructConfig = InstructConfig(),
                 phase: int = 2) -> Path:
    """Where `instruct_tiny_llm` puts (or finds) the taught model for this data and config: the first
    phase's folder, or with a stretch phase (and phase=2) the folder of the model it continues into.
    Keyed by `lm_cache.teaching_fingerprint` (catalog, tokenizer, train users, config, code)."""
    data_dir = Path(data_dir)
    qfile = data_dir / QUESTIONS_FILES["train"]
    if not qfile.is_file():
        raise InputError(f"{qfile}: not found (run `uqa-ray questions` first)")
    return _named(Path(out_dir), teaching_fingerprint(data_dir, _phase1_key(cfg)), cfg, phase)


def _named(out_dir: Path, fingerprint: dict, cfg: InstructConfig, phase: int = 2) -> Path:
    first = out_dir / f"instruct-{content_hash(fingerprint)}"
    if phase == 1 or not cfg.stretch.steps:
        return first
    return out_dir / f"instruct-{content_hash(first.name, cfg.stretch)}"


def rekey_taught(folder: str | Path, cfg: InstructConfig, why: str) -> Path:
    """Rename a taught folder to the key the current teaching code gives it, keeping its weights.

    For a change that moves or renames teaching code without changing what it teaches (`why` says which;
    it is recorded in `taught.rekeyed`). Refused unless the folder is named by its own recorded key."""
    folder = Path(folder)
    info = json.loads((folder / TINY_INFO_FILE).read_text())
    taught = info["taught"]
    fp = dict(taught["fingerprint"])
    if _named(folder.parent, fp, cfg) != folder:
        raise InputError(f"{folder}: not named by its recorded fingerprint and this config; only such a folder "
                         "can be re-keyed")
    fp["code"] = source_hash(*TEACHING_CODE)
    new = _named(folder.parent, fp, cfg)
    if new == folder:
        return folder
    taught["fingerprint"] = fp
    if "stretch" in taught:
        taught["stretch"]["from"] = _named(folder.parent, fp, cfg, phase=1).name
    history = taught.get("rekeyed", [])
    taught["rekeyed"] = [*(history if isinstance(history, list) else [history]), {"from": folder.name, "why": why}]
    with atomic_path(new) as tmp:
        shutil.copytree(folder, tmp)
        (tmp / TINY_INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(folder)
    return new


def _lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to lr / 10."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def _text_k(data_dir: Path, k: int, fmt: str) -> list[str]:
    from uqa_ray.questions.render import text_k_prompts

    return text_k_prompts(data_dir, "train", k, fmt) if k > 0 else None


def _holdout_accuracy(llm, tok, split, rows, prompts, cfg) -> float:
    from uqa_ray.evaluate.decode import option_loglik

    hits = 0
    gold = split.gold_index()
    for s in range(0, len(rows), cfg.eval_batch_size):
        part = rows[s:s + cfg.eval_batch_size]
        chats = [encode_chat(tok, _chat(split, r, prompts, cfg, False), "prefix", cfg.label_mode, False)
                 for r in part]
        scores = option_loglik(llm, tok, chats, split.options(part, cfg.answer_format))
        hits += sum(int(sc.argmax()) == int(gold[r]) for sc, r in zip(scores, part))
    return 100.0 * hits / max(1, len(rows))


def _chat(split: QuestionSplit, row: int, prompts: list[str] | None, cfg: InstructConfig, answer: bool):
    msgs = split.messages([row], cfg.answer_format, with_answer=answer)[0]
    if prompts is not None:  # the Text-k prompt (history + blank line + the same question)
        msgs[0] = {"role": "user", "content": prompts[row]}
    return msgs


def _loss(llm, chats, pad_id: int, prompt_weight: float) -> torch.Tensor:
    """Answer loss (soft_prompt labels) + prompt_weight x next-token loss over the prompt tokens."""
    if not prompt_weight:
        return lm_loss(llm, chats, None, pad_id)  # DivergedError on a NaN/inf loss
    # Every real token as a label (the prompt's own ids), then split into answer and prompt positions.
    full = [EncodedChat(c.before, c.after, c.target, c.before + c.after) for c in chats]
    inputs = build_inputs(full, None, llm.get_input_embeddings(), pad_id, padding_side="right")
    labels = inputs["labels"][:, 1:]
    logits = llm(**llm_kwargs(inputs)).logits[:, :-1].float()
    nll = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE, reduction="none")
    pos = torch.arange(1, labels.shape[1] + 1, device=labels.device)[None]
    start = torch.tensor([len(c.before) + len(c.after) for c in chats], device=labels.device)[:, None]
    answer = (pos >= start) & (labels != IGNORE)
    prompt = (pos < start) & (labels != IGNORE)
    loss = nll[answer].mean() + prompt_weight * nll[prompt].mean()
    if not bool(torch.isfinite(loss)):
        raise DivergedError(f"non-finite instruction-tuning loss {loss.item()}")
    return loss


def _teach(llm, tok, split: QuestionSplit, train_rows: np.ndarray, prompts: dict, history_k, steps: int,
           lr: float, warmup: int, cfg: InstructConfig, rng: np.random.Generator, log, tag: str) -> list[float]:
    """Full fine-tuning for `steps` batches, each of one history length drawn from `history_k`."""
    t0 = time.perf_counter()
    llm.train()
    opt = torch.optim.AdamW(llm.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.0)
    losses: list[float] = []
    for step in range(steps):
        k = history_k[int(rng.integers(len(history_k)))]
        batch = train_rows[rng.integers(len(train_rows), size=cfg.batch_size)]
        chats = [encode_chat(tok, _chat(split, int(r), prompts[k], cfg, True), "prefix", cfg.label_mode)
                 for r in batch]
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, steps, lr, warmup)
        loss = _loss(llm, chats, tok.pad_token_id, cfg.prompt_loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(llm.parameters(), cfg.grad_clip)
        opt.step()
        losses.append(loss.item())
        if (step + 1) % 100 == 0:
            log(f"[instruct] {tag} step {step + 1}/{steps} loss {np.mean(losses[-100:]):.4f} "
                f"({time.perf_counter() - t0:.0f}s)")
    llm.eval()
    return losses


def instruct_tiny_llm(data_dir: str | Path, out_dir: str | Path, cfg: InstructConfig = InstructConfig(),
                      log=print) -> Path:
    """Build (once) the tiny default for the data's tokenizer, teach it the task, return its folder.

    Two phases, each cached by content hash: Text-k histories of `history_k` clicks from the base model,
    then (`stretch.steps` > 0) longer ones from the first phase's model. Both see the same TRAIN rows and
    are measured on the same held-out ones."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    stage = _stage(instruct_dir(data_dir, out_dir, cfg))
    folder = stage.folder
    if stage.done():
        return folder  # taught before for the same catalog, users, config and code: reuse
    if _stage(SHIPPED_DIR / folder.name).done():
        with atomic_path(folder) as tmp:
            shutil.copytree(SHIPPED_DIR / folder.name, tmp, dirs_exist_ok=True)
        stage.check()
        log(f"[instruct] using the taught LM shipped with the package: {folder.name} (copied to {out_dir})")
        return folder
    shipped = sorted(p.name for p in SHIPPED_DIR.glob("instruct-*"))
    log(f"[instruct] no taught LM for this data in {out_dir}" + (f" or the package ({', '.join(shipped)} is for "
        "another catalog, user split, config or code)" if shipped else "") + f": teaching {folder.name} "
        f"({cfg.steps} + {cfg.stretch.steps} steps; the time it took for the shipped copy: docs/taught_lm.md)")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    first = _stage(instruct_dir(data_dir, out_dir, cfg, phase=1))
    stretch = cfg.stretch if first.folder != folder else None
    base = build_tiny_llm(data_dir / TOKENIZER_DIR, out_dir, cfg.tiny)
    split = QuestionSplit(data_dir, "train")
    rng = np.random.default_rng([cfg.seed, 17])
    rows = rng.permutation(len(split))
    if cfg.max_questions:
        rows = rows[: cfg.max_questions + cfg.holdout]
    held, train_rows = rows[: cfg.holdout], rows[cfg.holdout:]
    if len(train_rows) < cfg.batch_size:
        raise InputError(f"{data_dir}: {len(train_rows)} train questions cannot fill a batch of {cfg.batch_size}")
    lengths = sorted(set(cfg.history_k) | set(stretch.history_k if stretch else ()))
    t0 = time.perf_counter()
    prompts = {k: _text_k(data_dir, k, cfg.answer_format) for k in lengths}
    render_s = time.perf_counter() - t0
    if first.done():
        llm, tok = load_llm(first.folder, dtype=torch.float32)
        info = json.loads((first.folder / TINY_INFO_FILE).read_text())
        log(f"[instruct] first phase reused: {first.folder.name}")
    else:
        llm, tok = load_llm(base, dtype=torch.float32)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            t1 = time.perf_counter()
            losses = _teach(llm, tok, split, train_rows, prompts, cfg.history_k, cfg.steps, cfg.lr, cfg.warmup,
                            cfg, rng, log, "phase 1")
            train_s = time.perf_counter() - t1
        accuracy = {_acc_key(k): _holdout_accuracy(llm, tok, split, held, prompts[k], cfg)
                    for k in sorted(set(cfg.history_k))}
        taught = {
            "what": "multiple-choice questions of TRAIN users with the history as text (Text-k layout of "
                    "questions/render.py), full fine-tuning, no soft tokens; answers scored by option likelihood",
            "config": _phase1_key(cfg), "data_dir": str(data_dir),
            "fingerprint": teaching_fingerprint(data_dir, _phase1_key(cfg)),
            "questions_file": QUESTIONS_FILES["train"],
            "questions_fingerprint": _file_fingerprint(data_dir / QUESTIONS_FILES["train"]),
            "train_questions": int(len(train_rows)), "holdout_questions": int(len(held)),
            "steps": cfg.steps, "loss_first100": float(np.mean(losses[:100])),
            "loss_last100": float(np.mean(losses[-100:])), "render_s": render_s, "train_s": train_s,
            "holdout_likelihood_accuracy": accuracy,
            "chance": 100.0 / max(1, len(split.options([0], cfg.answer_format)[0])),
            "base_model": base.name,
        }
        info = json.loads((base / TINY_INFO_FILE).read_text())
        info["taught"] = taught
        _save(first.folder, llm, tok, info)
        first.check()
        log(f"[instruct] taught {first.folder.name} in {train_s:.0f}s: held-out accuracy {accuracy}")
    if stretch is None:
        return first.folder
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + 1)
        t1 = time.perf_counter()
        losses = _teach(llm, tok, split, train_rows, prompts, stretch.history_k, stretch.steps, stretch.lr,
                        stretch.warmup, cfg, np.random.default_rng([cfg.seed, 18]), log, "stretch")
        train_s = time.perf_counter() - t1
    accuracy = {_acc_key(k): _holdout_accuracy(llm, tok, split, held, prompts[k], cfg) for k in lengths}
    info["taught"]["stretch"] = {
        "what": "a second phase on longer Text-k histories, from the first phase's model",
        "config": to_dict(stretch), "from": first.folder.name, "steps": stretch.steps,
        "loss_first100": float(np.mean(losses[:100])), "loss_last100": float(np.mean(losses[-100:])),
        "train_s": train_s, "holdout_likelihood_accuracy": accuracy,
    }
    _save(folder, llm, tok, info)
    stage.check()
    log(f"[instruct] stretched {first.folder.name} -> {folder.name} in {train_s:.0f}s: held-out accuracy {accuracy}")
    return folder


def _stage(folder: Path) -> Stage:
    """A taught LM's folder as a `Stage`: complete when its info file is there (`_save` writes the folder
    atomically, the info file with it)."""
    return Stage("[instruct]", folder, (TINY_INFO_FILE,))


def _acc_key(k: int) -> str:
    return f"text{k}" if k else "no_history"


def _save(folder: Path, llm, tok, info: dict) -> None:
    with atomic_path(folder) as tmp:
        llm.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / TINY_INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
