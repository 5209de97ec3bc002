"""DINO / DINOv2 ViTs in timm's layout vs timm's own `VisionTransformer`, random weights.

The reference is `timm.models.vision_transformer.VisionTransformer` (timm installed with
`pip install --no-deps timm`), built with DINOv2-like configs (patch 14, LayerScale, with and
without `reg_token`s, `no_embed_class`, the SwiGLUPacked FFN of ViT-g) and a DINO (v1)-like one
(patch 16, no LayerScale), all with `dynamic_img_size=True`, so other input sizes resample the
positional embedding with timm's `resample_abs_pos_embed` (antialiased bicubic). Files are
written as timm publishes them (`model.safetensors`) or as `torch.save(model.state_dict())`
(`pytorch_model.bin`), converted with `cocoa_jax_ports.convert`, and representations and
cosine-target input gradients must agree to < 1e-5 relative.

timm is imported without torchvision (`tests.reference.timm_vit`).

DINOv2 with registers in facebookresearch's layout (`dinov2_vit*14_reg4_pretrain.pth`: the
checkpoints of the hub's `*_reg` entries, which resample with `interpolate_antialias=True,
interpolate_offset=0.0`) is checked against timm's `vit_*_patch14_reg4_dinov2` settings (the
same model, timm's `_convert_dinov2` maps one file onto the other) at 224, 448 and 518 px from
the released 37 x 37 grid; `torch.nn.functional.interpolate` with the hub's settings is the
reference of the resampling step itself.
"""
from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from tests.reference import timm_vit as timm_reference  # noqa: E402

_TIMM = timm_reference.import_timm_vision_transformer()
if _TIMM is None:
    pytest.skip("timm not installed (pip install --no-deps timm)", allow_module_level=True)
timm_vit, SwiGLUPacked = _TIMM

from safetensors.torch import save_file  # noqa: E402

from cocoa_jax.models import load, vit  # noqa: E402
from cocoa_jax_ports import CheckpointMismatchError, convert  # noqa: E402
from tests.reference.compare import flax_reps_and_cosine_grad, rel_err, torch_reps_and_cosine_grad  # noqa: E402

torch.set_num_threads(2)


def _network(model):
    """The raw network (normalised input, as the torch reference takes): `network_fn` where the
    loaded model has one (encode_fn then takes [0, 1] pixels), else `encode_fn`."""
    return getattr(model, "network_fn", model.encode_fn)
TOL = 1e-5
WIDTH = 128


def _reference(seed, **kwargs):
    """timm VisionTransformer (2 blocks, width 128, 2 heads) with non-trivial norms, LayerScale,
    biases and tokens (the defaults 1/0 would hide swaps)."""
    torch.manual_seed(seed)
    kwargs.setdefault("num_classes", 0)
    model = timm_vit.VisionTransformer(embed_dim=WIDTH, depth=2, num_heads=2, dynamic_img_size=True, **kwargs)
    return timm_reference.randomize(model, seed + 1)


def _save(model, path):
    state_dict = {k: v.contiguous() for k, v in model.state_dict().items()}
    if str(path).endswith(".safetensors"):
        save_file(state_dict, str(path))
    else:
        torch.save(state_dict, path)
    return str(path)


_representation = timm_reference.representation


def _compare(arch, path, reference, out, hw, options=None):
    convert(arch, path, str(out), options=options)
    model = load(arch, str(out))
    assert model.input_shape == (224, 224, 3) and model.representation_dim == WIDTH
    model = model.with_input_shape((*hw, 3))
    rng = np.random.RandomState(0)
    x = rng.rand(2, *hw, 3).astype(np.float32)
    direction = rng.randn(WIDTH).astype(np.float32)
    reps, grad = flax_reps_and_cosine_grad(_network(model), model.params, x, direction)
    ref_reps, ref_grad = torch_reps_and_cosine_grad(_representation(reference), x, direction)
    return model, rel_err(reps, ref_reps), rel_err(grad, ref_grad)


