"""A simulated bookstore: the product's offline default data and its known-answer fixture.

It is a fixture, not evidence: quality claims come from the real datasets. The generative process
is meant to be neutral (nothing in it is designed to favour one recommender method) and realistic
where that is cheap. It writes the generic table format of PROTOCOL.md §1 (see
:func:`simulate`). Every knob is a field of :class:`SimulationConfig`; docs/SIMULATOR.md explains
each one in plain language.

Generative process (``d = latent_dim``; ``N(0, s²)`` is an isotropic Gaussian in ``R^d``):

1. **Category tree.** A fixed tree of 18 book leaves (``Books > Fiction > Mystery``, ...) and four
   non-book domains (``Music > Vinyl``, ``Electronics > E-readers``, ``Toys > Board Games``,
   ``Stationery > Notebooks``). Each node's latent vector is its parent's plus ``N(0, s²)`` with
   ``s = category_std[depth]`` (top-level domains start from the origin), so sibling categories
   share tastes. Leaves shallower than three levels get the missing levels' variance too, so all
   leaves are equally spread. Items live in leaves only.
2. **Launches.** ``initial_categories`` leaves, chosen at random, launch on day 0; the others at
   uniform random times in ``(0, last_launch_fraction * span_days]``. No event in a category
   happens before its launch.
3. **Items.** Leaf sizes are proportional to lognormal weights (``non_book_size_weight`` times
   smaller outside books; at least ``min_items_per_category`` each); item ids are shuffled.
   A book has an author and a publisher; a non-book good has a brand. Authors have a home leaf
   and, with probability ``author_second_category_prob``, a sibling leaf too; their
   productivity is lognormal. Publishers each span ``publisher_span`` book subdomains; an author
   has a main publisher used for ``author_publisher_loyalty`` of their books. An item's latent
   vector is ``leaf + author (or brand) offset + publisher offset + noise`` with the stds of
   ``author_std``, ``publisher_std`` and ``item_noise_std``. Item quality is ``N(0,
   quality_std²)``: as a log-weight it makes popularity long-tailed. Titles mix words of a
   per-leaf vocabulary with generic words; descriptions are one sentence naming the leaf's kind
   of product; years are ``end_year - Exponential(leaf age scale)``; prices are lognormal
   around a per-leaf median.
4. **Users.** Taste ``u = sqrt(1 - a² - r²) z + a * age[band] + r * region[region]`` with
   ``z``, ``age[.]``, ``region[.]`` standard normal, ``a = age_taste_weight`` and
   ``r = region_taste_weight`` (weak). Activity (number of visits) is lognormal with mean
   ``mean_visits_per_user`` and log-std ``activity_sigma``. Interest over leaves is a Dirichlet
   draw with total concentration ``interest_concentration`` around
   ``softmax(interest_taste_weight * <u, leaf>/sqrt(d) + log(leaf size share))``, so users
   concentrate on a few leaves, those they tend to like.
5. **Visits.** A user joins at a uniform time in the first ``0.9 * span_days``; each visit has a
   uniform time between joining and the end, and picks one *already launched* leaf in proportion
   to the user's interest.
6. **Funnel.** A visit shows ``1 + Poisson(mean_views_per_visit - 1)`` distinct items of its leaf
   (at most ``max_views_per_visit``), sampled without replacement with log-weights
   ``expose_quality * quality + expose_affinity * affinity`` (exposure: popularity plus mild
   personalisation). With ``affinity = <u, item>/sqrt(d)``, each view is clicked with
   probability ``sigmoid(click_bias + click_affinity * affinity + click_quality * quality)``;
   a click is carted with ``sigmoid(cart_bias + cart_affinity * affinity - price_sensitivity *
   log(price / leaf median))``; a cart is ordered with the same form (``order_*`` knobs). One row
   per funnel event; each step follows the previous one by a few seconds to an hour. A fraction
   ``rating_fraction`` of orders carry a 1-5 rating: ``round(rating_bias + affinity + N(0,
   0.75²))``.

Example:
    >>> summary = simulate("data/bookstore", seed=0)  # doctest: +SKIP
    >>> summary.n_events  # doctest: +SKIP
    255340
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from metarec.atomic import write_atomic
from metarec.errors import ConfigError, DataError

EVENTS: tuple[str, ...] = ("view", "click", "cart", "order")
POSITIVE_EVENTS: tuple[str, ...] = ("click", "cart", "order")
FILES: tuple[str, ...] = (
    "items.csv",
    "interactions.csv",
    "users.csv",
    "categories.csv",
    "metarec.toml",
)
AGE_BANDS: tuple[str, ...] = ("18-24", "25-34", "35-49", "50-64", "65+")
AGE_BAND_SHARES: tuple[float, ...] = (0.15, 0.30, 0.28, 0.17, 0.10)
REGIONS: tuple[str, ...] = ("north", "south", "east", "west")

# Stable sub-stream keys: each stage draws from its own generator derived from (seed, key), so a
# change in one stage's draws does not reshuffle every later stage.
_TREE, _ITEMS, _USERS, _VISITS, _VIEWS, _FUNNEL = range(6)


@dataclass(frozen=True)
class _Leaf:
    path: str
    description: str
    noun: str  # what one item is called in a description
    words: tuple[str, ...]  # vocabulary that carries the category signal in titles
    price_median: float
    age_scale: float  # mean age in years of the catalogue


LEAVES: tuple[_Leaf, ...] = (
    _Leaf(
        "Books > Literature > Poetry",
        "Collections of verse, from sonnets to free verse and spoken word.",
        "poetry collection",
        ("Verses", "Sonnets", "Elegy", "Odes", "Stanzas", "Hymns", "Lyric", "Ballads", "Rhymes"),
        14.0,
        25.0,
    ),
    _Leaf(
        "Books > Literature > Classics",
        "Enduring novels and plays from the literary canon.",
        "classic novel",
        ("Pride", "Estate", "Duchess", "Voyage", "Heir", "Parish", "Manor", "Fortune", "Exile"),
        9.0,
        120.0,
    ),
    _Leaf(
        "Books > Literature > Literary Fiction",
        "Character-driven contemporary novels with an ear for language.",
        "literary novel",
        ("Memory", "Daughters", "Kitchen", "Grief", "Lives", "Season", "Distance", "Hours"),
        16.0,
        12.0,
    ),
    _Leaf(
        "Books > Fiction > Mystery",
        "Whodunits and detective stories built around a puzzle.",
        "mystery novel",
        ("Murder", "Detective", "Alibi", "Clue", "Inspector", "Vicarage", "Poison", "Case"),
        12.0,
        20.0,
    ),
    _Leaf(
        "Books > Fiction > Thriller",
        "Fast-paced suspense: spies, conspiracies and chases against the clock.",
        "thriller",
        ("Agent", "Target", "Conspiracy", "Protocol", "Hunt", "Cipher", "Pursuit", "Dossier"),
        13.0,
        10.0,
    ),
    _Leaf(
        "Books > Fiction > Science Fiction",
        "Stories of future worlds, space travel and technology.",
        "science fiction novel",
        ("Starship", "Android", "Orbit", "Colony", "Quantum", "Galaxy", "Signal", "Nebula"),
        14.0,
        18.0,
    ),
    _Leaf(
        "Books > Fiction > Fantasy",
        "Epic quests, magic systems and invented kingdoms.",
        "fantasy novel",
        ("Dragon", "Sword", "Kingdom", "Sorcerer", "Throne", "Realm", "Prophecy", "Runes"),
        15.0,
        15.0,
    ),
    _Leaf(
        "Books > Fiction > Romance",
        "Love stories, from regency courtships to modern meet-cutes.",
        "romance novel",
        ("Love", "Heart", "Kiss", "Wedding", "Bride", "Desire", "Sweetheart", "Promise"),
        10.0,
        8.0,
    ),
    _Leaf(
        "Books > Comics > Graphic Novels",
        "Book-length comics for adult readers, fiction and memoir.",
        "graphic novel",
        ("Panels", "Ink", "Heroes", "Vigilante", "Mask", "Saga", "Issue", "Sketch"),
        20.0,
        10.0,
    ),
    _Leaf(
        "Books > Comics > Manga",
        "Japanese comics across action, drama and slice-of-life.",
        "manga volume",
        ("Ninja", "Academy", "Titan", "Spirit", "Samurai", "Festival", "Mecha", "Club"),
        11.0,
        8.0,
    ),
    _Leaf(
        "Books > Children > Picture Books",
        "Illustrated stories to read aloud to young children.",
        "picture book",
        ("Bunny", "Bedtime", "Bear", "Puppy", "Moon", "Teddy", "Duckling", "Giggles"),
        8.0,
        15.0,
    ),
    _Leaf(
        "Books > Children > Young Adult",
        "Coming-of-age fiction for teenage readers.",
        "young adult novel",
        ("Senior", "Rebels", "Summer", "Secret", "Crush", "Academy", "Rival", "Prom"),
        12.0,
        8.0,
    ),
    _Leaf(
        "Books > Non-fiction > History",
        "Narrative and scholarly history from antiquity to the twentieth century.",
        "history book",
        ("Empire", "Revolution", "War", "Dynasty", "Republic", "Century", "Siege", "Ancient"),
        22.0,
        20.0,
    ),
    _Leaf(
        "Books > Non-fiction > Biography",
        "Lives of artists, leaders and scientists, told by others or themselves.",
        "biography",
        ("Life", "Portrait", "Memoir", "Years", "Legacy", "Genius", "Founder", "Letters"),
        18.0,
        15.0,
    ),
    _Leaf(
        "Books > Non-fiction > Popular Science",
        "Accessible books on physics, biology and the mind.",
        "popular science book",
        ("Universe", "Genes", "Brain", "Atoms", "Evolution", "Cosmos", "Climate", "Cells"),
        19.0,
        12.0,
    ),
    _Leaf(
        "Books > Non-fiction > Philosophy",
        "Introductions and classic texts on ethics, logic and meaning.",
        "philosophy book",
        ("Ethics", "Reason", "Virtue", "Truth", "Being", "Mind", "Freedom", "Logic"),
        17.0,
        60.0,
    ),
    _Leaf(
        "Books > Lifestyle > Cookbooks",
        "Recipes and techniques for home cooks and bakers.",
        "cookbook",
        ("Recipes", "Baking", "Kitchen", "Feasts", "Spices", "Bread", "Vegan", "Suppers"),
        25.0,
        8.0,
    ),
    _Leaf(
        "Books > Lifestyle > Travel",
        "Guidebooks and travel writing for journeys near and far.",
        "travel guide",
        ("Roads", "Islands", "Guide", "Coast", "Trails", "Cities", "Passport", "Mountains"),
        20.0,
        6.0,
    ),
    _Leaf(
        "Music > Vinyl",
        "Records on vinyl, new pressings and reissues across genres.",
        "vinyl record",
        ("Groove", "Sessions", "Live", "Jazz", "Soul", "Remastered", "Blues", "Echoes"),
        28.0,
        6.0,
    ),
    _Leaf(
        "Electronics > E-readers",
        "E-ink readers and their covers, lights and accessories.",
        "e-reader accessory",
        ("Reader", "Glow", "Cover", "Paper", "Backlight", "Sleeve", "Touch", "Pocket"),
        60.0,
        3.0,
    ),
    _Leaf(
        "Toys > Board Games",
        "Strategy, party and family board games.",
        "board game",
        ("Strategy", "Dice", "Quest", "Cards", "Tiles", "Castle", "Party", "Trade"),
        35.0,
        5.0,
    ),
    _Leaf(
        "Stationery > Notebooks",
        "Notebooks, journals and planners for writing by hand.",
        "notebook",
        ("Journal", "Dotted", "Planner", "Sketchbook", "Linen", "Ruled", "Pocket", "Leather"),
        15.0,
        3.0,
    ),
)

_GENERIC = (
    "Light", "River", "House", "Night", "Road", "Garden", "Winter", "Stone", "Journey",
    "Silence", "Fire", "Window", "Letter", "Island", "Storm", "Door", "Glass", "Field",
    "Shadow", "Morning", "Salt", "Bridge", "Tide", "Forest",
)  # fmt: skip
_ADJECTIVES = (
    "gripping", "thoughtful", "funny", "moving", "practical", "ambitious", "quiet", "bold",
    "accessible", "beautiful", "surprising", "classic", "new", "acclaimed", "charming",
)  # fmt: skip
_FIRST = (
    "Ada", "Ben", "Clara", "Dev", "Elena", "Felix", "Grace", "Hiro", "Ines", "Jonas", "Kira",
    "Liam", "Maya", "Noah", "Olga", "Pablo", "Quinn", "Rosa", "Sami", "Tara", "Umar", "Vera",
    "Wen", "Xavier", "Yara", "Zane", "Amara", "Bruno", "Chloe", "Dario", "Esme", "Farid",
)  # fmt: skip
_LAST = (
    "Abbott", "Bauer", "Castro", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad", "Ito",
    "Jensen", "Kowalski", "Larsen", "Moreau", "Nakamura", "Okafor", "Petrov", "Quist", "Rossi",
    "Silva", "Tanaka", "Umeh", "Varga", "Weber", "Xu", "Yilmaz", "Zhang", "Adeyemi", "Berg",
    "Costa", "Dlamini", "Evans", "Ferreira", "Gupta", "Horvat", "Ivanova", "Jovanovic", "Kim",
    "Lopez", "Muller", "Novak", "Olsen", "Park", "Quinlan", "Reyes", "Sato", "Torres", "Ueda",
    "Vogel", "Walsh", "Young",
)  # fmt: skip
_PUBLISHER_HEADS = (
    "Harbor", "Lantern", "Quill", "Meridian", "Northgate", "Blue Heron", "Redwood", "Ashford",
    "Orchard", "Kestrel", "Saltmarsh", "Beacon", "Foxglove", "Granite", "Hollow Oak", "Juniper",
    "Larkspur", "Millbrook", "Copper Kettle", "Wayfarer",
)  # fmt: skip
_PUBLISHER_TAILS = ("Press", "Books", "House", "Publishing", "Editions")
_SYLLABLES = (
    "lu", "ma", "ko", "ri", "ve", "no", "ta", "zen", "qui", "ar", "bo", "el", "sa", "fi", "du",
    "po", "mi", "ga", "xo", "ny",
)  # fmt: skip
_N_BOOK_SUBDOMAINS = len(
    {leaf.path.split(" > ")[1] for leaf in LEAVES if leaf.path.startswith("Books")}
)


class SimulationConfig(BaseModel):
    """Sizes and knobs of the simulated bookstore (see the module docstring for the process).

    The defaults give about 3,000 users, 4,000 items, 22 leaf categories and 250k event rows,
    sized so that the whole demo runs in a few minutes on two cores.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # sizes
    n_users: int = Field(default=3000, ge=1)
    n_items: int = Field(default=4000, ge=1)
    n_authors: int = Field(default=1000, ge=1, le=len(_FIRST) * len(_LAST))
    n_publishers: int = Field(
        default=40, ge=_N_BOOK_SUBDOMAINS, le=len(_PUBLISHER_HEADS) * len(_PUBLISHER_TAILS)
    )  # at least one per book subdomain
    brands_per_category: int = Field(default=8, ge=1, le=len(_SYLLABLES) ** 2 // len(LEAVES))
    min_items_per_category: int = Field(default=80, ge=1)
    latent_dim: int = Field(default=16, ge=2)
    # time
    start_time: int = 1_640_995_200  # 2022-01-01T00:00:00Z
    span_days: int = Field(default=730, ge=1)
    initial_categories: int = Field(default=8, ge=1, le=len(LEAVES))
    last_launch_fraction: float = Field(default=0.5, gt=0, lt=1)
    # latent structure (stds per dimension; they add up in variance)
    category_std: tuple[float, float, float] = (0.5, 0.4, 0.4)  # domain, subdomain, leaf
    author_std: float = Field(default=0.4, ge=0)
    author_second_category_prob: float = Field(default=0.3, ge=0, le=1)
    author_productivity_sigma: float = Field(default=1.0, ge=0)
    publisher_std: float = Field(default=0.2, ge=0)
    publisher_span: int = Field(default=3, ge=1)
    author_publisher_loyalty: float = Field(default=0.8, ge=0, le=1)
    item_noise_std: float = Field(default=0.5, ge=0)
    quality_std: float = Field(default=1.0, ge=0)
    category_size_sigma: float = Field(default=0.25, ge=0)
    non_book_size_weight: float = Field(default=0.5, gt=0)  # a bookstore carries fewer other goods
    price_sigma: float = Field(default=0.35, ge=0)
    # users
    age_taste_weight: float = Field(default=0.3, ge=0)
    region_taste_weight: float = Field(default=0.15, ge=0)
    mean_visits_per_user: float = Field(default=16.0, gt=0)
    activity_sigma: float = Field(default=1.0, ge=0)
    interest_taste_weight: float = Field(default=1.5, ge=0)
    interest_concentration: float = Field(default=2.0, gt=0)
    # funnel
    mean_views_per_visit: float = Field(default=4.0, ge=1)
    max_views_per_visit: int = Field(default=12, ge=1)
    expose_quality: float = 1.0
    expose_affinity: float = 0.3
    click_bias: float = -2.2
    click_affinity: float = 1.0
    click_quality: float = 0.3
    cart_bias: float = -1.5
    cart_affinity: float = 0.6
    order_bias: float = -0.3
    order_affinity: float = 0.4
    price_sensitivity: float = Field(default=0.3, ge=0)
    rating_fraction: float = Field(default=0.2, ge=0, le=1)
    rating_bias: float = 3.0

    @model_validator(mode="after")
    def _check(self) -> SimulationConfig:
        if self.n_items < self.min_items_per_category * len(LEAVES):
            raise ValueError(
                f"n_items={self.n_items} is below min_items_per_category * {len(LEAVES)} "
                f"leaf categories = {self.min_items_per_category * len(LEAVES)}; raise n_items "
                "or lower min_items_per_category"
            )
        if self.age_taste_weight**2 + self.region_taste_weight**2 >= 1:
            raise ValueError(
                "age_taste_weight² + region_taste_weight² must be below 1 (they are shares of "
                "the taste variance); lower them"
            )
        return self


class CategoryLaunch(BaseModel):
    """One leaf category of the simulated store."""

    model_config = ConfigDict(frozen=True)

    category: str
    launch_time: int  # unix seconds; no event in the category happens before it
    n_items: int
    n_events: int


class SimulationSummary(BaseModel):
    """What :func:`simulate` wrote."""

    model_config = ConfigDict(frozen=True)

    seed: int
    n_users: int
    n_items: int
    n_events: int
    events: dict[str, int]  # rows per event type
    n_ratings: int
    categories: tuple[CategoryLaunch, ...]  # in launch order
    files: tuple[Path, ...]


def simulate(
    out: str | Path, *, seed: int = 0, config: SimulationConfig | None = None
) -> SimulationSummary:
    """Simulate the bookstore and write it, in the generic table format, into folder ``out``.

    Files: ``items.csv``, ``interactions.csv``, ``users.csv``, ``categories.csv`` and
    ``metarec.toml`` (the recommended feedback setting: clicks, carts and orders are positives,
    views are exposure). Each file is written atomically; other files in ``out`` are left alone.
    The same seed and config give byte-identical files.

    Args:
        out: output folder, created when missing.
        seed: seed of every random draw.
        config: sizes and knobs; defaults to :class:`SimulationConfig`'s defaults.

    Returns:
        Counts, the categories with their launch times, and the paths written.

    Raises:
        ConfigError: ``seed`` is negative.
        DataError: ``out`` exists and is not a folder.
    """
    config = config or SimulationConfig()
    if seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"simulation output {out} is a file; pass a folder path (created if new)")
    out.mkdir(parents=True, exist_ok=True)

    tree = _build_tree(_rng(seed, _TREE), config)
    items = _make_items(_rng(seed, _ITEMS), config, tree)
    leaf_sizes = np.bincount(items.category, minlength=len(LEAVES))
    users = _make_users(_rng(seed, _USERS), config, tree, leaf_sizes)
    visits = _draw_visits(_rng(seed, _VISITS), config, tree, users)
    views = _draw_views(_rng(seed, _VIEWS), config, items, users, visits)
    events = _run_funnel(_rng(seed, _FUNNEL), config, items, users, visits, views)

    frames = {
        "items.csv": items.table,
        "interactions.csv": events,
        "users.csv": users.table,
        "categories.csv": pd.DataFrame(
            {"category": [leaf.path for leaf in LEAVES], "description": tree.descriptions}
        ),
    }
    files = [_write_csv(out / name, frame) for name, frame in frames.items()]
    files.append(_write_text(out / "metarec.toml", _feedback_toml()))
    return _summarise(seed, tree, items, users, events, files)


