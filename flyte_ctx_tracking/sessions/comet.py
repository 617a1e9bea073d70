"""The comet integration (not implemented yet)."""

from .._placeholder import not_implemented

comet_session = not_implemented("comet_session")
comet_ml_login = not_implemented("comet_ml_login")
