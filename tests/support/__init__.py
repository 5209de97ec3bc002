"""Shared test helpers (tiny encoders, toy data, run hashes, image-mode references): modules, not tests."""
