"""DINO / DINOv2 ViT ports vs facebookresearch/dinov2's own model code, random weights.

The reference is the `dinov2` package (`dinov2.models.vision_transformer.DinoVisionTransformer`;
the PyPI release 0.0.1.dev2 predates register tokens, so the test against its register model
skips with it and runs when dinov2 is installed from facebookresearch/dinov2's source with
`pip install --no-deps`; register models are compared with timm's in test_port_timm.py, and
their positional-embedding resampling with `torch.nn.functional.interpolate` here). DINO (v1)'s
`vision_transformer.py` is not packaged anywhere: its ViT is DINOv2's without LayerScale and
without `mask_token` (same keys, same qkv/MLP/eps 1e-6, same `interpolate_pos_encoding` with
the 0.1 offset), which is how the DINO case builds it. Small configs (2 blocks, width 128,
2 heads, 42-64 px) with the real key layouts; representations and cosine-target input
gradients must agree to < 1e-5 relative.
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "xFormers is not available"
    vits = pytest.importorskip("dinov2.models.vision_transformer")

from cocoa_jax.models import load, vit  # noqa: E402
from cocoa_jax_ports import CheckpointMismatchError, convert  # noqa: E402
from tests.reference.compare import flax_reps_and_cosine_grad, rel_err, torch_reps_and_cosine_grad  # noqa: E402

torch.set_num_threads(2)


def _network(model):
    """The raw network (normalised input, as the torch reference takes): `network_fn` where the
    loaded model has one (encode_fn then takes [0, 1] pixels), else `encode_fn`."""
    return getattr(model, "network_fn", model.encode_fn)
TOL = 1e-5
HAS_REGISTERS = "num_register_tokens" in vits.DinoVisionTransformer.__init__.__code__.co_varnames


# What the DINOv2 hub's *_reg entries (dinov2/hub/backbones.py) pass for register models.
HUB_REGISTER_RESAMPLING = dict(interpolate_antialias=True, interpolate_offset=0.0)


def _reference(seed, *, img_size=56, patch=14, layer_scale=True, registers=0, ffn="mlp", chunks=0):
    torch.manual_seed(seed)
    kwargs = dict(num_register_tokens=registers, **HUB_REGISTER_RESAMPLING) if registers else {}
    model = vits.DinoVisionTransformer(img_size=img_size, patch_size=patch, embed_dim=128, depth=2, num_heads=2,
                                       init_values=1.0 if layer_scale else None, ffn_layer=ffn,
                                       block_chunks=chunks, **kwargs)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # non-trivial norms, LayerScale, biases and tokens (defaults 1/0 hide swaps)
        for name, p in model.named_parameters():
            if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm.weight":
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias") or "gamma" in name or "token" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()


def _compare(arch, path, reference, tmp_path, hw, options=None):
    convert(arch, str(path), str(tmp_path / "out"), options=options)
    model = load(arch, str(tmp_path / "out"))
    assert model.input_shape == (224, 224, 3) and model.representation_dim == 128
    model = model.with_input_shape((*hw, 3))
    rng = np.random.RandomState(0)
    x = rng.rand(2, *hw, 3).astype(np.float32)
    direction = rng.randn(128).astype(np.float32)
    reps, grad = flax_reps_and_cosine_grad(_network(model), model.params, x, direction)
    ref_reps, ref_grad = torch_reps_and_cosine_grad(reference, x, direction)
    assert rel_err(reps, ref_reps) < TOL
    assert rel_err(grad, ref_grad) < TOL
    return model


@pytest.mark.parametrize("out, stored, offset", [(3, 4, 0.1), (16, 37, 0.1), (6, 4, 0.0), (7, 5, 0.1), (4, 4, 0.1)])
def test_bicubic_matrix_is_torch_interpolate(out, stored, offset):
    """The positional-embedding resampling, incl. the 0.1 offset (scale_factor) and size modes."""
    grid = torch.randn(1, 3, stored, stored, dtype=torch.float64)
    if offset:
        scale = (out + offset) / stored
        expected = torch.nn.functional.interpolate(grid, scale_factor=(scale, scale), mode="bicubic")
    else:
        expected = torch.nn.functional.interpolate(grid, size=(out, out), mode="bicubic")
    rows, cols = vit.interpolation_matrices(out, out, stored, offset)
    actual = np.einsum("ai,bj,cij->cab", rows, cols, grid[0].numpy())
    assert expected.shape[-2:] == (out, out)
    np.testing.assert_allclose(actual, expected[0].numpy(), rtol=0, atol=1e-12)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_dinov2_state_dict_interpolated(tmp_path):
    """dinov2_vits14_pretrain.pth layout (plain state dict with mask_token), 42 px: 3x3 grid from 4x4."""
    reference = _reference(0)
    torch.save(reference.state_dict(), tmp_path / "dinov2_vits14_pretrain.pth")
    model = _compare("dinov2_vit", tmp_path / "dinov2_vits14_pretrain.pth", reference, tmp_path, (42, 42))
    assert model.config["pos_grid"] == 4 and model.config["num_heads"] == 2  # 128 // 64
    assert any("mask_token" in n for n in model.notes)


@pytest.mark.skipif(not HAS_REGISTERS, reason="installed dinov2 predates register tokens")
def test_dinov2_registers_non_square(tmp_path):
    """dinov2_vits14_reg4_pretrain.pth layout with the hub's resampling, a non-square 56x42 input."""
    reference = _reference(1, registers=4)
    torch.save(reference.state_dict(), tmp_path / "reg4.pth")
    model = _compare("dinov2_vit", tmp_path / "reg4.pth", reference, tmp_path, (56, 42))
    assert model.config["num_register_tokens"] == 4
    assert (model.config["interpolate_offset"], model.config["interpolate_antialias"]) == (0.0, True)


