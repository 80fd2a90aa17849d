"""The registry of meta-learning algorithms: one visible dict, and the function that reads it.

``MetaConfig.algorithm`` is a ``Literal`` of exactly these keys, so a typo fails when the config
loads. Every algorithm adapts through the single inner loop (:func:`metarec.meta.inner.adapt`)
and extends :class:`~metarec.meta.maml.MAML`, so each is also a
:class:`~metarec.meta.maml.MetaLearner` with :meth:`~metarec.meta.maml.MAML.init_params`.
"""

from __future__ import annotations

from metarec.config import MetaConfig
from metarec.errors import ConfigError
from metarec.meta.anil import ANIL
from metarec.meta.maml import FOMAML, MAML
from metarec.meta.melu_local import MeLULocal
from metarec.meta.meta_sgd import MetaSGD
from metarec.meta.reptile import Reptile

ALGORITHMS: dict[str, type[MAML]] = {
    "maml": MAML,  # Finn et al. 2017, second order (first order by meta.first_order)
    "fomaml": FOMAML,  # the same, first order always
    "meta_sgd": MetaSGD,  # Li et al. 2017: learned per-parameter inner rates
    "reptile": Reptile,  # Nichol et al. 2018: follow the adapted params
    "anil": ANIL,  # Raghu et al. 2020: adapt the head only
    "melu_local": MeLULocal,  # Lee et al. 2019: adapt the decision layers only
}
"""Algorithm name -> class; ``build_learner`` instantiates one from a :class:`MetaConfig`."""


def build_learner(config: MetaConfig) -> MAML:
    """The meta-learner named by ``config.algorithm``.

    Raises:
        ConfigError: the name is not in :data:`ALGORITHMS` (only possible for a config built
            without validation, e.g. ``model_construct``).
    """
    try:
        cls = ALGORITHMS[config.algorithm]
    except KeyError:
        raise ConfigError(
            f"unknown meta.algorithm {config.algorithm!r}; choose one of {sorted(ALGORITHMS)}"
        ) from None
    return cls(config)
