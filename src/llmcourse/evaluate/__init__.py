"""Evaluating language models: metrics, a harness over the course checkpoints, and pitfalls."""
