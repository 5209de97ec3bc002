"""Token drop for ViTs (ViT-Shapley's removal, Covert et al. 2023): a patch is removed by leaving
its token out of the sequence instead of blending its pixels with a baseline.

A removal pass keeps a FIXED number of patch tokens, so every pass of a method has the same
shapes under jit: `keep` is (n_keep,) int patch indices (row-major over the H // p x W // p grid),
gathered after the patch and position embeddings; the class token (and DINOv2's registers) are
always kept. A pass over half the tokens costs about half the FLOPs (`pass_flops`).

* `TokenAccess`: what a ViT port exposes (`models.architectures.Encoders.tokens`; a
  `LoadedModel`'s `encode_fn.token_access`): encode with kept tokens, attention maps, patch size.
* `TokenScorer`: the explained function with token access, built ONCE per explicand by the
  explicand program (`token_scorer`) when a method's options ask for it; called as `f(x)` it is
  the ordinary f of pixels (all tokens kept), so it serves every method.
* `rise_tokens`, `occlusion_tokens`: the token-drop forms of RISE and Occlusion, streamed by
  `batching.sum_forward_terms` like the blend forms. Their patch maps are shown per pixel by
  nearest upsampling (`to_pixels`: each patch's value on its p x p pixels; pixels right of or
  below the last whole patch, which the ViT never sees, get 0).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax import _checks, batching
from cocoa_jax.attribution_methods import _perturbation as P

__all__ = ["REMOVALS", "TokenAccess", "TokenScorer", "KeptEncoder", "token_scorer", "kept_encoder", "patch_grid", "kept_count", "draw_kept",
           "kept_masks", "length_buckets", "padded_kept", "to_pixels", "rise_tokens", "occlusion_tokens", "size_counts", "kernel_shap_tokens", "pass_flops"]

# How a perturbation method removes a patch: blend its pixels with the baseline (the default,
# every encoder) or drop its token (ViTs, f a `TokenScorer`).
REMOVALS = ("blend", "token_drop")


@dataclasses.dataclass(frozen=True)
class TokenAccess:
    """A ViT port's token-level functions (pixels in [0, 1], the model's normalisation inside).

    encode(params, x (M, H, W, C), keep (M, n_keep) int or None, valid (M, n_keep) bool or None)
      -> (M, D); valid False marks a padding slot no token attends to (`padded_kept`);
    attention(params, x (M, H, W, C)) -> (layers, M, heads, L, L) softmax weights of every block,
      L = prefix + (H // p) (W // p) tokens ordered [class, registers, patches];
    patch_size: p; prefix: tokens before the patches (1 + registers).
    """

    encode: Callable
    attention: Callable
    patch_size: int
    prefix: int = 1


@dataclasses.dataclass(frozen=True)
class TokenScorer:
    """The explained function of ONE image with token access.

    score(x (H, W, C), keep (n_keep,) int or None) -> () or (K,); attention(x) -> (layers, heads,
    L, L). `scorer(x)` is `score(x, None)`, the ordinary f (all tokens kept).
    """

    score: Callable
    attention: Callable
    patch_size: int
    prefix: int = 1

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.score(x, None)


@dataclasses.dataclass(frozen=True)
class KeptEncoder:
    """A batch encoder on kept tokens, what token-drop insertion/deletion evaluates:
    encode(x (B, H, W, C), keep (B, n_keep) int, valid (B, n_keep) bool or None) -> (B, D);
    patch_size: p; prefix: tokens before the patches (class + registers)."""

    encode: Callable
    patch_size: int
    prefix: int = 1


def kept_encoder(access: TokenAccess, params: Any) -> KeptEncoder:
    """`access.encode` with `params` bound, as a `KeptEncoder`."""
    return KeptEncoder(lambda x, keep, valid=None: access.encode(params, x, keep, valid), int(access.patch_size),
                       int(access.prefix))


def token_scorer(access: TokenAccess, params: Any, target: Callable) -> TokenScorer:
    """The `TokenScorer` of `target(encode(x))`: target maps ONE representation (D,) to () or (K,)."""
    if not isinstance(access, TokenAccess):
        raise TypeError(f"`access` must be a token_drop.TokenAccess, got {type(access).__name__}")

    def score(x, keep):
        reps = access.encode(params, x[None], None if keep is None else keep[None])
        return target(reps[0])

    return TokenScorer(score, lambda x: access.attention(params, x[None])[:, 0], int(access.patch_size),
                       int(access.prefix))


def require_scorer(f, method: str) -> TokenScorer:
    """`f` must be a `TokenScorer` (what token-level options need): a clear error otherwise."""
    if not isinstance(f, TokenScorer):
        raise TypeError(f"{method} needs `f` with token access (a token_drop.TokenScorer, which the explicand "
                        f"program builds from a ViT's encode_fn: dino_vit, dinov2_vit, clip_vit), got "
                        f"{type(f).__name__}")
    return f


def check_removal(removal) -> str:
    return _checks.check_choice("removal", removal, REMOVALS)


def patch_grid(image_size, patch_size: int) -> tuple[int, int]:
    """(H // p, W // p): the token grid of an (H, W) image (the conv drops remainder pixels)."""
    grid = (int(image_size[0]) // int(patch_size), int(image_size[1]) // int(patch_size))
    if min(grid) < 1:
        raise ValueError(f"the image {tuple(image_size)[:2]} is smaller than one patch of {patch_size} px")
    return grid


def kept_count(n_patches: int, keep_prob: float) -> int:
    """round(keep_prob * n_patches), at least 1 and at most n_patches."""
    return int(min(max(round(float(keep_prob) * n_patches), 1), n_patches))


def draw_kept(key: jax.Array, n_patches: int, n_keep: int) -> jax.Array:
    """(n_keep,) int32 sorted patch indices: the first n_keep of a uniform random permutation
    (every subset of n_keep patches equally likely)."""
    return jnp.sort(jax.random.permutation(key, n_patches)[:n_keep]).astype(jnp.int32)


def kept_masks(keep: jax.Array, n_patches: int, dtype=jnp.float32) -> jax.Array:
    """(B, n_keep) indices -> (B, n_patches) {0, 1}: 1 where a patch is kept."""
    return jnp.sum(jax.nn.one_hot(keep, n_patches, dtype=dtype), axis=-2)


def to_pixels(patch_maps: jax.Array, patch_size: int, image_size) -> jax.Array:
    """(..., gh, gw) -> (..., H, W): each patch's value on its p x p pixels (nearest upsampling);
    pixels beyond the last whole patch get 0."""
    p = int(patch_size)
    up = jnp.repeat(jnp.repeat(patch_maps, p, axis=-2), p, axis=-1)
    pad = [(0, 0)] * (up.ndim - 2) + [(0, int(image_size[0]) - up.shape[-2]), (0, int(image_size[1]) - up.shape[-1])]
    return jnp.pad(up, pad)


# Token-drop insertion/deletion pads each pass's kept tokens up to one of at most this many
# lengths (one encoder program each): 8 cost ~10% more tokens than exact lengths at 50 steps.
EVAL_BUCKETS = 8


def length_buckets(counts, n_buckets: int = EVAL_BUCKETS, prefix: int = 1) -> np.ndarray:
    """Sorted padded lengths for passes keeping `counts` patch tokens: at most `n_buckets` of the
    distinct counts (the largest always), a pass padded up to the smallest length >= its count.
    Chosen to minimise the tokens of all passes, sum_i (prefix + length(count_i)), by a dynamic
    programme over the distinct counts (exact); n_buckets >= distinct counts: no padding."""
    values, weights = np.unique(np.asarray(counts, np.int64), return_counts=True)
    n_buckets = _checks.check_positive_int("n_buckets", n_buckets)
    m = len(values)
    if m <= n_buckets:
        return values
    tail = np.concatenate([[0], np.cumsum(weights)])  # passes among values[:j]: tail[j]
    cost = np.full((n_buckets + 1, m + 1), np.inf)  # cost[b, j]: values[:j] in b buckets
    cut = np.zeros((n_buckets + 1, m + 1), np.int64)
    cost[0, 0] = 0.0
    for b in range(1, n_buckets + 1):
        for j in range(1, m + 1):
            # the last bucket holds values[i:j], padded to values[j - 1]
            options = cost[b - 1, :j] + (prefix + values[j - 1]) * (tail[j] - tail[:j])
            cut[b, j] = int(np.argmin(options))
            cost[b, j] = options[cut[b, j]]
    b, j, ends = int(np.argmin(cost[:, m])), m, []
    while j > 0:
        ends.append(values[j - 1])
        j, b = cut[b, j], b - 1
    return np.asarray(ends[::-1], np.int64)


def padded_kept(kept: jax.Array, length: int) -> tuple[jax.Array, jax.Array]:
    """(B, P) bool kept patches, at most `length` per row -> (keep (B, length) int32, valid (B,
    length) bool): the kept patches in increasing order, then padding slots (other patches'
    indices, so every token is finite) marked valid False."""
    keep = jnp.argsort(~kept, axis=-1, stable=True)[:, :length].astype(jnp.int32)
    return keep, jnp.take_along_axis(kept, keep, axis=-1)


def _scores_of(f: TokenScorer, x):
    # The encoder sees x once per chunk (unbatched under vmap) and a batch of kept-token lists.
    return lambda keep: f.score(x, keep)


def rise_tokens(f: Callable, x: jax.Array, key: jax.Array, *, n_masks: int, keep_prob: float = 0.5,
                batch_size: int | None = None, mesh: jax.sharding.Mesh | None = None,
                centered: bool = False) -> jax.Array:
    """RISE by token drop: mask i keeps n_keep = round(keep_prob * P) of the P patches, the first
    n_keep of a random permutation drawn from `jax.random.split(key, n_masks)[i]`; the map is
    sum_i s_i m_i / (n_masks * n_keep / P) per patch (n_keep / P = E[m], the exact keep rate),
    or with `centered` sum_i (s_i - mean s) m_i / ((n_masks - 1) n_keep / P).

    f: a `TokenScorer`. Returns (H, W), or (K, H, W) for K targets, patch values upsampled
    nearest (`to_pixels`).
    """
    f = require_scorer(f, "RISE with removal='token_drop'")
    x = P.check_input(x, rank=3)
    gh, gw = patch_grid(x.shape[:2], f.patch_size)
    n_patches = gh * gw
    n_keep = kept_count(n_patches, keep_prob)
    k = P.num_targets(f, x)
    keys = jax.random.split(key, n_masks)

    def terms(keep, _inputs, scores, valid):
        masks = kept_masks(keep, n_patches, x.dtype) * valid[:, None].astype(x.dtype)
        scores = P.as_columns(scores) * valid[:, None].astype(x.dtype)
        return scores.T @ masks, jnp.sum(scores, axis=0), jnp.sum(masks, axis=0)

    weighted, score_sum, mask_sum = batching.sum_forward_terms(
        _scores_of(f, x), n_masks, P.check_batch_size(batch_size), mesh,
        lambda idx: jax.vmap(lambda kk: draw_kept(kk, n_patches, n_keep))(keys[idx]), lambda keep: keep, terms)
    rate = n_keep / n_patches
    if centered:
        maps = (weighted - (score_sum / n_masks)[:, None] * mask_sum) / ((n_masks - 1) * rate)
    else:
        maps = weighted / (n_masks * rate)
    maps = to_pixels(maps.reshape(-1, gh, gw), f.patch_size, x.shape[:2])
    return maps[0] if k is None else maps


def occlusion_starts(grid: int, window: int, stride: int) -> np.ndarray:
    """Window starts along one axis of the patch grid: multiples of the stride while the window
    fits, plus grid - window when that leaves patches uncovered (every window whole, so every
    pass drops the same number of tokens)."""
    starts = list(range(0, grid - window + 1, stride))
    if starts[-1] + window < grid:
        starts.append(grid - window)
    return np.asarray(starts, np.int32)


def _patch_pair(name: str, value, patch_size: int, grid) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value, value)
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0 for v in value)):
        raise ValueError(f"`{name}` must be a positive integer or an (h, w) pair of pixels, got {value!r}")
    # pixels -> whole patches, at least one (Occlusion's pixel default, 1/8 of the image, maps too)
    out = tuple(max(1, int(round(int(v) / patch_size))) for v in value)
    if out[0] > grid[0] or out[1] > grid[1]:
        raise ValueError(f"`{name}` {tuple(value)} must not exceed the patch grid {grid} x {patch_size} px")
    return out


