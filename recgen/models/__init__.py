"""Trainable sequential recommenders used as baselines (and possibly as retrievers)."""
