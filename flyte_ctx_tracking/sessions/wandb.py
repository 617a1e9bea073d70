"""The wandb integration (not implemented yet)."""

from .._placeholder import not_implemented

wandb_session = not_implemented("wandb_session")
wandb_init = not_implemented("wandb_init")
