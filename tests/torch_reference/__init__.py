"""PyTorch reference models written for cocoa-jax's tests (not imported by the library)."""
