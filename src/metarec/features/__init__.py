"""Item, category and user features."""

from metarec.features.feedback import positives
from metarec.features.items import FeatureSpace, Vocab, category_prefixes
from metarec.features.rows import N_SCALARS, input_dim, pair_features
from metarec.features.users import ProfileTable

__all__ = [
    "N_SCALARS",
    "FeatureSpace",
    "ProfileTable",
    "Vocab",
    "category_prefixes",
    "input_dim",
    "pair_features",
    "positives",
]
