"""Linear probe: multinomial logistic regression on frozen representations.

The paper's corpus majority probability (Section 4.1) needs a downstream linear
classifier on representations; this trains one with optax (full-batch Adam on the
softmax cross-entropy with a small L2 penalty), saves/loads it with orbax, and
reports its accuracy.

    probe = fit_probe(train_reps, train_labels, n_classes=10, key=jax.random.key(0))
    accuracy(probe, test_reps, test_labels)
"""
from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cocoa_jax import _checks


@dataclasses.dataclass(frozen=True)
class LinearProbe:
    """logits = reps @ weights + bias.

    weights: (D, C); bias: (C,). A pytree (jit/vmap-ready).
    """

    weights: jax.Array
    bias: jax.Array

    @property
    def n_classes(self) -> int:
        return int(self.weights.shape[-1])

    def logits(self, reps: jax.Array) -> jax.Array:
        """(..., D) -> (..., C)."""
        return reps @ self.weights + self.bias

    def probabilities(self, reps: jax.Array) -> jax.Array:
        """Softmax class probabilities, (..., D) -> (..., C)."""
        return jax.nn.softmax(self.logits(reps), axis=-1)

    def predict(self, reps: jax.Array) -> jax.Array:
        """Predicted classes, (..., D) -> (...) int."""
        return jnp.argmax(self.logits(reps), axis=-1)


jax.tree_util.register_dataclass(LinearProbe, data_fields=["weights", "bias"], meta_fields=[])


def _check_data(reps, labels, n_classes=None):
    _checks.check_array("reps", reps, ndim=2)
    _checks.check_array("labels", labels, ndim=1)
    if np.shape(reps)[0] == 0:
        raise ValueError("`reps` is empty")
    if np.shape(labels)[0] != np.shape(reps)[0]:
        raise ValueError(f"`labels` has {np.shape(labels)[0]} entries for {np.shape(reps)[0]} representations")
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"`labels` must be integers, got dtype {labels.dtype}")
    if n_classes is not None and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"`labels` must lie in [0, {n_classes}), got range [{labels.min()}, {labels.max()}]")
    return jnp.asarray(reps, jnp.float32), jnp.asarray(labels, jnp.int32)


def fit_probe(reps, labels, *, n_classes: int, key: jax.Array | None = None, n_epochs: int = 500,
              learning_rate: float = 0.05, weight_decay: float = 1e-4, standardize: bool = True) -> LinearProbe:
    """Train a multinomial logistic regression, full batch, with optax Adam.

    Args:
      reps: (N, D) frozen representations; labels: (N,) ints in [0, n_classes).
      key: initial weights ~ N(0, 0.01^2) (None: zeros; the problem is convex either way).
      n_epochs: full-batch Adam steps.
      weight_decay: L2 penalty on the weights (keeps separable data from diverging).
      standardize: fit on representations scaled by their per-dimension mean/std; the
        scaling is folded into the returned weights and bias, so the probe still reads raw
        representations. Better conditioned optimisation, same model class.
    Returns: a `LinearProbe` on raw representations.
    """
    n_classes = _checks.check_positive_int("n_classes", n_classes)
    n_epochs = _checks.check_positive_int("n_epochs", n_epochs)
    reps, labels = _check_data(reps, labels, n_classes)
    dim = reps.shape[1]
    if standardize:
        mean = jnp.mean(reps, axis=0)
        scale = jnp.std(reps, axis=0) + 1e-6
    else:
        mean, scale = jnp.zeros(dim), jnp.ones(dim)
    z = (reps - mean) / scale
    weights = (jnp.zeros((dim, n_classes)) if key is None
               else 0.01 * jax.random.normal(key, (dim, n_classes)))
    params = LinearProbe(weights, jnp.zeros(n_classes))
    optimizer = optax.adam(learning_rate)

    def loss_fn(p):
        losses = optax.softmax_cross_entropy_with_integer_labels(p.logits(z), labels)
        return jnp.mean(losses) + weight_decay * jnp.sum(jnp.square(p.weights))

    @jax.jit
    def train(p):
        def step(carry, _):
            p, state = carry
            grads = jax.grad(loss_fn)(p)
            updates, state = optimizer.update(grads, state, p)
            return (optax.apply_updates(p, updates), state), None

        (p, _), _ = jax.lax.scan(step, (p, optimizer.init(p)), None, length=n_epochs)
        return p

    fitted = train(params)
    # Fold standardisation in: (r - m)/s @ W + b = r @ (W / s) + (b - (m / s) @ W).
    raw_weights = fitted.weights / scale[:, None]
    raw_bias = fitted.bias - (mean / scale) @ fitted.weights
    return LinearProbe(raw_weights, raw_bias)


def accuracy(probe: LinearProbe, reps, labels) -> float:
    """Fraction of correctly predicted labels. reps (N, D), labels (N,)."""
    if not isinstance(probe, LinearProbe):
        raise TypeError(f"`probe` must be a LinearProbe, got {type(probe).__name__}")
    reps, labels = _check_data(reps, labels)
    return float(jnp.mean(probe.predict(reps) == labels))


def save_probe(probe: LinearProbe, directory: str, metadata: dict | None = None) -> str:
    """Write the probe as an orbax checkpoint at `directory` (replaced if present).

    `metadata` (JSON-serialisable, e.g. {"accuracy": 0.97}) goes to `directory`/../<name>.json
    beside it, so a checkpoint directory holds only orbax files. Returns the absolute path.
    """
    import shutil

    import orbax.checkpoint as ocp

    if not isinstance(probe, LinearProbe):
        raise TypeError(f"`probe` must be a LinearProbe, got {type(probe).__name__}")
    directory = os.path.abspath(directory)
    if os.path.exists(directory):
        shutil.rmtree(directory)
    os.makedirs(os.path.dirname(directory), exist_ok=True)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(directory, {"weights": jnp.asarray(probe.weights), "bias": jnp.asarray(probe.bias)})
        ckptr.wait_until_finished()
    if metadata is not None:
        with open(directory.rstrip(os.sep) + ".json", "w") as fh:
            json.dump(metadata, fh, indent=2)
    return directory


def load_probe(directory: str) -> LinearProbe:
    """Restore a probe written by `save_probe` (host-local: the same in every process of a
    `jax.distributed` job, see `cocoa_jax.models.restore_host_local`)."""
    from cocoa_jax.models import restore_host_local

    directory = os.path.abspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no probe checkpoint at {directory!r}")
    tree = restore_host_local(directory)
    return LinearProbe(jnp.asarray(tree["weights"]), jnp.asarray(tree["bias"]))
