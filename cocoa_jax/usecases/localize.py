"""Cross-modal localisation (paper Section 4.3): which pixels make an image look like a caption?

An image encoder and a text encoder map into one space (CLIP, or the shipped digits dual
encoder `cocoa_jax.models.digits_clip`). COCOA's corpus is the text embedding of the query
caption "This is a photo of a {name}", its foil the captions of other names (eq. 6); the
encoder explained is the image encoder. The two baselines are the corpus-only target (the
query caption, no foil) and the label-free target (the image's own representation). All three
are stacked into one `Target` so every encoder pass serves them all.

Measured on the digits dual encoder with a pointing game: a 2x2 grid of four held-out digits of
different classes (64x64; the image tower's global average pool accepts that size, so every
tile is seen at the 32x32 resolution it was trained at), a query naming one of them and the
nine other digits as foil. An attribution *points* at the queried tile when
  - `max`:  the pixel with the largest channel-mean attribution lies in it, and
  - `mass`: the tile holds the largest share of positive channel-mean attribution.
Chance is 1 / (number of tiles) = 0.25 for either score.

Everything here is a pure function: explicit PRNG keys, jit-compatible, vmapped over images.
Shapes: tiles and grid images NHWC; `T` tiles per grid, `K` stacked targets, `D` the embedding.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cocoa_jax import _checks, targets

QUERY_TEMPLATE = "This is a photo of a {}"   # the paper's corpus caption (Section 4.3)
TARGET_NAMES = ("cocoa", "corpus", "label_free")
TARGET_TITLES = {"cocoa": "COCOA", "corpus": "corpus only", "label_free": "label-free"}
GRID = (2, 2)


def query_caption(name: str, template: str = QUERY_TEMPLATE) -> str:
    """'dog' -> 'This is a photo of a dog'."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"`name` must be a non-empty string, got {name!r}")
    return template.format(name.strip())


# ---------------------------------------------------------------------------------------------
# Targets

def localization_target(image_rep, corpus_reps, foil_reps, similarity: str = "cosine") -> targets.Target:
    """The stacked target for ONE image: COCOA, corpus-only and label-free (`TARGET_NAMES`).

    image_rep: (D,) the image's own representation (label-free target); corpus_reps: (C, D)
    (e.g. the query caption's text embedding, C = 1); foil_reps: (F, D) (the other captions).
    Returns a Target with direction (3, D). Vmappable over images.
    """
    reps = dict(explicand_reps=image_rep, corpus_reps=corpus_reps, foil_reps=foil_reps, similarity=similarity)
    _checks.check_array("image_rep", image_rep, ndim=1)
    return targets.build_stacked(TARGET_NAMES, **reps)


def class_query_targets(image_reps, class_text_reps, queries, similarity: str = "cosine") -> targets.Target:
    """Per-image stacked targets when the query is one class of a closed set of captions.

    image_reps: (N, D); class_text_reps: (M, D), one caption embedding per class; queries: (N,)
    int class indices. Image i's corpus is class `queries[i]`'s caption, its foil the other M - 1
    captions. Returns a Target with direction (N, 3, D).
    """
    _checks.check_array("image_reps", image_reps, ndim=2)
    _checks.check_array("class_text_reps", class_text_reps, ndim=2)
    m = np.shape(class_text_reps)[0]
    if m < 2:
        raise ValueError(f"`class_text_reps` needs at least 2 classes (a query and a foil), got {m}")
    if np.shape(class_text_reps)[1] != np.shape(image_reps)[1]:
        raise ValueError(f"`class_text_reps` has dimension {np.shape(class_text_reps)[1]}, expected "
                         f"{np.shape(image_reps)[1]} to match `image_reps`")
    queries = jnp.asarray(queries)
    if queries.shape != (np.shape(image_reps)[0],) or not jnp.issubdtype(queries.dtype, jnp.integer):
        raise ValueError(f"`queries` must be ({np.shape(image_reps)[0]},) integers, got {queries.dtype} {queries.shape}")
    if _checks.is_concrete(queries) and queries.size and not (0 <= int(queries.min()) and int(queries.max()) < m):
        raise ValueError(f"`queries` must be class indices in 0..{m - 1}, got values in "
                         f"[{int(queries.min())}, {int(queries.max())}]")
    class_text_reps = jnp.asarray(class_text_reps)

    def one(rep, q):
        others = (q + 1 + jnp.arange(m - 1)) % m  # every class but q
        return localization_target(rep, class_text_reps[q][None], class_text_reps[others], similarity)

    return jax.vmap(one)(jnp.asarray(image_reps), queries)


