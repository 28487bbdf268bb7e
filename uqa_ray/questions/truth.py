"""Ground truth of every sub-task, as pure functions of one user's value sequence.

`vals` is the sequence of one attribute's value keys for the clicks the ENCODER sees (oldest first);
key 0 means unknown (padding id or empty name) and is never an answer and never counted as an interest.
Every function returns None for a degenerate question (a tie where the answer must be unique, a count
of 0, a window too short); the generator drops those (paper section 3.5.2: filter rules).
"""
from __future__ import annotations

import numpy as np


def kth(vals: np.ndarray, k: int, from_end: bool) -> int | None:
    """DF: value of click k (1-based), counted from the oldest click or from the last one."""
    if not 1 <= k <= len(vals):
        return None
    v = int(vals[len(vals) - k] if from_end else vals[k - 1])
    return v or None


def last_k(vals: np.ndarray, k: int) -> tuple[int, ...] | None:
    """DF: values of the last k clicks, oldest first."""
    if not 2 <= k <= len(vals):
        return None
    out = tuple(int(v) for v in vals[-k:])
    return None if 0 in out else out


def count(vals: np.ndarray, value: int) -> int | None:
    """MF: clicks whose value equals `value`; a count of 0 is filtered (paper section 3.5.2)."""
    if value == 0:
        return None
    c = int(np.count_nonzero(vals == value))
    return c or None


def _ranked(vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct known values and their counts, most clicked first (ties in value order, then checked)."""
    v, c = np.unique(vals[vals != 0], return_counts=True)
    order = np.argsort(-c, kind="stable")
    return v[order], c[order]


def top_k(vals: np.ndarray, k: int) -> tuple[int, ...] | None:
    """LI: the k most clicked values ordered by count. None unless the order is unique: the first k
    counts are strictly decreasing and the k-th strictly beats the (k+1)-th."""
    v, c = _ranked(vals)
    if len(v) < k:
        return None
    if np.any(c[: k - 1] == c[1:k]) or (len(c) > k and c[k - 1] == c[k]):
        return None
    return tuple(int(x) for x in v[:k])


def top1(vals: np.ndarray) -> int | None:
    """SI (on the recent window) and each IT window: the unique most clicked value."""
    v, c = _ranked(vals)
    if len(v) == 0 or (len(c) > 1 and c[0] == c[1]):
        return None
    return int(v[0])


def windows(n: int, phases: int) -> list[tuple[int, int]]:
    """Cut n clicks into `phases` contiguous windows as equal as possible (earlier ones get the
    remainder, as np.array_split does)."""
    q, r = divmod(n, phases)
    out, start = [], 0
    for i in range(phases):
        end = start + q + (1 if i < r else 0)
        out.append((start, end))
        start = end
    return out


def trajectory(vals: np.ndarray, phases: int, min_window: int) -> tuple[int, ...] | None:
    """IT: the dominant value of each window, oldest first. None if a window is too short, a window's
    top is tied, or the path never changes (no interest change to detect)."""
    if len(vals) < phases * min_window:
        return None
    path = []
    for a, b in windows(len(vals), phases):
        t = top1(vals[a:b])
        if t is None:
            return None
        path.append(t)
    return tuple(path) if len(set(path)) > 1 else None
