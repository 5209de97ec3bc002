"""`python -m cocoa_jax ...` runs the `cocoa-jax` command line."""
import sys

from cocoa_jax.cli import console_main

if __name__ == "__main__":
    sys.exit(console_main())
