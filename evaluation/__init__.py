"""Evaluation: perplexity, lm-eval accuracy and before/after comparison grids."""