def test_timm_import_left_no_torchvision_behind():
    assert "torchvision" not in sys.modules or importlib.util.find_spec("torchvision") is not None


@pytest.mark.parametrize("out_hw, stored", [((16, 16), 37), ((3, 3), 4), ((6, 4), 4), ((4, 3), 4), ((5, 7), 5),
                                            ((4, 4), 4), ((37, 37), 16)])
@pytest.mark.parametrize("offset", [0.0, 0.1])
def test_antialias_matrix_is_torch_interpolate(out_hw, stored, offset):
    """The antialiased resampling (timm's resample_abs_pos_embed; DINOv2's interpolate_antialias)."""
    grid = torch.randn(1, 3, stored, stored, dtype=torch.float64)
    if offset:
        scale = ((out_hw[0] + offset) / stored, (out_hw[1] + offset) / stored)
        expected = torch.nn.functional.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=True)
    else:
        expected = torch.nn.functional.interpolate(grid, size=out_hw, mode="bicubic", antialias=True)
    rows, cols = vit.interpolation_matrices(*out_hw, stored, offset, antialias=True)
    actual = np.einsum("ai,bj,cij->cab", rows, cols, grid[0].numpy())
    assert expected.shape[-2:] == out_hw
    np.testing.assert_allclose(actual, expected[0].numpy(), rtol=0, atol=1e-12)


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_dinov2_safetensors_interpolated(tmp_path):
    """vit_small_patch14_dinov2-like (class row in pos_embed, LayerScale), model.safetensors, 42 px
    from a 4x4 grid. Its keys are facebookresearch's too: without layout=timm it converts with a
    note and DINOv2's resampling, which is not timm's."""
    reference = _reference(0, img_size=56, patch_size=14, init_values=1.0)
    path = _save(reference, tmp_path / "model.safetensors")
    model, rep_err, grad_err = _compare("dinov2_vit", path, reference, tmp_path / "timm", (42, 42),
                                        options={"layout": "timm"})
    assert rep_err < TOL and grad_err < TOL, (rep_err, grad_err)
    assert model.config["interpolate_antialias"] is True and model.config["interpolate_offset"] == 0.0
    assert "layout: timm (option)" in model.notes
    model, rep_err, _ = _compare("dinov2_vit", path, reference, tmp_path / "default", (42, 42))
    assert any("layout: facebookresearch assumed" in n and "layout=timm" in n for n in model.notes)
    assert rep_err > 1e-6  # the other resampling: the option matters at other input sizes


def test_dinov2_reg4_no_embed_class_non_square(tmp_path):
    """vit_small_patch14_reg4_dinov2-like: reg_token, no_embed_class (pos_embed without class row),
    detected from the keys; non-square 70x42 (5x3 grid from 4x4)."""
    reference = _reference(1, img_size=56, patch_size=14, init_values=1.0, reg_tokens=4, no_embed_class=True)
    path = _save(reference, tmp_path / "model.safetensors")
    model, rep_err, grad_err = _compare("dinov2_vit", path, reference, tmp_path / "out", (70, 42))
    assert rep_err < TOL and grad_err < TOL, (rep_err, grad_err)
    assert model.config["num_register_tokens"] == 4 and model.config["pos_grid"] == 4
    assert any("layout: timm" in n and "reg_token" in n for n in model.notes)
    assert any("no_embed_class" in n for n in model.notes)


@pytest.mark.slow
def test_registers_with_position_rows_are_folded(tmp_path):
    """reg_tokens with no_embed_class=False (pos_embed rows: class, registers, grid): timm keeps the
    prefix rows at every size, so folding them into the tokens is exact; 42x56."""
    reference = _reference(2, img_size=56, patch_size=14, init_values=1.0, reg_tokens=2)
    path = _save(reference, tmp_path / "pytorch_model.bin")
    model, rep_err, grad_err = _compare("dinov2_vit", path, reference, tmp_path / "out", (42, 56))
    assert rep_err < TOL and grad_err < TOL, (rep_err, grad_err)
    assert any("folded" in n for n in model.notes)


