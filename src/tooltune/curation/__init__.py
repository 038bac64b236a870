"""Data curation (lecture section 12): rebalancing, k-fold training, active selection, annotation round trip."""
