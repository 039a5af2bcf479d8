"""Prediction: next-observation generation, best-of-N verification, rollouts."""
