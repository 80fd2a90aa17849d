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
"""

from importlib.metadata import PackageNotFoundError, version

from metarec.config import TrainConfig, load_config
from metarec.data import Store, ingest
from metarec.meta.model import MetaModel, load_model, save_model
from metarec.serving.recommender import Recommendation, Recommender
from metarec.training import train

try:
    __version__ = version("metarec")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"

__all__ = [
    "MetaModel",
    "Recommendation",
    "Recommender",
    "Store",
    "TrainConfig",
    "__version__",
    "ingest",
    "load_config",
    "load_model",
    "save_model",
    "train",
]