# ---------------------------------------------------------------------------------------------
# Grid images

class Grids(NamedTuple):
    """A batch of grid images and what is where.

    images: (N, gh*h, gw*w, C); tile_labels: (N, T) class of each tile (row-major);
    tile_indices: (N, T) row of the source array each tile came from; query_tiles: (N,) the
    queried tile; query_labels: (N,) its class (= tile_labels[i, query_tiles[i]]).
    """

    images: jax.Array
    tile_labels: jax.Array
    tile_indices: jax.Array
    query_tiles: jax.Array
    query_labels: jax.Array


def compose_grid(tiles, grid: Sequence[int] = GRID) -> jax.Array:
    """(T, h, w, C) tiles -> (gh*h, gw*w, C) image, tiles placed row-major (T = gh*gw)."""
    gh, gw = _grid(grid)
    tiles = jnp.asarray(tiles)
    if tiles.ndim != 4 or tiles.shape[0] != gh * gw:
        raise ValueError(f"`tiles` must have shape ({gh * gw}, h, w, C) for grid {gh}x{gw}, got {tiles.shape}")
    _, h, w, c = tiles.shape
    return tiles.reshape(gh, gw, h, w, c).transpose(0, 2, 1, 3, 4).reshape(gh * h, gw * w, c)


def tile_map(image_size: Sequence[int], grid: Sequence[int] = GRID) -> np.ndarray:
    """(H, W) int32: the row-major tile index of every pixel. H, W must divide by the grid."""
    gh, gw = _grid(grid)
    height, width = (int(s) for s in image_size)
    if height % gh or width % gw or height <= 0 or width <= 0:
        raise ValueError(f"image size {height}x{width} must be positive and divisible by the grid {gh}x{gw}")
    rows = np.arange(height) // (height // gh)
    cols = np.arange(width) // (width // gw)
    return (rows[:, None] * gw + cols[None, :]).astype(np.int32)


def sample_grid(key: jax.Array, images: jax.Array, labels: jax.Array, *, grid: Sequence[int] = GRID,
                n_classes: int = 10, query_class: int | None = None) -> Grids:
    """ONE grid of T = gh*gw images of T different classes, and a query tile (all uniform).

    images: (N, h, w, C); labels: (N,) ints in 0..n_classes-1, every class present (checked by
    `sample_grids`). query_class: if given, the queried tile holds this class (the other
    tiles stay uniform over the remaining classes). Returns a `Grids` without the batch axis.
    """
    gh, gw = _grid(grid)
    t = gh * gw
    class_key, pick_key, query_key = jax.random.split(key, 3)
    query = jax.random.randint(query_key, (), 0, t)
    order = jax.random.permutation(class_key, n_classes)
    if query_class is not None:  # swap the query class into the queried slot
        at = jnp.argmax(order == query_class)
        order = order.at[at].set(order[query]).at[query].set(query_class)
    classes = order[:t]                                                               # (T,) distinct
    # A uniform image of each class: the argmax of uniform scores over that class's rows.
    scores = jax.random.uniform(pick_key, (t, labels.shape[0]))
    indices = jnp.argmax(jnp.where(labels[None, :] == classes[:, None], scores, -1.0), axis=1)
    image = compose_grid(images[indices], (gh, gw))
    return Grids(image, labels[indices], indices, query, classes[query])


