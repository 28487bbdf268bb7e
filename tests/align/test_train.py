"""Alignment training on the tiny synthetic log: instruct the tiny LM, align, save/load, diverge, evaluate."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from tests.tune.pipeline import instruct_config, pipeline
from uqa_ray.align.config import align_config
from uqa_ray.align.data import QuestionSplit
from uqa_ray.align.instruct import instruct_tiny_llm
from uqa_ray.align.llm import TINY_INFO_FILE
from uqa_ray.align.model import lm_loss
from uqa_ray.align.soft_prompt import IGNORE, build_inputs, encode_chat, llm_kwargs
from uqa_ray.align.steps import load_aligned
from uqa_ray.align.train import train_alignment
from uqa_ray.config import ConfigError
from uqa_ray.encoders.config import input_columns
from uqa_ray.evaluate.run import evaluate


@pytest.fixture(scope="module")
def pipe(tiny_data, tmp_path_factory):
    return pipeline(tiny_data, tmp_path_factory.getbasetemp())


def _cfg(**over):
    return align_config("embedded", {"max_steps": 6, "batch_size": 4, "log_every": 2, "eval_batch_size": 16}, over)


@pytest.fixture(scope="module")
def aligned(pipe, tmp_path_factory):
    out = tmp_path_factory.mktemp("aligned") / "a"
    progress = []
    summary = train_alignment(_cfg(), pipe["data"], pipe["enc0"], pipe["llm"], out, report=progress.append)
    return out, summary, progress


def test_instruct_records_what_it_taught_and_is_cached(pipe):
    folder = pipe["llm"]
    taught = json.loads((folder / TINY_INFO_FILE).read_text())["taught"]
    assert taught["steps"] == 4 and taught["train_questions"] > 0 and taught["holdout_questions"] == 4
    assert set(taught["holdout_likelihood_accuracy"]) == {"no_history", "text5"}
    assert "TRAIN users" in taught["what"] and taught["config"]["history_k"] == [0, 5]
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert instruct_tiny_llm(pipe["data"], pipe["root"] / "llm", instruct_config(threads=1)) == folder  # reused
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    other = instruct_tiny_llm(pipe["data"], pipe["root"] / "llm", instruct_config(steps=2), log=lambda *_: None)
    assert other != folder  # another config is another model
    base = load_file(str(other.parent / json.loads((folder / TINY_INFO_FILE).read_text())["taught"]["base_model"]
                         / "model.safetensors"))
    taught_w = load_file(str(folder / "model.safetensors"))
    assert any(not torch.equal(base[k], taught_w[k]) for k in base)  # it did train


def test_stretch_phase_continues_from_the_cached_first_phase(pipe):
    first = pipe["llm"]  # taught by instruct_config() with stretch.steps 0
    cfg = instruct_config(stretch={"steps": 2, "history_k": [10], "warmup": 1})
    said = []
    folder = instruct_tiny_llm(pipe["data"], pipe["root"] / "llm", cfg, log=said.append)
    assert folder != first and any("first phase reused" in m for m in said)  # phase 1 not taught again
    info = json.loads((folder / TINY_INFO_FILE).read_text())["taught"]
    assert info["stretch"]["from"] == first.name and info["stretch"]["steps"] == 2
    assert set(info["stretch"]["holdout_likelihood_accuracy"]) == {"no_history", "text5", "text10"}
    assert info["holdout_likelihood_accuracy"] == json.loads((first / TINY_INFO_FILE).read_text())["taught"][
        "holdout_likelihood_accuracy"]  # the first phase's record is kept as it was
    w0, w1 = load_file(str(first / "model.safetensors")), load_file(str(folder / "model.safetensors"))
    assert any(not torch.equal(w0[k], w1[k]) for k in w0)  # the stretch phase trained
    assert instruct_tiny_llm(pipe["data"], pipe["root"] / "llm", cfg, log=said.append) == folder  # cached


def test_lm_loss_on_kept_columns_equals_full_logits(pipe):
    from uqa_ray.align.llm import load_llm

    llm, tok = load_llm(pipe["llm"], device="cpu")
    split = QuestionSplit(pipe["data"], "train")
    for label_mode in ("official", "answer"):
        chats = [encode_chat(tok, m, "prefix", label_mode) for m in split.messages([0, 5, 9], "content")]
        soft = torch.randn(3, 2, llm.config.hidden_size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            got = lm_loss(llm, chats, soft, tok.pad_token_id)
            inputs = build_inputs(chats, soft, llm.get_input_embeddings(), tok.pad_token_id, "right")
            logits = llm(**llm_kwargs(inputs)).logits[:, :-1]
            ref = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), inputs["labels"][:, 1:].reshape(-1),
                                  ignore_index=IGNORE)
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_train_saves_a_loadable_adapter_and_leaves_the_llm_alone(pipe, aligned):
    out, summary, progress = aligned
    assert summary["status"] == "ok" and summary["steps"] == 6 and summary["reason"] is None
    assert [p["step"] for p in progress] == [2, 4, 6] and all(p["loss"] > 0 for p in progress)
    assert summary["n_soft"] == 8 and (out / "adapter" / "model.safetensors").is_file()
    assert not (out / "lora").exists() and not (out / "llm").exists()
    assert json.loads((out / "train.json").read_text())["steps"] == 6
    model, tok, enc_cfg = load_aligned(out, pipe["enc0"], pipe["llm"], torch.device("cpu"))
    # adapter-only: the LLM the aligned system uses is bit-for-bit the taught LLM on disk
    disk = load_file(str(pipe["llm"] / "model.safetensors"))
    state = model.llm.state_dict()
    assert all(torch.equal(state[k], v) for k, v in disk.items())
    # a rerun with the same seed gives the same adapter (CPU determinism)
    again = train_alignment(_cfg(), pipe["data"], pipe["enc0"], pipe["llm"], out.parent / "b")
    assert again["loss_last"] == summary["loss_last"]
    w1, w2 = (load_file(str(d / "adapter" / "model.safetensors")) for d in (out, out.parent / "b"))
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


def test_nan_loss_is_diverged_with_its_step_and_saves_no_weights(pipe, tmp_path, monkeypatch):
    monkeypatch.setenv("UQA_RAY_FAULTS", '{"nan_at_step": 3}')  # uqa_ray/faults.py
    summary = train_alignment(_cfg(), pipe["data"], pipe["enc0"], pipe["llm"], tmp_path / "d")
    assert summary["status"] == "diverged" and summary["steps"] == 3
    assert summary["reason"].startswith("step 3: non-finite training loss")
    assert not (tmp_path / "d" / "adapter").exists()
    assert json.loads((tmp_path / "d" / "train.json").read_text())["status"] == "diverged"
    with pytest.raises(ValueError, match="diverged"):
        load_aligned(tmp_path / "d", pipe["enc0"], pipe["llm"])


@pytest.mark.parametrize("strategy,saved", [("lora", "lora"), ("full", "llm")])
def test_lora_and_full_save_what_they_train_and_reload_exactly(pipe, tmp_path, strategy, saved):
    cfg = _cfg(strategy=strategy, max_steps=2, adapter="qformer", llm_lr=1e-3,
               adapter_overrides={"qformer": {"d_model": 16, "heads": 2, "n_queries": 4, "layers": 1}})
    summary = train_alignment(cfg, pipe["data"], pipe["enc0"], pipe["llm"], tmp_path / strategy)
    assert summary["status"] == "ok" and (tmp_path / strategy / saved).is_dir()
    model, tok, enc_cfg = load_aligned(tmp_path / strategy, pipe["enc0"], pipe["llm"], torch.device("cpu"))
    assert model.n_soft == 4
    split = QuestionSplit(pipe["data"], "eval")
    seq = split.sequences([0, 1], list(input_columns(enc_cfg.input_mode)), enc_cfg.max_len)
    chats = [encode_chat(tok, m, "user_turn", "answer") for m in split.messages([0, 1], "content")]
    with torch.no_grad():
        loss = model({"seq": seq, "chats": chats})
    base, _, _ = load_aligned(tmp_path / strategy, pipe["enc0"], pipe["llm"], torch.device("cpu"))
    with torch.no_grad():
        assert float(base({"seq": seq, "chats": chats})) == float(loss)  # a reload is exact
        # ...and the trained LLM part differs from the taught LLM (it was trained and saved)
        from uqa_ray.align.llm import load_llm

        plain, _ = load_llm(pipe["llm"], device="cpu")
        soft = model.soft_tokens(seq)
        assert float(lm_loss(plain, chats, soft, tok.pad_token_id)) != float(loss)


def test_bad_config_names_the_key():
    with pytest.raises(ConfigError, match="adapter_overrides.mean_pool"):
        align_config("embedded", {"adapter_overrides": {"mean_pool": {"n_tok": 2}}})
    with pytest.raises(ConfigError, match="strategy"):
        align_config("official", {"strategy": "prefix"})
    with pytest.raises(ValueError, match="unknown alignment preset"):
        align_config("nope")


def test_train_then_evaluate_end_to_end(pipe, aligned):
    out, _, _ = aligned
    res = evaluate("encoder", pipe["data"], pipe["llm"], answer_format="content", placement="user_turn",
                   aligned_dir=out, encoder_dir=pipe["enc0"], batch_size=16, n_boot=200)
    n = len(QuestionSplit(pipe["data"], "eval"))
    for scorer in ("official", "likelihood"):
        block = res["scores"][scorer]
        assert block["overall"]["n"] == n and len(block["subtasks"]) == 7
        lo, hi = block["overall"]["ci95"]
        assert lo <= block["overall"]["acc"] <= hi
    assert res["n_soft"] == 8 and res["prompt_tokens"] > 8