def occlusion_tokens(f: Callable, x: jax.Array, *, window=None, stride=None, batch_size: int | None = None,
                     mesh: jax.sharding.Mesh | None = None) -> jax.Array:
    """Occlusion by token drop: per patch, the mean of f(x) - f(x without the window's tokens) over
    the windows covering it. Windows are whole blocks of patches (`occlusion_starts`), so each
    pass keeps P - window patches.

    window, stride: pixels (an int or an (h, w) pair), rounded to whole patches of p px (at least
    one); window None: max(1, grid // 8) patches per side; stride None: the window. Returns (H, W), or (K, H, W),
    upsampled nearest from patches (`to_pixels`).
    """
    f = require_scorer(f, "Occlusion with removal='token_drop'")
    x = P.check_input(x, rank=3)
    p = f.patch_size
    grid = patch_grid(x.shape[:2], p)
    win = (tuple(max(1, g // 8) for g in grid) if window is None else _patch_pair("window", window, p, grid))
    step = win if stride is None else _patch_pair("stride", stride, p, grid)
    rows, cols = occlusion_starts(grid[0], win[0], step[0]), occlusion_starts(grid[1], win[1], step[1])
    dropped = np.zeros((len(rows) * len(cols),) + grid, bool)
    for i, (r, c) in enumerate((r, c) for r in rows for c in cols):
        dropped[i, r:r + win[0], c:c + win[1]] = True
    dropped = dropped.reshape(len(dropped), -1)  # (n, P)
    keep = np.stack([np.flatnonzero(~d) for d in dropped]).astype(np.int32) if win != grid else None
    if keep is None:
        raise ValueError(f"`window` must leave at least one patch: it covers the whole {grid} patch grid")
    k = P.num_targets(f, x)
    reference = P.as_columns(f(x)[None])[0]
    keep_j, dropped_j = jnp.asarray(keep), jnp.asarray(dropped, x.dtype)

    def terms(idx, _inputs, scores, valid):
        drops = (reference - P.as_columns(scores)) * valid[:, None].astype(x.dtype)
        return drops.T @ dropped_j[idx[:, 0]]

    # rows carry the window index (column 0); the kept tokens are looked up from it
    total = batching.sum_forward_terms(
        lambda i: f.score(x, keep_j[i[0]]), len(dropped), P.check_batch_size(batch_size), mesh,
        lambda idx: idx[:, None].astype(jnp.int32), lambda idx: idx, terms)
    maps = total / jnp.asarray(dropped.sum(0), x.dtype)
    maps = to_pixels(maps.reshape((-1,) + grid), p, x.shape[:2])
    return maps[0] if k is None else maps


# Token-drop KernelSHAP compiles one encoder program per coalition size (M - 1 of them).
MAX_TOKEN_SHAP_FEATURES = 65


def size_counts(n_features: int, n_draws: int) -> np.ndarray:
    """(M - 1,) coalitions of each size k = 1..M-1 among `n_draws`: n_draws x p(k), p(k) ∝
    (M - 1) / (k (M - k)) (KernelSHAP's size distribution), rounded by largest remainder (ties:
    the smaller size) so they sum to n_draws. Sizes stratified, not drawn: each size is a
    fixed token count, one static shape."""
    k = np.arange(1, n_features)
    share = (n_features - 1) / (k * (n_features - k))
    exact = n_draws * share / share.sum()
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:n_draws - counts.sum()]] += 1
    return counts


def _feature_blocks(grid, superpixel, patch_size: int):
    """(M, s_h s_w) patch indices of each feature: blocks of whole patches (`superpixel` pixels
    rounded to patches, at least one), row-major; the grid must divide into them."""
    block = _patch_pair("superpixel", superpixel, patch_size, grid)
    if grid[0] % block[0] or grid[1] % block[1]:
        raise ValueError(f"`superpixel` of {block} patches with removal='token_drop' must divide the patch grid "
                         f"{grid}")
    rows, cols = grid[0] // block[0], grid[1] // block[1]
    ids = np.arange(grid[0] * grid[1]).reshape(rows, block[0], cols, block[1]).transpose(0, 2, 1, 3)
    return ids.reshape(rows * cols, block[0] * block[1]).astype(np.int32), (rows, cols), block


def kernel_shap_tokens(f: Callable, x: jax.Array, key: jax.Array, *, n_samples: int, solve: Callable,
                       superpixel=1, batch_size: int | None = None,
                       mesh: jax.sharding.Mesh | None = None) -> jax.Array:
    """KernelSHAP by token drop: a feature is a block of whole patches (`superpixel` pixels
    rounded to patches), turning it off drops its tokens; "all off" keeps no patch token.

    Samples 0 and 1 are the anchors (every feature / none); the n_samples - 2 others are
    stratified by size (`size_counts`), each size one static token count: sample i of size k
    keeps the first k features of a random permutation from `jax.random.split(key, n_samples)[i]`.
    solve(gram (M+1, M+1), moments (M+1, K'), delta (K',)) -> (M, K'): KernelSHAP's regression
    (`kernel_shap` passes `solve_anchored`: Captum's soft anchors, or efficient's constraint).
    One encoder program per size, so M is at most
    `MAX_TOKEN_SHAP_FEATURES` (65): at 224 px, ViT-S/14's 16 x 16 patches need superpixel >= 28
    px (8 x 8 features), ViT-B/16's 14 x 14 need >= 32 px (7 x 7).
    Returns (H, W) or (K, H, W), feature values on their patches' pixels (`to_pixels`).
    """
    f = require_scorer(f, "KernelSHAP with removal='token_drop'")
    x = P.check_input(x, rank=3)
    grid = patch_grid(x.shape[:2], f.patch_size)
    blocks, feature_grid, block = _feature_blocks(grid, superpixel, f.patch_size)
    m = blocks.shape[0]
    if not 2 <= m <= MAX_TOKEN_SHAP_FEATURES:
        raise ValueError(f"`superpixel` with removal='token_drop' gives {m} features (blocks of {block} patches on "
                         f"the {grid} patch grid); it needs 2..{MAX_TOKEN_SHAP_FEATURES} (one encoder program per "
                         f"coalition size): use larger superpixels")
    n_samples = _checks.check_positive_int("n_samples", n_samples)
    if n_samples < 3:
        raise ValueError(f"`n_samples` must be >= 3 (two anchors + random coalitions), got {n_samples}")
    batch_size = P.check_batch_size(batch_size)
    k = P.num_targets(f, x)
    ends = P.as_columns(jnp.stack([f(x), f.score(x, jnp.zeros((0,), jnp.int32))]))  # (2, K')
    delta = ends[0] - ends[1]
    keys = jax.random.split(key, n_samples)
    blocks_j = jnp.asarray(blocks)

    def stats(feats, _keep, scores, valid):
        z = kept_masks(feats, m, x.dtype) * valid[:, None].astype(x.dtype)
        a = jnp.concatenate([valid[:, None].astype(x.dtype), z], axis=1)
        return a.T @ a, a.T @ ((P.as_columns(scores) - ends[1]) * valid[:, None].astype(x.dtype))

    gram = jnp.zeros((m + 1, m + 1), x.dtype)
    moments = jnp.zeros((m + 1, ends.shape[1]), x.dtype)
    start = 2
    for size, count in zip(range(1, m), size_counts(m, n_samples - 2)):
        if count == 0:
            continue
        feats_of = lambda idx, size=size: jax.vmap(lambda kk: jax.random.permutation(kk, m)[:size])(keys[idx])
        tokens_of = lambda feats: jnp.sort(blocks_j[feats].reshape(feats.shape[0], -1), axis=-1)
        g, mo = batching.sum_forward_terms(_scores_of(f, x), start + int(count), batch_size, mesh,
                                           lambda idx, fo=feats_of: fo(idx).astype(jnp.int32), tokens_of, stats,
                                           start=start)
        gram, moments, start = gram + g, moments + mo, start + int(count)
    phi = solve(gram, moments, delta)  # (M, K')
    patch_values = jnp.zeros((grid[0] * grid[1], phi.shape[1]), x.dtype).at[blocks.reshape(-1)].set(
        jnp.repeat(phi, blocks.shape[1], axis=0))
    maps = to_pixels(jnp.moveaxis(patch_values, -1, 0).reshape((-1,) + grid), f.patch_size, x.shape[:2])
    return maps[0] if k is None else maps


def pass_flops(fn: Callable, *args) -> float:
    """FLOPs of one call `fn(*args)` by XLA's cost analysis of the compiled program."""
    analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0]
    return float(analysis["flops"])
