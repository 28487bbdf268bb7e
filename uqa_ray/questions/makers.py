"""One multiple-choice question per (user, sub-task): ground truth (truth.py) + plausible distractors.

Distractors are of the answer's own kind (paper section 3.5.2 "we provide candidates"): for attribute
answers, other values from the user's own history and globally popular values, alternating; for IP,
titles of items from the user's own categories and popular items; for ranked lists and paths
(LI, IT, DF last-k), re-orderings of the gold answer and copies with one value swapped. No two
options share a text. A question that cannot be filled with n_options distinct options is dropped.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from uqa_ray.questions import truth
from uqa_ray.questions.source import Catalog, Sequences
from uqa_ray.questions.spec import QuestionConfig
from uqa_ray.questions.templates import PATH_SEP, RANK_SEP, TEMPLATES, TEMPLATES_OF, stem


@dataclass
class Core:
    """A question before its options are ordered: the gold text and n_options - 1 distractor texts."""

    subtask: str
    template: str
    attr: str
    param: int  # k (DF, LI), the SI window, the IT phase count; 0 otherwise
    value: str  # the MF target value's text; "" otherwise
    stem: str
    gold: str
    distractors: list[str]
    src_row: int  # row in pretrain_data_{split}.arrow
    start: int  # the encoder's input = the user's clicks [start, end)
    end: int


@dataclass
class Context:
    cfg: QuestionConfig
    catalog: Catalog
    seqs: Sequences


def _draw(rng: np.random.Generator, gold: set[int], pools: list[np.ndarray], n: int) -> list[int] | None:
    """n distinct keys, alternating between the (shuffled) pools, never a gold key or key 0."""
    pools = [rng.permutation(p) for p in pools if len(p)]
    if not pools:
        return None
    idx, out, seen = [0] * len(pools), [], set(gold) | {0}
    turn = int(rng.integers(len(pools)))
    while len(out) < n and any(i < len(p) for i, p in zip(idx, pools)):
        j = turn % len(pools)
        turn += 1
        while idx[j] < len(pools[j]):
            k = int(pools[j][idx[j]])
            idx[j] += 1
            if k not in seen:
                seen.add(k)
                out.append(k)
                break
    return out if len(out) == n else None


def _tuple_options(rng, gold: tuple[int, ...], pool: np.ndarray, n: int, unique: bool) -> list[tuple] | None:
    """n distinct tuples != gold: re-orderings of gold and gold with one position swapped from `pool`."""
    perms = [p for p in itertools.islice(itertools.permutations(gold), 24) if p != gold]
    perms = [perms[i] for i in rng.permutation(len(perms))]
    subs = []
    cand = pool[~np.isin(pool, gold)] if unique else pool
    if len(cand):
        where = rng.integers(len(gold), size=3 * n).tolist()
        for i, v in zip(where, cand[rng.integers(len(cand), size=3 * n)].tolist()):
            t = list(gold)
            t[i] = v
            subs.append(tuple(t))
    out, seen = [], {gold}
    for t in itertools.chain.from_iterable(itertools.zip_longest(subs, perms)):
        if t is not None and t not in seen:
            seen.add(t)
            out.append(t)
    out = out[:n]
    return out if len(out) == n else None


_PAIRS = {s: [(t, a) for t in ts for a in TEMPLATES[t][1]] for s, ts in TEMPLATES_OF.items()}


class Maker:
    """Builds a Core for one user and sub-task, or None when the filters drop it."""

    def __init__(self, ctx: Context):
        self.cfg, self.cat, self.seqs = ctx.cfg, ctx.catalog, ctx.seqs
        self.lang = ctx.cfg.lang
        self.n = ctx.cfg.n_options - 1

    # -- shared pieces -------------------------------------------------------------------------------
    def _span(self, row: int, holdout: bool) -> tuple[int, int] | None:
        end = int(self.seqs.offsets[row + 1] - self.seqs.offsets[row]) - (1 if holdout else 0)
        start = max(0, end - self.cfg.max_seq_len)
        return (start, end) if end - start >= self.cfg.min_len else None

    def _vals(self, attr: str, items: np.ndarray) -> np.ndarray:
        return self.cat.attrs[attr].key_of_item[items]

    def _text(self, attr: str, key: int) -> str:
        return self.cat.attrs[attr].text[key]

    def _pick(self, rng, subtask: str) -> tuple[str, str]:
        """A (template, attribute) pair, uniformly: MF asks about counts of 4 attributes and the
        length once, so the length question is 1 in 5 MF questions, not 1 in 2."""
        pairs = _PAIRS[subtask]
        return pairs[int(rng.integers(len(pairs)))]

    def _single(self, rng, attr, gold_key, history, row, span, template, param=0, **kw) -> Core | None:
        if gold_key is None:
            return None
        keys = _draw(rng, {gold_key}, [np.unique(history), self.cat.attrs[attr].popular], self.n)
        if keys is None:
            return None
        return self._core(template, attr, param, "", self._text(attr, gold_key),
                          [self._text(attr, k) for k in keys], row, span, **kw)

    def _tuple(self, rng, attr, gold, history, row, span, template, param, sep, unique, **kw):
        if gold is None:
            return None
        hist = np.unique(history[history != 0])
        pool = np.concatenate([hist, self.cat.attrs[attr].popular[: len(hist) + self.n]])
        opts = _tuple_options(rng, gold, pool, self.n, unique)
        if opts is None:
            return None
        text = lambda t: sep.join(self._text(attr, k) for k in t)
        return self._core(template, attr, param, "", text(gold), [text(t) for t in opts], row, span, **kw)

    def _core(self, template, attr, param, target, gold, distractors, row, span, **kw) -> Core | None:
        s = stem(template, self.lang, attr, **kw)
        if gold in (s.replace(target, "") if target else s):
            return None  # trivial: the answer is written in the question itself (the MF value aside)
        if len(set(distractors) | {gold}) != len(distractors) + 1:
            return None
        return Core(TEMPLATES[template][0], template, attr, int(param), target, s, gold, distractors,
                    row, span[0], span[1])

    # -- the seven sub-tasks ---------------------------------------------------------------------------
    def make(self, subtask: str, row: int, rng: np.random.Generator) -> Core | None:
        return getattr(self, subtask)(row, rng)

    def DF(self, row, rng):
        span = self._span(row, False)
        if span is None:
            return None
        t, attr = self._pick(rng, "DF")
        vals = self._vals(attr, self.seqs.clicks(row)[span[0] : span[1]])
        if t == "DF.last_k":
            k = int(rng.choice(self.cfg.df_last_k))
            return self._tuple(rng, attr, truth.last_k(vals, k), vals, row, span, t, k, PATH_SEP, False, k=k)
        k = int(rng.integers(1, min(self.cfg.df_max_k, len(vals)) + 1))
        gold = truth.kth(vals, k, from_end=t == "DF.kth_last")
        return self._single(rng, attr, gold, vals, row, span, t, k, k=k)

    def MF(self, row, rng):
        span = self._span(row, False)
        if span is None:
            return None
        t, attr = self._pick(rng, "MF")
        if t == "MF.length":
            gold, value, kw = span[1] - span[0], "", {}
        else:
            vals = self._vals(attr, self.seqs.clicks(row)[span[0] : span[1]])
            known = np.unique(vals[vals != 0])
            if not len(known):
                return None
            key = int(known[rng.integers(len(known))])
            gold, value = truth.count(vals, key), self._text(attr, key)
            kw = {"value": value}
            if gold is None:
                return None
        # n options: consecutive multiples of a step ~ gold / 5 around gold, gold at a random rank
        # (no lower than 1: counts are >= 1), so the option set does not reveal where gold lies.
        step = max(1, round(gold / 5))
        rank = int(rng.integers(min(self.n, (gold - 1) // step) + 1))
        opts = [str(gold + (i - rank) * step) for i in range(self.n + 1) if i != rank]
        return self._core(t, attr, 0, value, str(gold), opts, row, span, **kw)

    def IP(self, row, rng):
        span = self._span(row, True)
        if span is None:
            return None
        t, _ = self._pick(rng, "IP")
        clicks = self.seqs.clicks(row)
        title = self.cat.attrs["title"]
        gold = int(title.key_of_item[clicks[-1]])  # the held-out next click = the user's last click
        if gold == 0:
            return None
        # plausible items: random catalog items from the user's own categories
        order, starts = self.cat.items_by_cate
        cates = np.unique(self.cat.attrs["cate"].key_of_item[clicks[span[0] : span[1]]])
        cates = cates[cates != 0]
        own = np.zeros(0, np.int64)
        if len(cates):
            c = cates[rng.integers(len(cates), size=4 * self.n)]
            lo, hi = starts[c], starts[c + 1]
            own = title.key_of_item[order[lo + (rng.random(len(c)) * (hi - lo)).astype(np.int64)]]
        keys = _draw(rng, {gold}, [own, title.popular], self.n)
        if keys is None:
            return None
        return self._core(t, "title", 0, "", title.text[gold], [title.text[k] for k in keys], row, span)

    def AP(self, row, rng):
        span = self._span(row, True)
        if span is None:
            return None
        t, attr = self._pick(rng, "AP")
        clicks = self.seqs.clicks(row)
        gold = int(self._vals(attr, clicks[-1:])[0]) or None
        return self._single(rng, attr, gold, self._vals(attr, clicks[span[0] : span[1]]), row, span, t)

    def LI(self, row, rng):
        span = self._span(row, False)
        if span is None:
            return None
        t, attr = self._pick(rng, "LI")
        vals = self._vals(attr, self.seqs.clicks(row)[span[0] : span[1]])
        return self._tuple(rng, attr, truth.top_k(vals, 3), vals, row, span, t, 3, RANK_SEP[self.lang], True)

    def SI(self, row, rng):
        span = self._span(row, False)
        w = self.cfg.si_window
        if span is None or span[1] - span[0] < w:
            return None
        t, attr = self._pick(rng, "SI")
        vals = self._vals(attr, self.seqs.clicks(row)[span[0] : span[1]])
        return self._single(rng, attr, truth.top1(vals[-w:]), vals, row, span, t, w, w=w)

    def IT(self, row, rng):
        span = self._span(row, False)
        if span is None:
            return None
        t, attr = self._pick(rng, "IT")
        p = self.cfg.it_phases
        vals = self._vals(attr, self.seqs.clicks(row)[span[0] : span[1]])
        gold = truth.trajectory(vals, p, self.cfg.it_min_window)
        return self._tuple(rng, attr, gold, vals, row, span, t, p, PATH_SEP, False, p=p)
