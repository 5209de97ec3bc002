"""The paper's use cases beyond its evaluation tables: explaining augmentations (Section 4.2)
and cross-modal localisation (Section 4.3). Each is a set of pure library functions; the
command-line front ends live in `cocoa_jax.commands`."""