@pytest.mark.slow
def test_dinov2_giant_swiglu_packed(tmp_path):
    """vit_giant_patch14_dinov2's FFN: SwiGLUPacked (mlp.fc1 = both halves, silu on the first), native grid."""
    reference = _reference(3, img_size=56, patch_size=14, init_values=1.0, mlp_layer=SwiGLUPacked,
                           act_layer=torch.nn.SiLU, mlp_ratio=2.66667 * 2)
    path = _save(reference, tmp_path / "model.safetensors")
    model, rep_err, grad_err = _compare("dinov2_vit", path, reference, tmp_path / "out", (56, 56))
    assert rep_err < TOL and grad_err < TOL, (rep_err, grad_err)
    assert model.config["ffn"] == "swiglu"


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_dino_v1_with_classifier_head(tmp_path):
    """vit_small_patch16_224.dino-like (patch 16, no LayerScale) saved with a 10-way head (dropped,
    reported), pytorch_model.bin; 48 px from a 64 px / 16 grid."""
    reference = _reference(4, img_size=64, patch_size=16, num_classes=10)
    path = _save(reference, tmp_path / "pytorch_model.bin")
    model, rep_err, grad_err = _compare("dino_vit", path, reference, tmp_path / "out", (48, 48),
                                        options={"layout": "timm"})
    assert rep_err < TOL and grad_err < TOL, (rep_err, grad_err)
    assert model.config["layer_scale"] is False and model.config["patch_size"] == 16
    assert any("'head.weight'" in n and "classifier head" in n for n in model.notes)


def test_layout_errors_name_the_key(tmp_path):
    reference = _reference(5, img_size=56, patch_size=14, init_values=1.0, reg_tokens=4, no_embed_class=True)
    path = _save(reference, tmp_path / "reg.safetensors")
    with pytest.raises(CheckpointMismatchError, match=r"layout=facebookresearch.*'reg_token'.*layout=timm"):
        convert("dinov2_vit", path, str(tmp_path / "a"), options={"layout": "facebookresearch"})
    with pytest.raises(ValueError, match="layout must be one of"):
        convert("dinov2_vit", path, str(tmp_path / "b"), options={"layout": "hf"})
    state_dict = dict(reference.state_dict())
    state_dict["fc_norm.weight"] = torch.ones(WIDTH)
    path = _save_dict(state_dict, tmp_path / "avg.bin")
    with pytest.raises(CheckpointMismatchError, match=r"'fc_norm\.weight'.*global_pool='avg'"):
        convert("dinov2_vit", path, str(tmp_path / "c"))
    state_dict = dict(reference.state_dict())
    state_dict["register_tokens"] = state_dict["reg_token"]
    path = _save_dict(state_dict, tmp_path / "mixed.bin")
    with pytest.raises(CheckpointMismatchError, match="mixes timm's layout"):
        convert("dinov2_vit", path, str(tmp_path / "d"))
    for name in "abcd":
        assert not (tmp_path / name).exists()


def _save_dict(state_dict, path):
    torch.save({k: v.clone() for k, v in state_dict.items()}, path)
    return str(path)


# DINOv2 with registers (dinov2_vit*14_reg4_pretrain.pth layout) vs timm's reg4 DINOv2 settings.
REG_SEED = 10


@pytest.fixture(scope="module")
def registers_case(tmp_path_factory):
    """(timm reference stored at 518 px (37 x 37 grid), its facebookresearch state dict,
    {layout: converted model}): the same weights written in both layouts, converted without options."""
    root = tmp_path_factory.mktemp("registers")
    reference = timm_reference.dinov2_registers(timm_vit, REG_SEED, width=WIDTH, heads=2)
    official = timm_reference.facebookresearch_layout(reference, REG_SEED + 2)
    torch.save(official, root / "dinov2_vits14_reg4_pretrain.pth")
    convert("dinov2_vit", str(root / "dinov2_vits14_reg4_pretrain.pth"), str(root / "facebookresearch"))
    convert("dinov2_vit", _save(reference, root / "model.safetensors"), str(root / "timm"))
    models = {layout: load("dinov2_vit", str(root / layout)) for layout in ("facebookresearch", "timm")}
    return reference, official, models, root


