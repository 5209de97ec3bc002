"""Test-session settings: compiled programs go to a fresh cache of this session, not the
user's ~/.cache/cocoa-jax (the commands' default), so tests neither read nor leave entries there."""
import os
import tempfile

os.environ.setdefault("COCOA_JAX_CACHE_DIR", tempfile.mkdtemp(prefix="cocoa-jax-test-cache-"))