# --- stages ------------------------------------------------------------------------------------


def _rng(seed: int, stage: int) -> np.random.Generator:
    return np.random.default_rng([seed, stage])


@dataclass(frozen=True)
class _Tree:
    vectors: np.ndarray  # (n_leaves, d)
    parent: np.ndarray  # (n_leaves,) index of the leaf's parent node, for sibling lookups
    subdomain: np.ndarray  # (n_leaves,) index of the leaf's second-level node
    is_book: np.ndarray  # (n_leaves,) bool
    launch: np.ndarray  # (n_leaves,) int64 unix seconds
    descriptions: tuple[str, ...]


def _build_tree(rng: np.random.Generator, config: SimulationConfig) -> _Tree:
    """Latent vectors of every node (each around its parent's) and staggered launch times."""
    d = config.latent_dim
    node_vec: dict[str, np.ndarray] = {}
    paths = [leaf.path.split(" > ") for leaf in LEAVES]
    stds = np.asarray(config.category_std)
    for depth in range(3):
        for parts in paths:
            if depth >= len(parts):
                continue
            key = " > ".join(parts[: depth + 1])
            if key in node_vec:
                continue
            base = node_vec[" > ".join(parts[:depth])] if depth else np.zeros(d)
            # a leaf above the deepest level takes the variance of the levels it skips
            last = depth == len(parts) - 1
            std = float(np.sqrt(np.sum(stds[depth:] ** 2))) if last else float(stds[depth])
            node_vec[key] = base + std * rng.standard_normal(d)
    parents = [" > ".join(p[:-1]) for p in paths]
    parent_names = sorted(set(parents))
    subdomains = sorted({" > ".join(p[:2]) for p in paths})

    n_leaves = len(LEAVES)
    late = rng.permutation(n_leaves)[config.initial_categories :]
    offsets = np.zeros(n_leaves)
    offsets[late] = rng.uniform(0.0, config.last_launch_fraction, size=len(late))
    launch = config.start_time + np.ceil(offsets * config.span_days * 86_400).astype(np.int64)
    return _Tree(
        vectors=np.stack([node_vec[leaf.path] for leaf in LEAVES]),
        parent=np.array([parent_names.index(p) for p in parents]),
        subdomain=np.array([subdomains.index(" > ".join(p[:2])) for p in paths]),
        is_book=np.array([p[0] == "Books" for p in paths]),
        launch=launch,
        descriptions=tuple(leaf.description for leaf in LEAVES),
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


@dataclass(frozen=True)
class _Users:
    table: pd.DataFrame  # users.csv
    taste: np.ndarray  # (n_users, d)
    interest: np.ndarray  # (n_users, n_leaves), rows sum to 1
    visits: np.ndarray  # (n_users,) number of visits
    joined: np.ndarray  # (n_users,) unix seconds


def _make_users(
    rng: np.random.Generator, config: SimulationConfig, tree: _Tree, leaf_sizes: np.ndarray
) -> _Users:
    """Tastes weakly tied to age band and region, long-tailed activity, focused interests."""
    n, d = config.n_users, config.latent_dim
    band = rng.choice(len(AGE_BANDS), size=n, p=AGE_BAND_SHARES)
    region = rng.integers(len(REGIONS), size=n)
    a, r = config.age_taste_weight, config.region_taste_weight
    band_vec = rng.standard_normal((len(AGE_BANDS), d))
    region_vec = rng.standard_normal((len(REGIONS), d))
    taste = (
        np.sqrt(1 - a * a - r * r) * rng.standard_normal((n, d))
        + a * band_vec[band]
        + r * region_vec[region]
    )

    # bigger leaves draw more traffic: their share of the catalogue enters the interest prior
    log_share = np.log(leaf_sizes / leaf_sizes.sum())
    logits = config.interest_taste_weight * taste @ tree.vectors.T / np.sqrt(d) + log_share
    base = np.exp(logits - logits.max(axis=1, keepdims=True))
    base /= base.sum(axis=1, keepdims=True)
    gamma = rng.gamma(config.interest_concentration * base)
    # tiny Dirichlet shapes underflow to exact zeros; a small share of the mean keeps every
    # launched leaf reachable
    interest = 0.97 * gamma / np.maximum(gamma.sum(axis=1, keepdims=True), 1e-300) + 0.03 * base

    mu = np.log(config.mean_visits_per_user) - config.activity_sigma**2 / 2
    visits = np.maximum(np.round(rng.lognormal(mu, config.activity_sigma, size=n)), 1)
    span = config.span_days * 86_400
    joined = config.start_time + np.floor(rng.uniform(0, 0.9 * span, size=n)).astype(np.int64)
    table = pd.DataFrame(
        {
            "user_id": [f"u{k:05d}" for k in range(n)],
            "age_band": np.asarray(AGE_BANDS)[band],
            "region": np.asarray(REGIONS)[region],
        }
    )
    return _Users(table, taste, interest, visits.astype(np.int64), joined)


@dataclass(frozen=True)
class _Visits:
    user: np.ndarray  # (n_visits,) user index
    time: np.ndarray  # (n_visits,) unix seconds
    category: np.ndarray  # (n_visits,) leaf index, launched by ``time``
    n_views: np.ndarray  # (n_visits,) items shown


def _draw_visits(
    rng: np.random.Generator, config: SimulationConfig, tree: _Tree, users: _Users
) -> _Visits:
    """Visit times after each user joins; each visit picks a launched leaf by interest."""
    user = np.repeat(np.arange(config.n_users), users.visits)
    end = config.start_time + config.span_days * 86_400
    start = users.joined[user]
    time = start + np.floor(rng.random(len(user)) * (end - start)).astype(np.int64)
    # inverse-CDF draw over the leaves launched by each visit's time, all visits at once
    weight = users.interest[user] * (tree.launch[None, :] <= time[:, None])
    cumulative = np.cumsum(weight, axis=1)
    target = rng.random(len(user)) * cumulative[:, -1]
    category = np.minimum((cumulative <= target[:, None]).sum(axis=1), len(LEAVES) - 1)
    n_views = 1 + rng.poisson(config.mean_views_per_visit - 1, size=len(user))
    n_views = np.minimum(n_views, config.max_views_per_visit)
    return _Visits(user, time, category, n_views)


@dataclass(frozen=True)
class _Views:
    visit: np.ndarray  # (n_views,) visit index
    item: np.ndarray  # (n_views,) item index
    position: np.ndarray  # (n_views,) 0-based position in the visit
    affinity: np.ndarray  # (n_views,) <taste, item vector> / sqrt(d)


def _draw_views(
    rng: np.random.Generator,
    config: SimulationConfig,
    items: _Items,
    users: _Users,
    visits: _Visits,
) -> _Views:
    """Items each visit shows: distinct items of the leaf, by popularity and mild affinity.

    Sampling without replacement in proportion to ``exp(log-weight)`` is the top-n of the
    log-weights plus Gumbel noise, so each leaf is one (visits, items) matrix, no per-visit loop.
    """
    scale = 1.0 / np.sqrt(config.latent_dim)
    parts: list[tuple[np.ndarray, ...]] = []
    for leaf in range(len(LEAVES)):
        vis = np.flatnonzero(visits.category == leaf)
        cand = np.flatnonzero(items.category == leaf)
        if len(vis) == 0:
            continue
        affinity = users.taste[visits.user[vis]] @ items.vectors[cand].T * scale  # (V, N)
        key = config.expose_quality * items.quality[cand] + config.expose_affinity * affinity
        key = key + rng.gumbel(size=key.shape)
        k = min(config.max_views_per_visit, len(cand))
        top = np.argpartition(-key, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(key, top, 1), 1), 1)
        shown = np.arange(k)[None, :] < np.minimum(visits.n_views[vis], k)[:, None]  # (V, k)
        rows, position = np.nonzero(shown)
        chosen = top[rows, position]
        parts.append((vis[rows], cand[chosen], position, affinity[rows, chosen]))
    visit, item, position, affinity = (np.concatenate(p) for p in zip(*parts, strict=True))
    return _Views(visit, item, position, affinity)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _run_funnel(
    rng: np.random.Generator,
    config: SimulationConfig,
    items: _Items,
    users: _Users,
    visits: _Visits,
    views: _Views,
) -> pd.DataFrame:
    """View, then click, cart and order, each step conditional on the previous one.

    Returns:
        interactions.csv's rows, sorted by time, with sequential event ids.
    """
    n = len(views.item)
    aff, quality = views.affinity, items.quality[views.item]
    price = items.log_price_ratio[views.item]
    t_view = visits.time[views.visit] + 45 * views.position + rng.integers(0, 30, size=n)
    click = rng.random(n) < _sigmoid(
        config.click_bias + config.click_affinity * aff + config.click_quality * quality
    )
    cart = click & (
        rng.random(n)
        < _sigmoid(config.cart_bias + config.cart_affinity * aff - config.price_sensitivity * price)
    )
    order = cart & (
        rng.random(n)
        < _sigmoid(
            config.order_bias + config.order_affinity * aff - config.price_sensitivity * price
        )
    )
    # each step follows the previous by seconds (click), minutes (cart) or up to an hour (order)
    t_click = t_view + rng.integers(3, 60, size=n)
    t_cart = t_click + rng.integers(20, 600, size=n)
    t_order = t_cart + rng.integers(60, 3600, size=n)
    rated = order & (rng.random(n) < config.rating_fraction)
    stars = np.clip(np.round(config.rating_bias + aff + 0.75 * rng.standard_normal(n)), 1, 5)

    masks = (np.ones(n, dtype=bool), click, cart, order)
    times = (t_view, t_click, t_cart, t_order)
    user = visits.user[views.visit]
    rows_user = np.concatenate([user[m] for m in masks])
    rows_item = np.concatenate([views.item[m] for m in masks])
    rows_time = np.concatenate([t[m] for t, m in zip(times, masks, strict=True)])
    rows_event = np.concatenate([np.full(int(m.sum()), e) for e, m in enumerate(masks)])
    rows_rating = np.concatenate(
        [np.full(int(m.sum()), np.nan) for m in masks[:3]] + [np.where(rated, stars, np.nan)[order]]
    )
    # a total order on (time, user, item, step) makes event ids reproducible
    sort = np.lexsort((rows_event, rows_item, rows_user, rows_time))
    user_ids = users.table["user_id"].to_numpy()
    item_ids = items.table["item_id"].to_numpy()
    return pd.DataFrame(
        {
            "event_id": [f"e{k:07d}" for k in range(len(sort))],
            "user_id": user_ids[rows_user[sort]],
            "item_id": item_ids[rows_item[sort]],
            "timestamp": rows_time[sort],
            "event": np.asarray(EVENTS)[rows_event[sort]],
            "rating": pd.array(rows_rating[sort], dtype="Float64").astype("Int64"),
        }
    )


