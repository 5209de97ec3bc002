"""Runners of the official COCOA code (a checkout of suinleelab/cl-explainability, not shipped)."""