@pytest.fixture(scope="module")
def register_config(tmp_path_factory):
    """model.json's config of a converted register checkpoint (`register_tokens`, 37 x 37 grid)."""
    root = tmp_path_factory.mktemp("register_config")
    state_dict = {**_reference(5, img_size=518).state_dict(), "register_tokens": 0.1 * torch.randn(1, 4, 128)}
    torch.save(state_dict, root / "dinov2_vits14_reg4_pretrain.pth")
    convert("dinov2_vit", str(root / "dinov2_vits14_reg4_pretrain.pth"), str(root / "out"))
    return load("dinov2_vit", str(root / "out")).config


@pytest.mark.parametrize("out_hw", [(16, 16), (32, 32), (37, 37), (16, 32)])
def test_register_checkpoint_resampling_is_torch_interpolate(register_config, out_hw):
    """A register checkpoint's recorded settings resample the released 37 x 37 grid as the hub's
    *_reg entries do: torch's bicubic, antialias=True, to the output size (224 / 448 / 518 px and
    a non-square 224 x 448)."""
    config = register_config
    grid = torch.randn(1, 3, 37, 37, dtype=torch.float64)
    expected = torch.nn.functional.interpolate(grid, size=out_hw, mode="bicubic",
                                               antialias=HUB_REGISTER_RESAMPLING["interpolate_antialias"])
    rows, cols = vit.interpolation_matrices(*out_hw, 37, config["interpolate_offset"],
                                            config["interpolate_antialias"])
    np.testing.assert_allclose(np.einsum("ai,bj,cij->cab", rows, cols, grid[0].numpy()), expected[0].numpy(),
                               rtol=0, atol=1e-12)
    if out_hw != (37, 37):  # the register-free settings (what register models got before) resample otherwise
        legacy = vit.LEGACY_RESAMPLING
        rows, cols = vit.interpolation_matrices(*out_hw, 37, legacy["interpolate_offset"],
                                                legacy["interpolate_antialias"])
        legacy = np.einsum("ai,bj,cij->cab", rows, cols, grid[0].numpy())
        assert np.abs(legacy - expected[0].numpy()).max() > 1e-2


@pytest.fixture(scope="module")
def released_grid_model(tmp_path_factory):
    """(reference, converted model): a register-free DINOv2 stored at 518 px (37 x 37), as released."""
    root = tmp_path_factory.mktemp("released_grid")
    reference = _reference(6, img_size=518)
    torch.save(reference.state_dict(), root / "dinov2_vits14_pretrain.pth")
    convert("dinov2_vit", str(root / "dinov2_vits14_pretrain.pth"), str(root / "out"))
    return reference, load("dinov2_vit", str(root / "out"))


@pytest.mark.parametrize("size", [224, pytest.param(518, marks=pytest.mark.slow)])
def test_register_free_at_released_sizes(released_grid_model, size):
    """No registers: DinoVisionTransformer's resampling (offset 0.1, no antialias) from 37 x 37 at
    224 px, none at 518 px."""
    reference, model = released_grid_model
    assert (model.config["interpolate_offset"], model.config["interpolate_antialias"]) == (0.1, False)
    model = model.with_input_shape((size, size, 3))
    rng = np.random.RandomState(size)
    x = rng.rand(1, size, size, 3).astype(np.float32)
    direction = rng.randn(128).astype(np.float32)
    reps, grad = flax_reps_and_cosine_grad(_network(model), model.params, x, direction)
    ref_reps, ref_grad = torch_reps_and_cosine_grad(reference, x, direction)
    assert rel_err(reps, ref_reps) < TOL and rel_err(grad, ref_grad) < TOL, (rel_err(reps, ref_reps),
                                                                             rel_err(grad, ref_grad))


