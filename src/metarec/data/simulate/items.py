"""Stage 3: items, with authors and publishers (books) or brands, latent vectors and text."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from metarec.data.simulate.config import SimulationConfig
from metarec.data.simulate.tree import _Tree
from metarec.data.simulate.vocabulary import (
    _ADJECTIVES,
    _FIRST,
    _GENERIC,
    _LAST,
    _PUBLISHER_HEADS,
    _PUBLISHER_TAILS,
    _SYLLABLES,
    LEAVES,
)


@dataclass(frozen=True)
class _Items:
    table: pd.DataFrame  # items.csv
    category: np.ndarray  # (n_items,) leaf index
    vectors: np.ndarray  # (n_items, d)
    quality: np.ndarray  # (n_items,)
    log_price_ratio: np.ndarray  # (n_items,) log(price / leaf median)


def _category_sizes(rng: np.random.Generator, config: SimulationConfig, tree: _Tree) -> np.ndarray:
    """Items per leaf: lognormal shares (smaller for non-books) above a guaranteed minimum."""
    n_leaves = len(LEAVES)
    spare = config.n_items - config.min_items_per_category * n_leaves
    share = rng.lognormal(0.0, config.category_size_sigma, size=n_leaves)
    share = share * np.where(tree.is_book, 1.0, config.non_book_size_weight)
    extra = np.floor(spare * share / share.sum()).astype(np.int64)
    extra[np.argsort(-share)[: spare - extra.sum()]] += 1  # hand out the rounding remainder
    return config.min_items_per_category + extra


def _make_items(rng: np.random.Generator, config: SimulationConfig, tree: _Tree) -> _Items:
    """Items with authors/publishers (books) or brands (other goods), latent vectors and text."""
    d, n = config.latent_dim, config.n_items
    # shuffled, so that item ids say nothing about categories
    category = rng.permutation(
        np.repeat(np.arange(len(LEAVES)), _category_sizes(rng, config, tree))
    )
    book = tree.is_book[category]

    author, publisher, author_vec, author_names, publisher_names = _assign_books(
        rng, config, tree, category
    )
    brand, brand_vec, brand_names = _assign_brands(rng, config, category)
    style = np.where(book[:, None], author_vec[author.clip(0)], brand_vec[brand])
    publisher_vec = config.publisher_std * rng.standard_normal((config.n_publishers, d))
    vectors = (
        tree.vectors[category]
        + style
        + np.where(book[:, None], publisher_vec[publisher], 0.0)
        + config.item_noise_std * rng.standard_normal((n, d))
    )
    quality = config.quality_std * rng.standard_normal(n)

    median = np.array([leaf.price_median for leaf in LEAVES])[category]
    log_ratio = config.price_sigma * rng.standard_normal(n)
    price = np.maximum(np.round(median * np.exp(log_ratio)), 2.0) - 0.01
    end_year = dt.datetime.fromtimestamp(
        config.start_time + config.span_days * 86_400, tz=dt.UTC
    ).year
    age = rng.exponential(np.array([leaf.age_scale for leaf in LEAVES])[category])
    year = np.maximum(end_year - np.floor(age).astype(np.int64), 1600)
    brand_col = np.where(book, "", brand_names[brand])
    titles, descriptions = _texts(rng, category, book, brand_col)

    table = pd.DataFrame(
        {
            "item_id": [f"i{k:05d}" for k in range(n)],
            "category": [LEAVES[c].path for c in category],
            "title": titles,
            "description": descriptions,
            "authors": np.where(book, author_names[author.clip(0)], ""),
            "publisher": np.where(book, publisher_names[publisher], ""),
            "brand": brand_col,
            "year": year,
            "price": [f"{p:.2f}" for p in price],
        }
    )
    return _Items(table, category, vectors, quality, np.log(price / median))


def _assign_books(
    rng: np.random.Generator, config: SimulationConfig, tree: _Tree, category: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Authors and publishers of book items.

    Returns:
        author index per item (-1 for non-books), publisher index per item, author style offsets
        (n_authors, d), author names (n_authors,), publisher names (n_publishers,).
    """
    n_auth, n_pub, d = config.n_authors, config.n_publishers, config.latent_dim
    book_leaves = np.flatnonzero(tree.is_book)
    n_sub = int(tree.subdomain.max()) + 1

    # authors: a home leaf weighted by leaf size, sometimes a sibling leaf too
    sizes = np.bincount(category, minlength=len(LEAVES))[book_leaves]
    home = rng.choice(book_leaves, size=n_auth, p=sizes / sizes.sum())
    second = home.copy()
    wants = rng.random(n_auth) < config.author_second_category_prob
    for a in np.flatnonzero(wants):  # n_authors iterations at most: small
        siblings = book_leaves[(tree.parent[book_leaves] == tree.parent[home[a]])]
        siblings = siblings[siblings != home[a]]
        if len(siblings):
            second[a] = rng.choice(siblings)
    productivity = rng.lognormal(0.0, config.author_productivity_sigma, size=n_auth)
    offsets = config.author_std * rng.standard_normal((n_auth, d))

    # publishers: each covers a few book subdomains; every subdomain has at least one publisher
    book_subs = np.unique(tree.subdomain[book_leaves])
    covers = np.zeros((n_pub, n_sub), dtype=bool)
    for p in range(n_pub):
        span = min(config.publisher_span, len(book_subs))
        covers[p, rng.choice(book_subs, size=span, replace=False)] = True
        covers[p, book_subs[p % len(book_subs)]] = True
    pub_size = rng.lognormal(0.0, 1.0, size=n_pub)
    author_pub = np.array([_pick(rng, pub_size * covers[:, tree.subdomain[h]]) for h in home])

    author = np.full(len(category), -1)
    publisher = np.zeros(len(category), dtype=np.int64)
    for leaf in book_leaves:
        here = np.flatnonzero(category == leaf)
        weight = productivity * ((home == leaf) | (second == leaf))
        if weight.sum() == 0:  # no author lives here (tiny n_authors): borrow any author
            weight = productivity
        author[here] = rng.choice(n_auth, size=len(here), p=weight / weight.sum())
        loyal = rng.random(len(here)) < config.author_publisher_loyalty
        cover_w = pub_size * covers[:, tree.subdomain[leaf]]
        other = rng.choice(n_pub, size=len(here), p=cover_w / cover_w.sum())
        publisher[here] = np.where(loyal, author_pub[author[here]], other)

    name_codes = rng.choice(len(_FIRST) * len(_LAST), size=n_auth, replace=False)
    names = np.array([f"{_FIRST[c // len(_LAST)]} {_LAST[c % len(_LAST)]}" for c in name_codes])
    pub_codes = rng.choice(len(_PUBLISHER_HEADS) * len(_PUBLISHER_TAILS), size=n_pub, replace=False)
    tails = len(_PUBLISHER_TAILS)
    pub_names = np.array(
        [f"{_PUBLISHER_HEADS[c // tails]} {_PUBLISHER_TAILS[c % tails]}" for c in pub_codes]
    )
    return author, publisher, offsets, names, pub_names


