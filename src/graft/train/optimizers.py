"""Build the configured optimizer with the book's hyperparameters, mapped onto PyTorch.

The names are the book's (Hands-On ML ch. 11), not torch's class names, because three of them
are the same torch class: ``sgd``, ``momentum`` and ``nag`` are all ``torch.optim.SGD``. The
mapping is explicit for every knob, since torch's own defaults differ from the book's (RMSProp
``alpha`` 0.99 vs rho 0.9, eps 1e-8 vs Keras 1e-7) and a silent default would break parity.

Where torch's update rule is not the book's equation (the tests check each against a numpy
implementation of the rule torch runs):

* momentum: torch keeps v <- beta*v + g and steps theta <- theta - lr*v; the book keeps
  m <- beta*m - lr*g and steps theta <- theta + m. With a constant LR, m = -lr*v and the
  trajectories are identical; under an LR schedule torch rescales the whole velocity when the
  LR changes, the book only the new gradient.
* nag: torch's parameter is the book's look-ahead point theta + beta*m, where the book measures
  the gradient. Same algorithm, different bookkeeping.
* adagrad, rmsprop, adam, nadam: torch adds eps OUTSIDE the square root (g / (sqrt(s) + eps)),
  the book writes it inside (g / sqrt(s + eps)); Adam's eps is added after bias correction.
  Only matters while sqrt(s) is of the order of eps.
* adamax: torch folds eps into the infinity norm, u <- max(beta2*u, |g| + eps).
* nadam: torch implements Dozat's schedule with momentum decay 0.004 (as Keras does).

Weight decay: only ``adamw`` takes ``weight_decay`` (decoupled: theta <- theta*(1 - lr*wd)).
Passing it to any other torch optimizer would add wd*theta to EVERY gradient, biases and
BatchNorm included, which is neither the book's L2 (a loss penalty on kernels, see
``graft.train.regularizers``) nor AdamW's decay, so it is refused rather than passed on.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from graft.config import OptimizerConfig
from graft.errors import ConfigError, TrainingError

ParamsOrGroups = Iterable[nn.Parameter] | Iterable[dict[str, Any]]


def build_optimizer(
    param_groups: ParamsOrGroups, cfg: OptimizerConfig, lr: float
) -> torch.optim.Optimizer:
    """Return the optimizer ``cfg.name`` over ``param_groups`` with default learning rate ``lr``.

    ``param_groups`` is either parameters or torch-style group dicts; a group that carries its
    own ``"lr"`` keeps it (finetuning gives the unfrozen backbone a lower LR than the new head),
    the others get ``lr``. ``lr`` is an argument rather than ``cfg.lr`` because the caller scales
    it (finetune phases' ``lr_scale``, the linear scaling rule for multi-worker batches).
    """
    if lr <= 0:
        raise ConfigError(f"learning rate must be > 0, got {lr}; set optimizer.lr to a value > 0")
    if cfg.weight_decay > 0 and cfg.name != "adamw":
        raise ConfigError(
            f"optimizer.weight_decay={cfg.weight_decay} is only applied by 'adamw' (decoupled "
            f"decay); with '{cfg.name}' use optimizer.name=adamw, or set optimizer.weight_decay=0 "
            "and use regularization.l2 for an L2 penalty on the kernels"
        )
    params: list[Any] = list(param_groups)
    if not params:
        raise TrainingError(
            "the optimizer got no parameters: every layer is frozen; make at least one layer "
            "trainable (e.g. a phase with trainable: head)"
        )

    name = cfg.name
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.0)
    if name in ("momentum", "nag"):
        if cfg.momentum <= 0:
            raise ConfigError(
                f"optimizer '{name}' needs optimizer.momentum > 0 (got {cfg.momentum}); "
                "set it (the book uses 0.9) or use optimizer.name=sgd"
            )
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, nesterov=name == "nag")
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, eps=cfg.eps)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=cfg.rho, eps=cfg.eps, momentum=0.0)
    betas = (cfg.beta1, cfg.beta2)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, eps=cfg.eps)
    if name == "adamax":
        return torch.optim.Adamax(params, lr=lr, betas=betas, eps=cfg.eps)
    if name == "nadam":
        return torch.optim.NAdam(params, lr=lr, betas=betas, eps=cfg.eps)
    if name == "adamw":
        return torch.optim.AdamW(
            params, lr=lr, betas=betas, eps=cfg.eps, weight_decay=cfg.weight_decay
        )
    raise ConfigError(f"unknown optimizer '{name}'")  # unreachable while the Literal is in sync
