"""MeLU-style local update: the decision layers adapt, the embedding layers stay global.

Lee, Im, Jang, Cho and Chung, "MeLU: Meta-Learned User Preference Estimator for Cold-Start
Recommendation", KDD 2019 (https://arxiv.org/abs/1908.00413).
"""

from __future__ import annotations

from metarec.meta.maml import MAML
from metarec.meta.spec import InnerLoop
from metarec.models.scorer import Params


class MeLULocal(MAML):
    """MeLU's local update (Lee et al. 2019) on metarec's scorer: the first
    ``melu_frozen_layers`` layers play MeLU's embedding layers and stay fixed in the inner
    ("local") loop; the decision layers after them adapt. The outer ("global") update trains
    every layer, second order unless ``first_order``.

    MeLU embeds each user and item field, then runs a small MLP (the decision-making layers)
    on the concatenation; only that MLP adapts per user. Here the scorer's leading layers turn
    the (user, item) row into a hidden representation, so they take the embeddings' role.
    With the default scorer (3 layers) and ``melu_frozen_layers = 1`` the two upper layers
    adapt, where :class:`~metarec.meta.ANIL` adapts the last one: the two are the same
    mechanism at different depths, counted from the input here and from the output there.
    Tasks are whatever the sampler gives (categories, or users in a category with
    ``tasks.kind = "user"``, MeLU's setting); the loss is metarec's BCE, not MeLU's ratings MSE.

    Args:
        config: as :class:`MAML`, plus ``melu_frozen_layers`` (>= 1).

    Raises:
        ConfigError: (from :meth:`adapt` / :meth:`meta_loss`) no decision layer left.

    Example:
        >>> import torch
        >>> from metarec.config import MetaConfig, ModelConfig
        >>> from metarec.meta import Batch, MeLULocal
        >>> from metarec.models import init_params
        >>> g = torch.Generator().manual_seed(0)
        >>> params = init_params(8, ModelConfig(hidden=(16, 8)), generator=g)
        >>> x = torch.randn(5, 8, generator=g)
        >>> melu = MeLULocal(MetaConfig(inner_steps=2, inner_lr=0.5, melu_frozen_layers=1))
        >>> adapted = melu.adapt(params, Batch(x, (x[:, 0] > 0).float(), torch.ones(5)))
        >>> [name for name in params if torch.equal(adapted[name], params[name])]
        ['layers.0.weight', 'layers.0.bias']
    """

    def inner_loop(self, params: Params) -> InnerLoop:
        """The configured steps, rate and order, from layer ``melu_frozen_layers`` on."""
        c = self.config
        return InnerLoop(
            steps=c.inner_steps,
            lr=c.inner_lr,
            first_order=c.first_order,
            first_layer=c.melu_frozen_layers,
        )