def sample_grids(key: jax.Array, images, labels, n: int, *, grid: Sequence[int] = GRID,
                 n_classes: int = 10, query_class: int | None = None) -> Grids:
    """n grids; grid i uses `jax.random.split(key, n)[i]` (see `sample_grid`). Shapes as in `Grids`."""
    n = _checks.check_positive_int("n", n)
    gh, gw = _grid(grid)
    _checks.check_array("images", images, ndim=4)
    labels = np.asarray(labels)
    if labels.shape != (np.shape(images)[0],):
        raise ValueError(f"`labels` must have shape ({np.shape(images)[0]},), got {labels.shape}")
    if gh * gw > n_classes:
        raise ValueError(f"a {gh}x{gw} grid needs {gh * gw} different classes, only {n_classes} exist")
    missing = sorted(set(range(n_classes)) - set(labels.tolist()))
    if missing:
        raise ValueError(f"`labels` has no image of class(es) {missing}")
    if query_class is not None and not (isinstance(query_class, (int, np.integer)) and 0 <= query_class < n_classes):
        raise ValueError(f"`query_class` must be a class in 0..{n_classes - 1} or None, got {query_class!r}")
    fn = jax.jit(jax.vmap(functools.partial(sample_grid, grid=(gh, gw), n_classes=n_classes,
                                            query_class=None if query_class is None else int(query_class)),
                          in_axes=(0, None, None)))
    return fn(jax.random.split(key, n), jnp.asarray(images), jnp.asarray(labels, jnp.int32))


def _grid(grid) -> tuple[int, int]:
    if len(tuple(grid)) != 2:
        raise ValueError(f"`grid` must be (rows, cols), got {grid!r}")
    gh, gw = (_checks.check_positive_int("grid", int(g)) for g in grid)
    return gh, gw


# ---------------------------------------------------------------------------------------------
# Pointing game

def channel_mean(attribution: jax.Array) -> jax.Array:
    """(H, W, C) -> (H, W) mean over channels; (H, W) maps pass through."""
    attribution = jnp.asarray(attribution)
    if attribution.ndim == 3:
        return jnp.mean(attribution, axis=-1)
    if attribution.ndim != 2:
        raise ValueError(f"`attribution` must have shape (H, W) or (H, W, C), got {attribution.shape}")
    return attribution


def positive_mass_shares(attribution, grid: Sequence[int] = GRID, *, centre: bool = False) -> jax.Array:
    """(T,) share of the positive channel-mean attribution in each tile (zeros if none is positive).

    centre=True subtracts the map's mean first (RISE maps carry the mean score as an offset, which
    would otherwise make every pixel positive).
    """
    heat = channel_mean(attribution)
    if centre:
        heat = heat - jnp.mean(heat)
    tiles = jnp.asarray(tile_map(heat.shape, grid))
    masses = jax.ops.segment_sum(jnp.maximum(heat, 0.0).ravel(), tiles.ravel(), num_segments=int(np.prod(_grid(grid))))
    total = jnp.sum(masses)
    return jnp.where(total > 0, masses / jnp.where(total > 0, total, 1.0), 0.0)


def pointing_hits(attribution, query_tile, grid: Sequence[int] = GRID, *, centre: bool = False) -> jax.Array:
    """(2,) bools for ONE map (H, W) or (H, W, C): [max hit, mass hit] for tile `query_tile`.

    max: the largest channel-mean value lies in the queried tile (first pixel on ties).
    mass: the queried tile holds the largest share of positive mass (a map with no positive
    mass is a miss). `centre` as in `positive_mass_shares` (it never changes the max score).
    """
    heat = channel_mean(attribution)
    tiles = jnp.asarray(tile_map(heat.shape, grid))
    max_hit = tiles.ravel()[jnp.argmax(heat.ravel())] == query_tile
    shares = positive_mass_shares(heat, grid, centre=centre)
    mass_hit = (jnp.argmax(shares) == query_tile) & (jnp.max(shares) > 0)
    return jnp.stack([max_hit, mass_hit])