# --- output ------------------------------------------------------------------------------------


def _feedback_toml() -> str:
    events = ", ".join(f'"{e}"' for e in POSITIVE_EVENTS)
    return (
        "# Recommended settings for the simulated bookstore: views are exposure, not preference.\n"
        f"[feedback]\npositive_events = [{events}]\n"
    )


def _write_csv(path: Path, frame: pd.DataFrame) -> Path:
    return _write_text(path, frame.to_csv(index=False, lineterminator="\n"))


def _write_text(path: Path, text: str) -> Path:
    """Write ``text`` atomically: a reader never sees a half-written table."""
    return write_atomic(path, text)


def _summarise(
    seed: int,
    tree: _Tree,
    items: _Items,
    users: _Users,
    events: pd.DataFrame,
    files: list[Path],
) -> SimulationSummary:
    item_leaf = pd.Series(items.category, index=items.table["item_id"])
    per_leaf = np.bincount(item_leaf.reindex(events["item_id"]).to_numpy(), minlength=len(LEAVES))
    item_counts = np.bincount(items.category, minlength=len(LEAVES))
    order = np.lexsort((np.arange(len(LEAVES)), tree.launch))
    counts = events["event"].value_counts()
    return SimulationSummary(
        seed=seed,
        n_users=len(users.table),
        n_items=len(items.table),
        n_events=len(events),
        events={e: int(counts.get(e, 0)) for e in EVENTS},
        n_ratings=int(events["rating"].notna().sum()),
        categories=tuple(
            CategoryLaunch(
                category=LEAVES[c].path,
                launch_time=int(tree.launch[c]),
                n_items=int(item_counts[c]),
                n_events=int(per_leaf[c]),
            )
            for c in order
        ),
        files=tuple(files),
    )
