"""Training: optimizers, LR schedules, gradient clipping, regularizers and the fit loop."""