def batch_pointing_hits(attributions, query_tiles, grid: Sequence[int] = GRID, *, centre: bool = False) -> jax.Array:
    """attributions (N, K, H, W[, C]), query_tiles (N,) -> (N, K, 2) bools (see `pointing_hits`)."""
    one = functools.partial(pointing_hits, grid=grid, centre=centre)
    per_target = jax.vmap(one, in_axes=(0, None))
    return jax.vmap(per_target)(jnp.asarray(attributions), jnp.asarray(query_tiles))


# ---------------------------------------------------------------------------------------------
# Attributions

def make_explainer(encode_fn: Callable[[Any, jax.Array], jax.Array], method: str, options: dict | None = None,
                   *, batch_size: int | None = None, mesh=None) -> Callable:
    """`explain(params, images (N, H, W, C), target (N, K, D), keys (N,))`: every image (pixels in
    [0, 1] for a loaded model's `encode_fn`, which normalises inside) against the paper's baseline
    (`explicand_program.PAPER_BASELINE`, its GaussianBlur(21, 5)) for its K stacked targets, through
    the explicand program (`cocoa_jax.pipeline.attribute`), images sharded over `mesh` if given
    (e.g. `meshes.local_explicand_mesh(N)`). Returns (N, K, H, W[, C])."""
    from cocoa_jax import explicand_program, methods, pipeline

    options = methods.check_options(method, dict(options or {}))

    def explain(params, images, target, keys):
        blurred = explicand_program.apply_baseline(explicand_program.PAPER_BASELINE, jnp.asarray(images))
        return pipeline.attribute(encode_fn, params, images, blurred, target, method, keys, options=options,
                                  batch_size=batch_size, mesh=mesh)

    return explain


def method_keys(key: jax.Array, method: str, n: int) -> jax.Array:
    """Per-image keys of `method`: the explicand program's key rule (`explicand_program.method_keys`)."""
    from cocoa_jax import explicand_program

    return explicand_program.method_keys(key, method, n)


def centred(method: str) -> bool:
    """Whether the pointing game centres this method's maps (the table's `centred` flag: RISE's
    maps carry the mean score as an offset)."""
    from cocoa_jax import methods

    return methods.get(method).centred


def localize_grids(encode_fn, params, class_text_reps, grids: Grids, key: jax.Array,
                   method_options: dict[str, dict], *, similarity: str = "cosine",
                   batch_size: int | None = None, chunk: int | None = None, grid: Sequence[int] = GRID,
                   mesh=None, target: targets.Target | None = None):
    """Attributions and pointing-game hits for a batch of grids, every method, the 3 targets.

    class_text_reps: (M, D) query-caption embeddings of the M classes; method_options:
    {method name: options}. Images are processed `chunk` at a time (default: all at once),
    sharded over `mesh` if given. `target`: the stacked per-image targets (N, 3, D) to explain
    instead of each grid's class query against the other classes (e.g. `localization_target`
    with a chosen foil); class_text_reps and similarity are then unused.
    Returns (attributions {method: (N, K, H, W[, C])}, hits {method: (N, K, 2)}, target (N, K, D)).
    """
    n = grids.images.shape[0]
    if target is None:
        image_reps = jax.jit(encode_fn)(params, grids.images)
        target = class_query_targets(image_reps, class_text_reps, grids.query_labels, similarity)
    chunk = n if chunk is None else _checks.check_positive_int("chunk", chunk)
    attributions, hits = {}, {}
    for method, options in method_options.items():
        explain = make_explainer(encode_fn, method, options, batch_size=batch_size,
                                 mesh=mesh)  # programs cached by the pipeline
        keys = method_keys(key, method, n)
        parts = [explain(params, grids.images[i:i + chunk],
                         jax.tree_util.tree_map(lambda d: d[i:i + chunk], target), keys[i:i + chunk])
                 for i in range(0, n, chunk)]
        attributions[method] = jnp.concatenate(parts) if len(parts) > 1 else parts[0]
        hits[method] = batch_pointing_hits(attributions[method], grids.query_tiles, grid,
                                             centre=centred(method))
    return attributions, hits, target
