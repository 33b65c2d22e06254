"""Training presets: the book's practical-guideline tables (Hands-On ML ch. 11, T19) as data.

Each preset is a *partial* config (model + pretrain/finetune keys) over the schema in
``graft.config``. ``load_config`` lays it over the base preset YAML (``default``/``tiny``) and
under the user's file and ``--set`` overrides, so precedence is::

    schema defaults < base preset YAML < training_preset < user YAML < --set

Choose one with ``training_preset: <name>`` in a config file or ``--set training_preset=<name>``.
Where the table offers a choice the preset takes one and says why:

* optimizer "NAG or AdamW": AdamW (its LR default, 1e-3, needs no retuning); the
  self-normalizing table names NAG only, with Keras' SGD default LR 0.01;
* schedule "performance scheduling or 1cycle": performance (``plateau``), which works for any
  run length (1cycle needs a known step count and an LR from the LR finder). Its patience (2)
  sits below early stopping's (4), so the LR is lowered before a phase is stopped.

This module is data only (no import of ``graft.config``): ``tests/unit/test_presets.py``
validates every preset against the schema.
"""

from __future__ import annotations

from typing import Any

_PERFORMANCE_SCHEDULE: dict[str, Any] = {
    "name": "plateau",
    "plateau_factor": 0.5,
    "plateau_patience": 2,
}
_EARLY_STOPPING: dict[str, Any] = {
    "enabled": True,
    "monitor": "val_loss",
    "patience": 4,
    "restore_best": True,
}
_ADAMW: dict[str, Any] = {"name": "adamw", "lr": 1e-3}


def _stages(train: dict[str, Any]) -> dict[str, Any]:
    """The same training keys for pretrain and finetune (FinetuneConfig extends TrainConfig)."""
    return {"pretrain": train, "finetune": train}


def _default_train() -> dict[str, Any]:
    return {
        "optimizer": dict(_ADAMW),
        "schedule": dict(_PERFORMANCE_SCHEDULE),
        "early_stopping": dict(_EARLY_STOPPING),
    }


TRAINING_PRESETS: dict[str, dict[str, Any]] = {
    # Default DNN configuration, shallow: He, ReLU, no normalization, early stopping,
    # AdamW, performance scheduling.
    "default_shallow": {
        "model": {
            "init": "he_normal",
            "activation": {"name": "relu"},
            "batch_norm": {"enabled": False},
        },
        **_stages(_default_train()),
    },
    # Default DNN configuration, deep: He, Swish (SiLU = Swish with beta 1), batch norm.
    "default_deep": {
        "model": {
            "init": "he_normal",
            "activation": {"name": "silu"},
            "batch_norm": {"enabled": True, "placement": "before_activation"},
        },
        **_stages(_default_train()),
    },
    # Self-normalizing net: LeCun, SELU, no normalization, alpha dropout if any, NAG,
    # performance scheduling; no L1/L2/max-norm (they break self-normalization).
    "self_normalizing": {
        "model": {
            "family": "mlp",
            "init": "lecun_normal",
            "activation": {"name": "selu"},
            "batch_norm": {"enabled": False},
            "dropout": {"kind": "alpha"},
        },
        **_stages(
            {
                "optimizer": {"name": "nag", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0},
                "schedule": dict(_PERFORMANCE_SCHEDULE),
                "regularization": {"l1": 0.0, "l2": 0.0, "max_norm": None},
                "early_stopping": dict(_EARLY_STOPPING),
            }
        ),
    },
    # Exception 2, low latency: a fast activation (ReLU), no batch norm and no dropout layers
    # (Graft's export does not fold BN yet, so BN would cost inference time).
    "low_latency": {
        "model": {
            "init": "he_normal",
            "activation": {"name": "relu"},
            "batch_norm": {"enabled": False},
            "dropout": {"kind": "standard", "rate": 0.0, "input_rate": 0.0},
        },
        **_stages(_default_train()),
    },
    # Exception 3, risk-sensitive: the default shallow recipe plus hidden-layer dropout, which
    # MC dropout (graft.nn.mc_dropout) samples at evaluation for probabilities and uncertainty.
    "risk_sensitive": {
        "model": {
            "init": "he_normal",
            "activation": {"name": "relu"},
            "batch_norm": {"enabled": False},
            "dropout": {"kind": "standard", "rate": 0.2},
        },
        **_stages(_default_train()),
    },
}
