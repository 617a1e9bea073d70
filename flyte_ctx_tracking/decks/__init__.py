"""HTML for Flyte Decks, and the one helper that adds a deck to the running task."""

from ._deck import add_deck, decks_enabled

__all__ = ["add_deck", "decks_enabled"]
