"""ANIL: almost no inner loop; only the head adapts to a task, the body is meta-learned.

Raghu, Raghu, Bengio and Vinyals, "Rapid Learning or Feature Reuse? Towards Understanding the
Effectiveness of MAML", ICLR 2020 (https://arxiv.org/abs/1909.09157).
"""

from __future__ import annotations

from metarec.errors import ConfigError
from metarec.meta.maml import MAML
from metarec.meta.spec import InnerLoop, n_layers
from metarec.models.scorer import Params


class ANIL(MAML):
    """ANIL (Raghu et al. 2020): MAML whose inner loop adapts the last ``anil_head_layers``
    scorer layers only; the body before them is fixed in the inner loop.

    Raghu et al. found that MAML's adaptation mostly changes the head while the body's
    features are reused as they are; freezing the body in the inner loop keeps the accuracy
    and makes the inner loop cheap: the body runs once per task, and the inner gradients
    reach only the head. The outer loop still trains every parameter: the body through the
    query loss and, second order, through how the head's adaptation depends on its features.

    Args:
        config: as :class:`MAML`, plus ``anil_head_layers`` (1: the output layer alone).

    Raises:
        ConfigError: (from :meth:`inner_loop`) more head layers than the scorer has.

    Example:
        >>> import torch
        >>> from metarec.config import MetaConfig, ModelConfig
        >>> from metarec.meta import ANIL, Batch, stack_tasks
        >>> from metarec.models import init_params
        >>> g = torch.Generator().manual_seed(0)
        >>> params = init_params(8, ModelConfig(hidden=(16, 8)), generator=g)
        >>> def rows(n):
        ...     x = torch.randn(n, 8, generator=g)
        ...     return Batch(x, (x[:, 0] > 0).float(), torch.ones(n))
        >>> anil = ANIL(MetaConfig(inner_steps=2, inner_lr=0.5, anil_head_layers=1))
        >>> adapted = anil.adapt(params, rows(5))
        >>> [name for name in params if not torch.equal(adapted[name], params[name])]
        ['layers.2.weight', 'layers.2.bias']
        >>> loss, grads = anil.meta_gradient(params, stack_tasks([(rows(5), rows(10))]))
        >>> bool(grads["layers.0.weight"].abs().sum() > 0)  # the body is meta-learned
        True
    """

    def inner_loop(self, params: Params) -> InnerLoop:
        """The configured steps, rate and order, on the last ``anil_head_layers`` layers."""
        depth, head = n_layers(params), self.config.anil_head_layers
        if head > depth:
            raise ConfigError(
                f"meta.anil_head_layers={head} but the scorer has {depth} layers; use at most "
                f"{depth} ({depth} adapts every layer, which is MAML)"
            )
        c = self.config
        return InnerLoop(
            steps=c.inner_steps, lr=c.inner_lr, first_order=c.first_order, first_layer=depth - head
        )
