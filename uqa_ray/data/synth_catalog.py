"""The synthetic catalog: category -> brand -> shop (= seller) -> item, with Zipf-like popularity.

Everything is index-based (0..n-1) and vectorized; raw ids are applied only when writing. Children
are grouped by parent (brands by category, shops by brand, items by shop and so by brand), so each
parent owns one contiguous block and sampling a child of a parent is one `searchsorted` on a global
cumulative weight array (`Blocks.sample`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from uqa_ray.data import names


def zipf_weights(n: int, s: float) -> np.ndarray:
    """Weight of rank r (0 = most popular) is (r + 1) ** -s."""
    return (np.arange(1, n + 1, dtype=np.float64)) ** -s


def assign_children(n_child: int, weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Parent index of each child, sorted ascending: every parent gets one child, the rest by weight."""
    n_parent = len(weights)
    if n_child < n_parent:
        raise ValueError(f"{n_child} children cannot cover {n_parent} parents (each needs one)")
    extra = rng.choice(n_parent, size=n_child - n_parent, p=weights / weights.sum())
    return np.sort(np.concatenate([np.arange(n_parent), extra]))


def rank_in_block(parent: np.ndarray) -> np.ndarray:
    """Position of each child within its parent's block (parent sorted ascending)."""
    starts = np.searchsorted(parent, parent, side="left")
    return np.arange(len(parent)) - starts


@dataclass
class Blocks:
    """Children grouped in contiguous blocks per parent, sampled proportionally to `weight`."""

    start: np.ndarray  # (n_parent,) first child of each parent
    end: np.ndarray  # (n_parent,) one past the last child
    cum: np.ndarray  # (n_child,) global cumulative weight

    @classmethod
    def build(cls, parent: np.ndarray, weight: np.ndarray, n_parent: int) -> "Blocks":
        counts = np.bincount(parent, minlength=n_parent)
        end = np.cumsum(counts)
        return cls(start=end - counts, end=end, cum=np.cumsum(weight))

    def sample(self, parents: np.ndarray, u: np.ndarray) -> np.ndarray:
        """One child per entry of `parents`, chosen by the uniforms `u` in [0, 1)."""
        s, e = self.start[parents], self.end[parents]
        base = np.where(s > 0, self.cum[np.maximum(s - 1, 0)], 0.0)
        target = base + u * (self.cum[e - 1] - base)
        idx = np.searchsorted(self.cum, target, side="right")
        return np.clip(idx, s, e - 1)


@dataclass
class Catalog:
    n_cates: int
    item_cate: np.ndarray
    item_brand: np.ndarray
    item_shop: np.ndarray
    brand_cate: np.ndarray
    cate_pop: np.ndarray  # normalized category popularity (users' interests are drawn from it)
    brands_of_cate: Blocks
    items_of_brand: Blocks
    items_global: np.ndarray  # cumulative global item popularity (noise clicks)
    raw: dict  # kind -> raw id per index
    table: pa.Table  # items.parquet


def raw_ids(n: int, offset: int, rng: np.random.Generator) -> np.ndarray:
    """Unique, non-dense, shuffled raw ids: offset + (a * (i + 1) + b) mod (2^31 - 1), a bijection."""
    p = 2**31 - 1
    if n >= p:
        raise ValueError(f"too many ids ({n}) for raw id generation")
    a = int(rng.integers(1, p))
    b = int(rng.integers(0, p))
    i = np.arange(1, n + 1, dtype=np.int64)
    return offset + (a * i + b) % p


# Offsets keep the id kinds apart (a bug that mixes columns shows up as an unknown id).
RAW_OFFSETS = {"user": 10**12, "item": 2 * 10**12, "cate": 3 * 10**12, "brand": 4 * 10**12,
               "shop": 5 * 10**12, "seller": 6 * 10**12}


