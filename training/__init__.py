"""Data loading, models, the DP mixed-precision trainer, checkpoints and evaluation."""
