"""Dataset loaders (offline, deterministic) for cocoa-jax demos and evaluations."""
