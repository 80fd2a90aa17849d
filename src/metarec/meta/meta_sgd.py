"""Meta-SGD: the inner learning rates are meta-learned too, one per parameter entry.

Li, Zhou, Chen and Li, "Meta-SGD: Learning to Learn Quickly for Few-Shot Learning",
arXiv 2017 (https://arxiv.org/abs/1707.09835).
"""

from __future__ import annotations

import torch

from metarec.errors import ConfigError
from metarec.meta.maml import MAML
from metarec.meta.spec import InnerLoop, scorer_params
from metarec.models.scorer import Params

LR_PREFIX = "lr."
"""Learned rates live in the params dict as ``lr.<scorer name>`` (``lr.layers.0.weight``), so
the artifact saves them with the weights and every ``adapt`` (training, evaluation, serving)
reads the same ones. Scoring ignores them (:func:`metarec.meta.spec.scorer_params`)."""


class MetaSGD(MAML):
    """Meta-SGD (Li et al. 2017): MAML whose inner update is ``θ ← θ - α ⊙ ∇L_support(θ)``
    with a learned ``α`` of the same shape as ``θ``, meta-learned jointly with ``θ``.

    ``α`` starts at ``config.inner_lr`` everywhere (:meth:`init_params`) and then follows the
    meta-gradient like any weight: a learned rate can shrink to 0 (that entry stops adapting),
    grow, or turn negative, which is how Meta-SGD learns both *where* and *which way* to adapt.
    The paper uses one inner step; any ``inner_steps`` works, each with the same ``α``.
    ``first_order`` detaches the inner gradients; ``α`` still gets its (first-order) gradient.

    Args:
        config: as :class:`MAML`; ``inner_lr`` is the initial rate.

    Raises:
        ConfigError: (from :meth:`inner_loop`) params without the learned rates; start from
            :meth:`init_params`.

    Example:
        >>> import torch
        >>> from metarec.config import MetaConfig, ModelConfig
        >>> from metarec.meta import Batch, MetaSGD, stack_tasks
        >>> from metarec.models import init_params
        >>> g = torch.Generator().manual_seed(0)
        >>> def rows(n):
        ...     x = torch.randn(n, 8, generator=g)
        ...     return Batch(x, (x[:, 0] > 0).float(), torch.ones(n))
        >>> learner = MetaSGD(MetaConfig(inner_steps=1, inner_lr=0.5))
        >>> params = learner.init_params(init_params(8, ModelConfig(hidden=(16, 8)), generator=g))
        >>> params["lr.layers.0.weight"].shape, params["lr.layers.0.weight"][0, 0].item()
        (torch.Size([16, 8]), 0.5)
        >>> loss, grads = learner.meta_gradient(params, stack_tasks([(rows(5), rows(10))]))
        >>> bool(grads["lr.layers.0.weight"].abs().sum() > 0)  # the rates are learned
        True
        >>> sorted(learner.adapt(params, rows(5))) == sorted(params)  # rates carried along
        True
    """

    def init_params(self, params: Params) -> Params:
        """``params`` plus one rate tensor per scorer entry, filled with ``config.inner_lr``.

        Rates already present (a trained model's) are kept.
        """
        rates = {
            LR_PREFIX + name: torch.full_like(value, self.config.inner_lr)
            for name, value in scorer_params(params).items()
            if LR_PREFIX + name not in params
        }
        return {**params, **rates}

    def inner_loop(self, params: Params) -> InnerLoop:
        """The configured steps and order, at the rates carried in ``params``."""
        weights = scorer_params(params)
        missing = sorted(LR_PREFIX + name for name in weights if LR_PREFIX + name not in params)
        if missing:
            raise ConfigError(
                f"Meta-SGD params lack their learned inner rates {missing[:3]}...; start "
                "meta-training from MetaSGD.init_params(params), or load a model trained with "
                "meta.algorithm = 'meta_sgd'"
            )
        lr = {name: params[LR_PREFIX + name] for name in weights}
        return InnerLoop(steps=self.config.inner_steps, lr=lr, first_order=self.config.first_order)
