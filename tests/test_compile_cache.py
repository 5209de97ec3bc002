"""The persistent compilation cache every command turns on (`cocoa_jax.compile_cache`)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from cocoa_jax import compile_cache as cc

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- where it lives


def test_user_dir_xdg_then_home():
    assert cc.user_dir({"XDG_CACHE_HOME": "/x/cache", "HOME": "/h"}) == "/x/cache/cocoa-jax/jax"
    assert cc.user_dir({"HOME": "/h"}) == "/h/.cache/cocoa-jax/jax"
    # A relative XDG_CACHE_HOME is invalid per the XDG spec: ignored.
    assert cc.user_dir({"XDG_CACHE_HOME": "rel/cache", "HOME": "/h"}) == "/h/.cache/cocoa-jax/jax"
    assert cc.user_dir({"XDG_CACHE_HOME": "", "HOME": "/h"}) == "/h/.cache/cocoa-jax/jax"


def test_resolve_order(tmp_path):
    env = {"HOME": "/h", "XDG_CACHE_HOME": "/x"}
    assert cc.resolve(None, env) == "/x/cocoa-jax/jax"
    assert cc.resolve(None, {**env, "JAX_COMPILATION_CACHE_DIR": "/j"}) == "/j"
    assert cc.resolve(None, {**env, "JAX_COMPILATION_CACHE_DIR": "/j", cc.ENV_DIR: "/c"}) == "/c"
    assert cc.resolve(str(tmp_path / "flag"), {**env, cc.ENV_DIR: "/c"}) == str(tmp_path / "flag")
    assert cc.resolve("~/d", env) == os.path.join(os.path.expanduser("~"), "d")
    assert cc.resolve("rel", env) == os.path.abspath("rel")


def test_none_turns_it_off():
    env = {"HOME": "/h"}
    assert cc.resolve("none", env) is None
    assert cc.resolve("NONE", {**env, cc.ENV_DIR: "/c"}) is None
    assert cc.resolve(None, {**env, cc.ENV_DIR: "none"}) is None
    assert cc.resolve("/d", {**env, cc.ENV_DIR: "none"}) == "/d"  # the flag wins over the variable
    off = cc.settings(None)
    assert off == {"jax_enable_compilation_cache": False, "jax_compilation_cache_dir": None}


def test_settings_lock_and_thresholds(monkeypatch):
    for name in cc._JAX_ENV.values():
        monkeypatch.delenv(name, raising=False)
    on = cc.settings("/d")
    assert on["jax_compilation_cache_dir"] == "/d" and on["jax_enable_compilation_cache"] is True
    assert on["jax_persistent_cache_min_compile_time_secs"] == cc.MIN_COMPILE_TIME_SECS
    assert on["jax_compilation_cache_max_size"] == cc.MAX_SIZE_BYTES > 0  # > 0 turns on JAX's file lock
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "2")  # the user's own value wins
    assert "jax_persistent_cache_min_compile_time_secs" not in cc.settings("/d")
    later = cc.settings(None, later=True)  # sweep --compile-cache auto: on, directory set by the runner
    assert later["jax_enable_compilation_cache"] is True and later["jax_compilation_cache_dir"] is None


def test_flag_naming_a_file_is_refused(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        cc.check_flag(str(path))
    assert cc.check_flag("auto", allow_auto=True) == "auto"
    assert cc.check_flag("none") == "none"


def test_cli_flag_naming_a_file_is_one_line(tmp_path, capsys):
    from cocoa_jax.cli import main

    path = tmp_path / "file"
    path.write_text("x")
    assert main(["explain", "--compile-cache", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"cocoa-jax explain: error: --compile-cache {str(path)!r} is not a directory"]
    assert not (tmp_path / "out").exists()


def _python(code: str, env_extra: dict, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_") and k != cc.ENV_DIR}
    env.pop("XLA_FLAGS", None)
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def test_configure_imports_no_jax_and_jax_reads_it(tmp_path):
    """Before JAX loads (the console entry's case), the settings go through JAX's environment
    variables; JAX then starts with them."""
    out = _python(f"""
        import sys
        from cocoa_jax import compile_cache
        path = compile_cache.configure("explain", None)
        assert "jax" not in sys.modules, "configure imported jax"
        import jax
        print(path)
        print(jax.config.jax_compilation_cache_dir)
        print(jax.config.jax_compilation_cache_max_size, jax.config.jax_persistent_cache_min_compile_time_secs)
        compile_cache.configure("sweep", "auto")
        print(repr(jax.config.jax_compilation_cache_dir), jax.config.jax_enable_compilation_cache)
        compile_cache.configure("explain", "none")
        print(jax.config.jax_enable_compilation_cache)
        """, {"XDG_CACHE_HOME": str(tmp_path / "xdg")})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("\n")
    expected = str(tmp_path / "xdg" / "cocoa-jax" / "jax")
    assert lines[0] == expected and lines[1] == expected
    assert lines[2] == f"{cc.MAX_SIZE_BYTES} {cc.MIN_COMPILE_TIME_SECS}"
    assert lines[3] in ("None True", "'' True")  # auto: left for the runner to set
    assert lines[4] == "False"


# ----------------------------------------------------------------------------- it works


@pytest.fixture
def restore_jax_cache():
    import jax

    names = list(cc._JAX_ENV)
    saved = {name: getattr(jax.config, name) for name in names}
    yield
    for name, value in saved.items():
        jax.config.update(name, value)
    cc._reset_if_initialised(jax)


def test_second_compile_in_process_hits_the_cache(tmp_path, restore_jax_cache):
    import jax
    import jax.numpy as jnp
    from jax._src import monitoring

    cc.enable(str(tmp_path / "cache"))
    events = []

    def listen(event, **kwargs):
        events.append(event)

    monitoring.register_event_listener(listen)
    try:
        def f(x):
            return jnp.tanh(x @ x.T).sum() * 3.0 + 0.125  # a program no other test compiles

        x = jnp.ones((7, 5))
        first = float(jax.jit(f)(x))
        entries = sorted(p.name for p in (tmp_path / "cache").iterdir() if p.name.endswith("-cache"))
        assert entries, "nothing was written to the cache"
        assert "/jax/compilation_cache/cache_hits" not in events
        jax.clear_caches()  # forget the in-memory executable: the next call compiles or loads
        second = float(jax.jit(f)(x))
        assert second == first
        assert "/jax/compilation_cache/cache_hits" in events
        assert sorted(p.name for p in (tmp_path / "cache").iterdir() if p.name.endswith("-cache")) == entries
    finally:
        monitoring.unregister_event_listener(listen)


_WORKER = """
    import os, sys, time, warnings
    from cocoa_jax import compile_cache
    compile_cache.enable(sys.argv[1])
    import jax, jax.numpy as jnp
    from jax._src import monitoring
    hits = []
    monitoring.register_event_listener(lambda e, **k: hits.append(e) if e.endswith("cache_hits") else None)
    go = sys.argv[2]
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a damaged or half-written entry is a warning in JAX: fail on it
        for n in range(1, 13):
            f = jax.jit(lambda x, n=n: (jnp.sin(x * n) @ x.T).sum())
            f(jnp.ones((n + 3, 6))).block_until_ready()
    print(len(hits))
"""


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_two_processes_writing_one_cache_both_succeed(tmp_path):
    """Two processes compile the same 12 programs into one empty cache at the same moment; both
    succeed without warnings, and a third loads all 12 from the cache."""
    cache, go = str(tmp_path / "cache"), str(tmp_path / "go")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_") and k != cc.ENV_DIR}
    env.pop("XLA_FLAGS", None)
    code = textwrap.dedent(_WORKER)
    procs = [subprocess.Popen([sys.executable, "-c", code, cache, go], env=env, cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in procs:  # both have imported JAX and wait at the start line
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    open(go, "w").close()
    results = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, results):
        assert proc.returncode == 0, err
        assert "Error reading persistent compilation cache" not in err, err
    entries = [p for p in os.listdir(cache) if p.endswith("-cache")]
    assert len(entries) >= 12
    third = subprocess.run([sys.executable, "-c", code, cache, go], env=env, cwd=REPO, capture_output=True,
                           text=True, timeout=300)
    assert third.returncode == 0, third.stderr
    assert int(third.stdout.split()[-1]) >= 12, third.stdout  # every program loaded, none damaged
    assert sorted(p for p in os.listdir(cache) if p.endswith("-cache")) == sorted(entries)


# ----------------------------------------------------------------------------- entry cap


def _jax_cache_with(path, n):
    """A cache directory written by JAX's own LRU cache: entries k0 (oldest use) .. k{n-1}."""
    from jax._src.lru_cache import LRUCache

    cache = LRUCache(str(path), max_size=cc.MAX_SIZE_BYTES)
    for i in range(n):
        cache.put(f"k{i}", bytes([i]) * 100)
        time.sleep(0.002)  # distinct last-use stamps
    return cache


def _keys(path):
    return sorted(int(name[1:-len("-cache")]) for name in os.listdir(path) if name.endswith("-cache"))


def test_prune_removes_least_recently_used_entries_of_a_jax_cache(tmp_path):
    cache = _jax_cache_with(tmp_path, 12)
    cache.get("k0")  # k0 used last: kept; k1..k4 are the oldest now
    (tmp_path / "notes.txt").write_text("not an entry")
    assert cc.prune(str(tmp_path), max_entries=12) == 0 and len(_keys(tmp_path)) == 12
    removed = cc.prune(str(tmp_path), max_entries=10)  # 12 > 10: down to 0.8 x 10 = 8
    assert removed == 4 and _keys(tmp_path) == [0, 5, 6, 7, 8, 9, 10, 11]
    assert not any((tmp_path / f"k{i}-atime").exists() for i in (1, 2, 3, 4))
    assert (tmp_path / "notes.txt").exists()
    assert cache.get("k5") == bytes([5]) * 100 and cache.get("k2") is None  # JAX still reads what is kept


def test_prune_without_last_use_files_uses_mtime_and_missing_dir_is_zero(tmp_path):
    for i in range(5):
        path = tmp_path / f"k{i}-cache"
        path.write_bytes(b"x")
        os.utime(path, ns=(10**18 + i, 10**18 + i))
    assert cc.prune(str(tmp_path), max_entries=4) == 2 and _keys(tmp_path) == [2, 3, 4]
    assert cc.prune(str(tmp_path / "absent")) == 0


def test_prune_leaves_a_locked_cache_alone(tmp_path):
    _jax_cache_with(tmp_path, 6)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time, filelock
        with filelock.FileLock({str(tmp_path / '.lockfile')!r}):
            print("locked", flush=True)
            time.sleep(3600)  # held until the test kills it
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert cc.prune(str(tmp_path), max_entries=2, lock_timeout=0.2) == 0 and len(_keys(tmp_path)) == 6
    finally:
        holder.kill()
        holder.wait()
    assert cc.prune(str(tmp_path), max_entries=2) == 5


def test_enable_prunes_the_directory(tmp_path, monkeypatch, restore_jax_cache):
    for name in cc._JAX_ENV.values():
        monkeypatch.delenv(name, raising=False)
    _jax_cache_with(tmp_path, 7)
    monkeypatch.setattr(cc, "MAX_ENTRIES", 5)
    cc.enable(str(tmp_path))
    assert _keys(tmp_path) == [3, 4, 5, 6]
