"""Training: data sampling, losses, stages, checkpoints and the one runner."""
