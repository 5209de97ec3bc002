"""The embedded default: digits data, SmallResNet encoder, shipped checkpoint, SimCLR training."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax.data import digits
from cocoa_jax.models import load, small_resnet
from cocoa_jax.training import simclr


@pytest.fixture(scope="module")
def split():
    return digits.load_digits_split(seed=0)


# ----------------------------------------------------------------------------- data

def test_split_shapes_range_labels(split):
    assert split.x_train.shape == (1297, 32, 32, 1) and split.x_test.shape == (500, 32, 32, 1)
    assert split.y_train.shape == (1297,) and split.y_test.shape == (500,)
    assert split.x_train.dtype == np.float32 and split.y_train.dtype == np.int32
    for x in (split.x_train, split.x_test):
        assert x.min() == 0.0 and x.max() == 1.0  # digits use the full 0..16 range
    assert set(np.unique(split.y_train)) == set(range(10)) == set(np.unique(split.y_test))


def test_split_is_a_seeded_partition(split):
    images, labels = digits.load_digits_arrays()
    again = digits.load_digits_split(seed=0)
    for a, b in zip(split, again):
        np.testing.assert_array_equal(a, b)
    other = digits.load_digits_split(seed=1)
    assert not np.array_equal(split.y_test, other.y_test)
    # Train + test is exactly the full data set (as a multiset of (image, label) pairs).
    pairs = lambda xs, ys: sorted(x.tobytes() + bytes([y]) for x, y in zip(xs, ys))
    assert pairs(np.concatenate([split.x_train, split.x_test]), np.concatenate([split.y_train, split.y_test])) \
        == pairs(images, labels)


def test_upsample_matches_jax_image_resize():
    from sklearn.datasets import load_digits

    raw = load_digits().images[:20] / 16.0
    ours = digits.upsample_bilinear(raw, 32)
    ref = jax.image.resize(jnp.asarray(raw, jnp.float32), (20, 32, 32), "bilinear")
    np.testing.assert_allclose(ours, np.asarray(ref), atol=1e-6)
    images, _ = digits.load_digits_arrays()
    np.testing.assert_allclose(images[:20, ..., 0], ours, atol=1e-6)


def test_data_bad_input():
    with pytest.raises(ValueError, match="n_test"):
        digits.load_digits_split(n_test=0)
    with pytest.raises(ValueError, match="n_test"):
        digits.load_digits_split(n_test=1797)
    with pytest.raises(ValueError, match="images"):
        digits.upsample_bilinear(np.zeros((2, 8, 8, 1)), 32)


# ----------------------------------------------------------------------------- model

@pytest.fixture(scope="module")
def shipped():
    if not os.path.isdir(small_resnet.WEIGHTS_DIR):
        pytest.fail(f"shipped checkpoint missing at {small_resnet.WEIGHTS_DIR}; run `cocoa-jax train-digits`")
    return load("digits")


def test_model_shapes_and_nonnegative_representations(shipped):
    # Inputs far outside [0, 1] too: non-negativity comes from the final ReLU, not the data.
    # (`encode` refuses such inputs; the jitted pure function cannot see values.)
    x = np.random.default_rng(1).normal(size=(5, 32, 32, 1)).astype(np.float32) * 3.0
    reps = np.asarray(jax.jit(shipped.encode_fn)(shipped.params, x))
    assert reps.shape == (5, 128) and shipped.module.representation_dim == 128
    assert reps.min() >= 0.0 and reps.max() > 0.0
    # Shapes only (no random init to compile): the training net nests exactly this encoder.
    net = small_resnet.SimCLRNet()
    abstract = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((2, 32, 32, 1)), train=False))
    shapes = lambda tree: jax.tree_util.tree_map(lambda a: tuple(a.shape), tree)
    assert shapes(abstract["params"]["encoder"]) == shapes(shipped.params["params"])
    assert shapes(abstract["batch_stats"]["encoder"]) == shapes(shipped.params["batch_stats"])
    h, z = jax.eval_shape(lambda v: net.apply(v, jnp.zeros((5, 32, 32, 1))), abstract)
    assert h.shape == (5, 128) and z.shape == (5, small_resnet.PROJECTION_DIMS[-1])


def test_shipped_checkpoint_loads(shipped):
    from cocoa_jax.models import LoadedModel, list_architectures

    assert isinstance(shipped, LoadedModel) and "digits" in list_architectures()
    assert shipped.input_shape == (32, 32, 1) and shipped.representation_dim == 128
    assert "batch_stats" in shipped.params and "params" in shipped.params
    via_registry = load("digits")
    x = np.random.default_rng(0).random((3, 32, 32, 1), dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(shipped.encode(x)), np.asarray(via_registry.encode(x)))
    # encode and the pure encode_fn agree, and encode_fn jits with params as an argument.
    np.testing.assert_allclose(np.asarray(jax.jit(shipped.encode_fn)(shipped.params, x)),
                               np.asarray(shipped.encode(x)), rtol=1e-5, atol=1e-6)


def test_shipped_encoder_linear_probe_well_above_chance(shipped, split):
    """Independent check: scikit-learn's logistic regression on the frozen representations."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    tr = np.asarray(shipped.encode(split.x_train[:400]))
    te = np.asarray(shipped.encode(split.x_test))
    assert tr.min() >= 0.0 and np.all(np.isfinite(tr))
    scaler = StandardScaler().fit(tr)
    clf = LogisticRegression(max_iter=2000).fit(scaler.transform(tr), split.y_train[:400])
    accuracy = clf.score(scaler.transform(te), split.y_test)
    assert accuracy > 0.9, accuracy  # chance is 0.1


