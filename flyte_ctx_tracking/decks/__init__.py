"""HTML for Flyte Decks: functions from data to markup, and the styles they share.

Nothing here reads flytekit, a backend or the session core; adding a deck to the running task is
:func:`flyte_ctx_tracking.add_deck`'s job.
"""