def build_catalog(cfg, rng: np.random.Generator) -> Catalog:
    cate_pop = zipf_weights(cfg.n_cates, cfg.cate_zipf)
    cate_pop /= cate_pop.sum()
    brand_cate = assign_children(cfg.n_brands, cate_pop, rng)
    brand_w = (rank_in_block(brand_cate) + 1.0) ** -cfg.brand_zipf
    brand_share = brand_w / np.bincount(brand_cate, weights=brand_w)[brand_cate]  # within its category
    brand_global = cate_pop[brand_cate] * brand_share
    shop_brand = assign_children(cfg.n_shops, brand_global, rng)
    shop_global = brand_global[shop_brand] / np.bincount(shop_brand)[shop_brand]
    item_shop = assign_children(cfg.n_items, shop_global, rng)
    item_brand = shop_brand[item_shop]
    # Items are grouped by shop, hence by brand (shops are grouped by brand): rank within the brand.
    item_w = (rank_in_block(item_brand) + 1.0) ** -cfg.item_zipf
    item_share = item_w / np.bincount(item_brand, weights=item_w, minlength=cfg.n_brands)[item_brand]
    item_cate = brand_cate[item_brand]

    raw = {k: raw_ids(n, RAW_OFFSETS[k], rng) for k, n in
           (("item", cfg.n_items), ("cate", cfg.n_cates), ("brand", cfg.n_brands), ("shop", cfg.n_shops),
            ("seller", cfg.n_shops))}
    table = _catalog_table(cfg, rng, raw, item_cate, item_brand, item_shop, shop_brand)
    return Catalog(
        n_cates=cfg.n_cates, item_cate=item_cate, item_brand=item_brand, item_shop=item_shop,
        brand_cate=brand_cate, cate_pop=cate_pop,
        brands_of_cate=Blocks.build(brand_cate, brand_share, cfg.n_cates),
        items_of_brand=Blocks.build(item_brand, item_share, cfg.n_brands),
        items_global=np.cumsum(brand_global[item_brand] * item_share),
        raw=raw, table=table,
    )


def _catalog_table(cfg, rng, raw, item_cate, item_brand, item_shop, shop_brand) -> pa.Table:
    pools = names.POOLS[cfg.lang]
    cate_names = names.category_names(cfg.n_cates, pools, rng)
    brand_names = names.brand_names(cfg.n_brands, pools, rng)
    # A shop is named after its brand (flagship, outlet, ...); the k-th shop of a brand gets suffix k.
    k = rank_in_block(shop_brand)
    suffixes = pools.shop_suffixes
    sep = pools.sep
    shop_names = [
        brand_names[b] + sep + suffixes[j % len(suffixes)] + (str(j // len(suffixes) + 1) if j >= len(suffixes) else "")
        for b, j in zip(shop_brand.tolist(), k.tolist())
    ]
    seller_names = names.person_names(cfg.n_shops, pools, rng)
    # Title: brand, two distinct adjectives, category noun; space separated so that BPE keeps words.
    adj = pools.adjectives
    a1 = rng.integers(0, len(adj), cfg.n_items)
    a2 = (a1 + rng.integers(1, len(adj), cfg.n_items)) % len(adj)
    titles = [
        f"{brand_names[b]} {adj[x]} {adj[y]} {cate_names[c]}"
        for b, x, y, c in zip(item_brand.tolist(), a1.tolist(), a2.tolist(), item_cate.tolist())
    ]
    take = lambda pool, idx: pa.array(pool).take(pa.array(idx))  # noqa: E731
    return pa.table({
        "item_id": raw["item"],
        "cate_id": raw["cate"][item_cate],
        "brand_id": raw["brand"][item_brand],
        "shop_id": raw["shop"][item_shop],
        "seller_id": raw["seller"][item_shop],  # sellers are 1:1 with shops (equal official vocabularies)
        "title": pa.array(titles, pa.string()),
        "cate_name": take(cate_names, item_cate),
        "brand_name": take(brand_names, item_brand),
        "shop_name": take(shop_names, item_shop),
        "seller_name": take(seller_names, item_shop),
    })