def test_register_reference_is_timms_convert_dinov2(registers_case):
    """The facebookresearch file of the test is what timm's own `_convert_dinov2` maps onto the
    timm model (so both sides of the comparison hold the same weights)."""
    reference, official, _, _ = registers_case
    mapped = timm_vit._convert_dinov2({k: v.clone() for k, v in official.items()}, reference)
    expected = reference.state_dict()
    assert set(mapped) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(mapped[key], value, rtol=0, atol=1e-7, msg=key)


def test_register_checkpoint_records_the_hub_resampling(registers_case):
    """A `register_tokens` checkpoint gets the resampling of the hub's *_reg entries (antialiased
    bicubic to the output size), recorded in model.json and reported."""
    _, _, models, root = registers_case
    for layout, model in models.items():
        assert model.config["num_register_tokens"] == 4 and model.config["pos_grid"] == 37
        assert (model.config["interpolate_offset"], model.config["interpolate_antialias"]) == (0.0, True), layout
        with open(root / layout / "model.json") as f:
            stored = json.load(f)["config"]
        assert (stored["interpolate_offset"], stored["interpolate_antialias"]) == (0.0, True)
    notes = " ".join(models["facebookresearch"].notes)
    assert "bicubic, antialiased, to the output size" in notes and "*_reg" in notes
    assert "resample_abs_pos_embed" in " ".join(models["timm"].notes)


@pytest.mark.parametrize("layout, size", [("facebookresearch", 224), ("timm", 224),
                                          pytest.param("facebookresearch", 448, marks=pytest.mark.slow),
                                          pytest.param("facebookresearch", 518, marks=pytest.mark.slow)])
def test_registers_match_timm(registers_case, layout, size):
    """Representations and input gradients at 224 / 448 px (37 x 37 -> 16 x 16 / 32 x 32 grid) and
    at the stored 518 px (no resampling)."""
    reference, _, models, _ = registers_case
    model = models[layout].with_input_shape((size, size, 3))
    rng = np.random.RandomState(size)
    x = rng.rand(1, size, size, 3).astype(np.float32)
    direction = rng.randn(WIDTH).astype(np.float32)
    reps, grad = flax_reps_and_cosine_grad(_network(model), model.params, x, direction)
    ref_reps, ref_grad = torch_reps_and_cosine_grad(_representation(reference), x, direction)
    assert rel_err(reps, ref_reps) < TOL and rel_err(grad, ref_grad) < TOL, (rel_err(reps, ref_reps),
                                                                             rel_err(grad, ref_grad))


def test_register_options_replace_the_resampling(registers_case, tmp_path):
    """--option interpolate_offset / interpolate_antialias (a register model trained with dinov2's
    training defaults): recorded as given; bad values fail before anything is written."""
    _, _, _, root = registers_case
    path = str(root / "dinov2_vits14_reg4_pretrain.pth")
    convert("dinov2_vit", path, str(tmp_path / "a"),
            options={"interpolate_offset": "0.1", "interpolate_antialias": "false"})
    model = load("dinov2_vit", str(tmp_path / "a"))
    assert (model.config["interpolate_offset"], model.config["interpolate_antialias"]) == (0.1, False)
    assert any("options interpolate_offset" in n for n in model.notes)
    with pytest.raises(ValueError, match="interpolate_offset must be a number >= 0.*'-1'"):
        convert("dinov2_vit", path, str(tmp_path / "b"), options={"interpolate_offset": "-1"})
    with pytest.raises(ValueError, match="interpolate_antialias must be true or false.*'maybe'"):
        convert("dinov2_vit", path, str(tmp_path / "c"), options={"interpolate_antialias": "maybe"})
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
