"""metarec: meta-learned recommendations for a category that has just launched.

The library API in one place::

    from metarec import Recommender, Store, ingest, load_config, save_model, train

    ingest("shop-data/", "shop.duckdb")                      # any supported format
    with Store.open("shop.duckdb", read_only=True) as store:
        model = train(store, load_config(hold_out=["Books > Literature > Poetry"]))
        save_model(model, "model/")
        recommender = Recommender.open("model/", store)
        recommender.adapt("Books > Literature > Poetry")      # from its first interactions
        print(recommender.recommend("u42", "Books > Literature > Poetry", k=10).to_json())

The names are imported on first use (PEP 562): ``import metarec`` and the ``metarec`` command's
``--help`` do not pay for torch and pandas (several seconds) until a name that needs them is read.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("metarec")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"

# public name -> module that defines it: the one visible registry of the library's front door
_EXPORTS = {
    "MetaModel": "metarec.meta.model",
    "load_model": "metarec.meta.model",
    "save_model": "metarec.meta.model",
    "Recommendation": "metarec.serving.recommender",
    "Recommender": "metarec.serving.recommender",
    "recommend_batch": "metarec.serving.batch",
    "write_recommendations": "metarec.serving.batch",
    "Store": "metarec.data.store",
    "ingest": "metarec.data.ingest",
    "TrainConfig": "metarec.config",
    "load_config": "metarec.config",
    "train": "metarec.training",
    "train_selected": "metarec.selection",
    "RidgeModel": "metarec.meta.ridge_model",
}

if TYPE_CHECKING:
    from metarec.config import TrainConfig, load_config
    from metarec.data.ingest import ingest
    from metarec.data.store import Store
    from metarec.meta.model import MetaModel, load_model, save_model
    from metarec.meta.ridge_model import RidgeModel
    from metarec.selection import train_selected
    from metarec.serving.batch import recommend_batch, write_recommendations
    from metarec.serving.recommender import Recommendation, Recommender
    from metarec.training import train


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'metarec' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later reads skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "MetaModel",
    "Recommendation",
    "Recommender",
    "RidgeModel",
    "Store",
    "TrainConfig",
    "__version__",
    "ingest",
    "load_config",
    "load_model",
    "recommend_batch",
    "save_model",
    "train",
    "train_selected",
    "write_recommendations",
]
