"""Data curation (lecture section 12): rebalancing, k-fold training, active selection, annotation round trip."""

SCORES = ("mean", "min", "disagree", "loss")
"""How `data select --by` ranks dialogues (`tooltune.curation.select`); here, apart from the torch code that computes
them, so that the command line's choices cost nothing to list."""
