"""Training utilities (self-supervised SimCLR) for the embedded default encoder."""