def _pick(rng: np.random.Generator, weight: np.ndarray) -> int:
    return int(rng.choice(len(weight), p=weight / weight.sum()))


def _assign_brands(
    rng: np.random.Generator, config: SimulationConfig, category: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A brand per item (each leaf has its own brands; brand offsets play the author's role).

    Returns:
        brand index per item (n_items,), brand offsets (n_brands, d), brand names (n_brands,).
    """
    per = config.brands_per_category
    n_brands = per * len(LEAVES)
    size = rng.lognormal(0.0, config.author_productivity_sigma, size=(len(LEAVES), per))
    code = np.empty(len(category), dtype=np.int64)
    for leaf in range(len(LEAVES)):
        here = np.flatnonzero(category == leaf)
        code[here] = leaf * per + rng.choice(per, size=len(here), p=size[leaf] / size[leaf].sum())
    n_syl = len(_SYLLABLES)
    picks = rng.choice(n_syl * n_syl, size=n_brands, replace=False)
    names = np.array([(_SYLLABLES[c // n_syl] + _SYLLABLES[c % n_syl]).title() for c in picks])
    return code, config.author_std * rng.standard_normal((n_brands, config.latent_dim)), names


def _texts(
    rng: np.random.Generator, category: np.ndarray, book: np.ndarray, brand: np.ndarray
) -> tuple[list[str], list[str]]:
    """Titles from the leaf's vocabulary plus generic words; one-sentence descriptions."""
    n = len(category)
    u = rng.random((n, 5))
    titles, descriptions = [], []
    for k in range(n):  # n_items iterations of string formatting: cheap
        leaf = LEAVES[category[k]]
        w1 = leaf.words[int(u[k, 0] * len(leaf.words))]
        w2 = leaf.words[int(u[k, 1] * len(leaf.words))]
        g = _GENERIC[int(u[k, 2] * len(_GENERIC))]
        pattern = int(u[k, 3] * 4)
        if not book[k]:
            title = f"{brand[k]} {w1} {g}"
        elif pattern == 0:
            title = f"The {w1} {g}"
        elif pattern == 1:
            title = f"{g} of the {w1}"
        elif pattern == 2:
            title = f"{w1} and {w2}" if w1 != w2 else f"The Last {w1}"
        else:
            title = f"{w1} {g}"
        adjective = _ADJECTIVES[int(u[k, 4] * len(_ADJECTIVES))]
        article = "An" if adjective[0] in "aeiou" else "A"
        descriptions.append(
            f"{article} {adjective} {leaf.noun} about {w1.lower()} and {g.lower()}."
        )
        titles.append(title)
    return titles, descriptions
