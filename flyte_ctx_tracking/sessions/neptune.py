"""The neptune integration (not implemented yet)."""

from .._placeholder import not_implemented

neptune_session = not_implemented("neptune_session")
neptune_init_run = not_implemented("neptune_init_run")