def test_model_dir_without_resampling_fields_keeps_the_legacy_resampling(tmp_path):
    """A model.json written before `interpolate_offset` / `interpolate_antialias` were recorded loads
    with offset 0.1 and no antialias (what it always did), checked against the reference at 42 px."""
    reference = _reference(7)
    torch.save(reference.state_dict(), tmp_path / "v2.pth")
    convert("dinov2_vit", str(tmp_path / "v2.pth"), str(tmp_path / "out"))
    meta_path = tmp_path / "out" / "model.json"
    meta = json.loads(meta_path.read_text())
    del meta["config"]["interpolate_offset"], meta["config"]["interpolate_antialias"]
    meta_path.write_text(json.dumps(meta))
    model = load("dinov2_vit", str(tmp_path / "out"))
    assert "interpolate_offset" not in model.config and vit.LEGACY_RESAMPLING == {
        "interpolate_offset": 0.1, "interpolate_antialias": False}
    model = model.with_input_shape((42, 42, 3))
    x = np.random.RandomState(0).rand(2, 42, 42, 3).astype(np.float32)
    assert rel_err(_network(model)(model.params, x), _torch_reps(reference, x)) < TOL


def _torch_reps(reference, x):
    with torch.no_grad():
        return reference(torch.tensor(np.transpose(x, (0, 3, 1, 2)))).numpy()


def test_dinov2_swiglu_chunked_teacher_checkpoint(tmp_path):
    """ViT-g's SwiGLU FFN, FSDP block chunks and a training checkpoint's teacher (heads dropped);
    the native 56 px (no interpolation)."""
    reference = _reference(2, ffn="swiglufused", chunks=2)
    teacher = {"backbone." + k: v for k, v in reference.state_dict().items()}
    teacher["dino_head.mlp.0.weight"] = torch.zeros(4, 128)
    teacher["ibot_head.last_layer.weight"] = torch.zeros(8, 4)
    torch.save({"teacher": teacher, "iteration": 10}, tmp_path / "teacher_checkpoint.pth")
    model = _compare("dinov2_vit", tmp_path / "teacher_checkpoint.pth", reference, tmp_path, (56, 56))
    assert model.config["ffn"] == "swiglu"
    notes = " ".join(model.notes)
    assert "'backbone.'" in notes and "dino_head" in notes and "ibot_head" in notes and "blocks.C.I" in notes


def test_dino_v1_full_checkpoint(tmp_path):
    """DINO (v1) ViT/16 full checkpoint: teacher backbone.* + DINO head (dropped); 48 px from 64 px."""
    reference = _reference(3, img_size=64, patch=16, layer_scale=False)
    backbone = {k: v for k, v in reference.state_dict().items() if k != "mask_token"}
    checkpoint = {"teacher": {**{"backbone." + k: v for k, v in backbone.items()},
                              "head.mlp.0.weight": torch.zeros(4, 128), "head.last_layer.weight_g": torch.zeros(8, 1)},
                  "student": {"module.backbone." + k: v for k, v in backbone.items()}, "epoch": 100}
    torch.save(checkpoint, tmp_path / "checkpoint.pth")
    model = _compare("dino_vit", tmp_path / "checkpoint.pth", reference, tmp_path, (48, 48))
    assert model.config["layer_scale"] is False and model.config["patch_size"] == 16
    assert any("teacher" in n and "student" in n for n in model.notes)


def test_errors_name_the_key(tmp_path):
    state_dict = _reference(4).state_dict()
    torch.save(state_dict, tmp_path / "v2.pth")
    with pytest.raises(CheckpointMismatchError, match=r"'blocks\.0\.ls1\.gamma'.*dinov2_vit"):
        convert("dino_vit", str(tmp_path / "v2.pth"), str(tmp_path / "a"))
    torch.save({**state_dict, "head.weight": torch.zeros(10, 128)}, tmp_path / "extra.pth")
    with pytest.raises(CheckpointMismatchError, match=r"'head\.weight'"):
        convert("dinov2_vit", str(tmp_path / "extra.pth"), str(tmp_path / "b"))
    torch.save({k: v for k, v in state_dict.items() if k != "blocks.1.attn.proj.bias"}, tmp_path / "miss.pth")
    with pytest.raises(CheckpointMismatchError, match=r"'blocks\.1\.attn\.proj\.bias'"):
        convert("dinov2_vit", str(tmp_path / "miss.pth"), str(tmp_path / "c"))
    with pytest.raises(ValueError, match="activation"):
        convert("dinov2_vit", str(tmp_path / "v2.pth"), str(tmp_path / "d"), options={"activation": "gelu"})
    with pytest.raises(CheckpointMismatchError, match="not divisible by 3 heads"):
        convert("dinov2_vit", str(tmp_path / "v2.pth"), str(tmp_path / "e"), options={"num_heads": "3"})
