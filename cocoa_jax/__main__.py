"""`python -m cocoa_jax ...` runs the `cocoa-jax` command line."""
import sys

from cocoa_jax.cli import main

if __name__ == "__main__":
    sys.exit(main())
