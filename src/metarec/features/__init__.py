"""Item, category and user features."""

from metarec.features.encoder import ItemEncoder, load_catalog, profiles
from metarec.features.items import FeatureSpace, Vocab, category_prefixes
from metarec.features.rows import N_SCALARS, input_dim, pair_features
from metarec.features.users import ProfileTable

__all__ = [
    "N_SCALARS",
    "FeatureSpace",
    "ItemEncoder",
    "ProfileTable",
    "Vocab",
    "category_prefixes",
    "input_dim",
    "load_catalog",
    "pair_features",
    "profiles",
]