def test_load_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-digits"):
        load("digits", str(tmp_path / "nope"))


def test_save_load_roundtrip(shipped, tmp_path):
    path = small_resnet.save_encoder(shipped.params, str(tmp_path / "ckpt"))
    loaded = load("digits", path)
    flat = lambda tree: jax.tree_util.tree_leaves_with_path(tree)
    assert [p for p, _ in flat(shipped.params)] == [p for p, _ in flat(loaded.params)]
    for (_, a), (_, b) in zip(flat(shipped.params), flat(loaded.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ----------------------------------------------------------------------------- SimCLR

def _nt_xent_reference(z1, z2, temperature):
    """float64 NumPy NT-Xent, one anchor at a time."""
    z = np.concatenate([z1, z2]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n2 = len(z)
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        positive = (i + n) % n2
        logits = np.array([z[i] @ z[j] / temperature for j in range(n2) if j != i])
        others = [j for j in range(n2) if j != i]
        log_denominator = np.log(np.sum(np.exp(logits - logits.max()))) + logits.max()
        total += -(logits[others.index(positive)] - log_denominator)
    return total / n2


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_nt_xent_matches_numpy_reference(temperature):
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    z2[0] = z1[0] * 3.0  # one perfectly aligned pair
    got = simclr.nt_xent(jnp.asarray(z1, jnp.float32), jnp.asarray(z2, jnp.float32), temperature)
    np.testing.assert_allclose(float(got), _nt_xent_reference(z1, z2, temperature), rtol=1e-5)


def test_nt_xent_bad_input():
    with pytest.raises(ValueError, match="z1 and z2"):
        simclr.nt_xent(jnp.ones((4, 3)), jnp.ones((5, 3)))
    with pytest.raises(ValueError, match="temperature"):
        simclr.nt_xent(jnp.ones((4, 3)), jnp.ones((4, 3)), temperature=0.0)


def test_augment_range_shape_and_determinism(split):
    x = jnp.asarray(split.x_train[:4])
    augment_batch = jax.jit(simclr.augment_batch, static_argnums=2)  # one compilation per config
    a = augment_batch(jax.random.key(0), x, simclr.AugmentConfig())
    b = augment_batch(jax.random.key(0), x, simclr.AugmentConfig())
    c = augment_batch(jax.random.key(1), x, simclr.AugmentConfig())
    assert a.shape == x.shape and float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))
    # The identity warp with no photometric change and no cutout returns the image itself.
    still = simclr.AugmentConfig(max_rotation=0.0, scale_range=(1.0, 1.0), max_shear=0.0, max_translation=0.0,
                                 contrast_range=(1.0, 1.0), max_noise_std=0.0, cutout_prob=0.0)
    np.testing.assert_allclose(np.asarray(augment_batch(jax.random.key(2), x, still)),
                               np.asarray(x), atol=1e-6)


def _numpy_init(abstract, seed=0):
    """LeCun-normal kernels, zero biases/means, unit scales/variances, from NumPy's RNG."""
    rng = np.random.default_rng(seed)

    def leaf(path, a):
        name = jax.tree_util.keystr(path)
        if "kernel" in name:
            return jnp.asarray(rng.normal(size=a.shape) / np.sqrt(np.prod(a.shape[:-1])), jnp.float32)
        return jnp.ones(a.shape) if ("scale" in name or "var" in name) else jnp.zeros(a.shape)

    return jax.tree_util.tree_map_with_path(leaf, abstract)


@pytest.mark.slow
def test_tiny_training_run_decreases_loss(split):
    """A few steps on 32 images with mild augmentations: NT-Xent must fall well below chance."""
    tiny = small_resnet.SimCLRNet(small_resnet.SmallResNet(widths=(8, 16, 16), stem_width=8),
                                  projection_dims=(16, 16))
    mild = simclr.AugmentConfig(max_rotation=0.1, scale_range=(0.95, 1.05), max_shear=0.0, max_translation=1.0,
                                contrast_range=(0.9, 1.1), max_noise_std=0.02, cutout_prob=0.0)
    cfg = simclr.SimCLRConfig(steps=15, batch_size=16, learning_rate=1e-2, warmup_steps=2, seed=0, augment=mild)
    # Start from NumPy-drawn weights: a seeded flax init costs ~10 s of XLA CPU compilation here.
    start = _numpy_init(jax.eval_shape(lambda: tiny.init(jax.random.key(0), jnp.zeros((2, 32, 32, 1)))))
    variables, losses, _ = simclr.train_simclr(tiny, split.x_train[:32], cfg, variables=start)
    assert losses.shape == (15,) and np.all(np.isfinite(losses))
    chance = np.log(2 * cfg.batch_size - 1)  # uniform softmax over the 2N - 1 candidates
    assert abs(losses[0] - chance) < 0.3, losses[0]
    assert losses[-5:].mean() < losses[:3].mean() - 0.3, losses
    assert set(variables) == {"params", "batch_stats"}
    _, losses_again, _ = simclr.train_simclr(tiny, split.x_train[:32], cfg, variables=start)
    np.testing.assert_array_equal(losses, losses_again)  # same seed, same run


def test_linear_probe_separable_data():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 4
    y = rng.integers(0, 3, 300)
    x = centres[y] + rng.normal(size=(300, 8))
    acc = simclr.linear_probe(x[:200], y[:200], x[200:], y[200:], n_classes=3, steps=200)
    assert acc > 0.95
    shuffled = simclr.linear_probe(x[:200], rng.permutation(y[:200]), x[200:], y[200:], n_classes=3, steps=200)
    assert shuffled < 0.7


def test_training_config_bad_input(split):
    with pytest.raises(ValueError, match="steps"):
        simclr.SimCLRConfig(steps=0).validate()
    with pytest.raises(ValueError, match="temperature"):
        simclr.SimCLRConfig(temperature=-1.0).validate()
    with pytest.raises(ValueError, match="batch_size"):
        simclr.train_simclr(small_resnet.SimCLRNet(), split.x_train[:8], simclr.SimCLRConfig(batch_size=16))
