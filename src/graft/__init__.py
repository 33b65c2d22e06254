"""Graft: data-prep -> pretrain -> transfer-finetune -> tune -> evaluate -> export."""

__version__ = "0.1.0"
