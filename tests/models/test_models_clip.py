"""CLIP ViT port vs a PyTorch reference with random weights.

Full ViT-B/32 size is checked once (forward, image and text) for the layout; the checkpoint
formats (state dict, TorchScript archive in fp16 and fp32) and input-gradients are checked on
a reduced-size model of the same architecture, which compiles and runs much faster.
"""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402

from cocoa_jax.models import load, make_loaded  # noqa: E402
from cocoa_jax.models.clip import ClipConfig  # noqa: E402
from cocoa_jax_ports import CheckpointMismatchError, convert  # noqa: E402
from cocoa_jax_ports import clip as port_clip  # noqa: E402
from tests.reference.torch_models import clip_anytorch_file  # noqa: E402
from tests.reference.clip import CLIPReference, clip_tokens, openai_clip_model, randomize_  # noqa: E402
from tests.reference.compare import (flax_reps_and_cosine_grad, network_reps, rel_err,  # noqa: E402
                                     torch_reps_and_cosine_grad)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
torch.set_num_threads(2)
TOL = 1e-5
SMALL = dict(embed_dim=64, image_resolution=64, vision_layers=2, vision_width=128, vision_patch_size=32,
             context_length=77, vocab_size=49408, transformer_width=128, transformer_layers=2)


def _reference(config: dict, seed: int) -> CLIPReference:
    torch.manual_seed(seed)
    return randomize_(CLIPReference(**config), seed + 1)


def _compare_text(model, reference, tokens):
    with torch.no_grad():
        expected = reference.encode_text(torch.from_numpy(tokens)).numpy()
    actual = np.asarray(model.encode_text(tokens.astype(np.int32)))
    return rel_err(actual, expected)


@pytest.mark.slow
def test_full_size_vit_b32_layout():
    reference = _reference({}, 0)
    config, variables = port_clip.convert_state_dict(reference.state_dict())
    assert config == dataclasses.asdict(ClipConfig())  # inferred from shapes: ViT-B/32
    model = make_loaded("clip_vit_b32", config, variables)
    assert model.representation_dim == 512 and model.input_shape == (224, 224, 3)
    x = np.random.RandomState(0).rand(1, 224, 224, 3).astype(np.float32)
    with torch.no_grad():
        expected = reference.encode_image(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    assert rel_err(network_reps(model, x), expected) < TOL
    assert _compare_text(model, reference, clip_tokens(2, 0)) < TOL


def _save_torchscript(reference: CLIPReference, path, half: bool):
    """A TorchScript archive like the one clip.load caches (weights + the 3 scalar buffers).

    Works on a copy: a traced module shares its parameters, and `.half()` must not touch `reference`."""
    reference = copy.deepcopy(reference)
    for name, value in (("input_resolution", SMALL["image_resolution"]),
                        ("context_length", SMALL["context_length"]), ("vocab_size", SMALL["vocab_size"])):
        reference.register_buffer(name, torch.tensor(value))
    example = (torch.zeros(1, 3, SMALL["image_resolution"], SMALL["image_resolution"]),
               torch.from_numpy(clip_tokens(1, 9)))
    traced = torch.jit.trace(reference, example, check_trace=False)
    if half:
        traced = traced.half()
    torch.jit.save(traced, str(path))


@pytest.mark.parametrize("source", ["state_dict", "torchscript_fp32", "torchscript_fp16"])
def test_checkpoint_formats_and_gradients(source, tmp_path):
    reference = _reference(SMALL, 1)
    path = tmp_path / "ViT-B-32.pt"
    if source == "state_dict":
        torch.save(reference.state_dict(), path)
    else:
        _save_torchscript(reference, path, half=source.endswith("fp16"))
        if source.endswith("fp16"):
            # The fp32 reference then uses the same fp16-rounded weights the archive holds.
            with torch.no_grad():
                for p in reference.parameters():
                    p.copy_(p.half().float())
    convert("clip_vit_b32", str(path), str(tmp_path / "out"))
    model = load("clip_vit_b32", str(tmp_path / "out"))
    assert {k: model.config[k] for k in SMALL} == SMALL
    assert model.config["activation"] == "quick_gelu" and model.config["vision_head_width"] == 64
    # A TorchScript archive is OpenAI's release (QuickGELU for sure); a state dict gets a note.
    assert any("activation not given" in n for n in model.notes) == (source == "state_dict")
    assert any("fp16" in n for n in model.notes) == source.endswith("fp16")

    rng = np.random.RandomState(1)
    x = rng.randn(2, 64, 64, 3).astype(np.float32)
    direction = rng.randn(SMALL["embed_dim"]).astype(np.float32)
    reps, grad = flax_reps_and_cosine_grad(model.network_fn, model.params, x, direction)
    ref_reps, ref_grad = torch_reps_and_cosine_grad(reference.encode_image, x, direction)
    assert rel_err(reps, ref_reps) < TOL
    assert rel_err(grad, ref_grad) < TOL
    assert _compare_text(model, reference, clip_tokens(3, 1)) < TOL


def test_encode_text_from_captions():
    """Captions go through the tokenizer and match the reference on the same ids."""
    pytest.importorskip("ftfy")
    pytest.importorskip("regex")
    from cocoa_jax.models.tokenizer import find_merges_file

    try:
        find_merges_file()
    except FileNotFoundError:
        pytest.skip("no BPE merges file installed")
    reference = _reference(SMALL, 5)
    model = make_loaded("clip_vit_b32", *port_clip.convert_state_dict(reference.state_dict()))
    captions = ["a photo of a dog", "an X-ray of a broken wrist, 2 views"]
    tokens = model.tokenizer()(captions)
    assert rel_err(model.encode_text(captions), np.asarray(model.encode_text(tokens))) == 0.0
    assert _compare_text(model, reference, tokens.astype(np.int64)) < TOL


def test_round_trip_bit_identical_and_layout_spot_checks(tmp_path):
    reference = _reference(SMALL, 2)
    state_dict = reference.state_dict()
    _, converted = port_clip.convert_state_dict(state_dict)
    torch.save({"state_dict": state_dict}, tmp_path / "clip.pt")
    convert("clip_vit_b32", str(tmp_path / "clip.pt"), str(tmp_path / "out"))
    restored = load("clip_vit_b32", str(tmp_path / "out")).params
    pairs = zip(jax.tree_util.tree_leaves_with_path(converted), jax.tree_util.tree_leaves_with_path(restored))
    for (path_a, a), (path_b, b) in pairs:
        assert path_a == path_b and np.array_equal(np.asarray(b), a), path_a
    p = restored["params"]
    block = p["visual"]["transformer"]["resblocks_1"]
    np.testing.assert_array_equal(block["attn"]["in_proj"]["kernel"],
                                  state_dict["visual.transformer.resblocks.1.attn.in_proj_weight"].numpy().T)
    # Projections are applied as x @ proj in CLIP: stored as-is, not transposed.
    np.testing.assert_array_equal(p["visual"]["proj"], state_dict["visual.proj"].numpy())
    np.testing.assert_array_equal(p["text"]["text_projection"], state_dict["text_projection"].numpy())
    np.testing.assert_array_equal(p["logit_scale"], state_dict["logit_scale"].numpy())


def test_bad_checkpoints_are_named(tmp_path):
    state_dict = _reference(SMALL, 3).state_dict()
    cases = {
        "ln_final.weight": {k: v for k, v in state_dict.items() if k != "ln_final.weight"},
        "visual.transformer.resblocks.0.attn.in_proj_bias":
            {k: v for k, v in state_dict.items() if k != "visual.transformer.resblocks.0.attn.in_proj_bias"},
        "visual.extra_token": {**state_dict, "visual.extra_token": torch.zeros(3)},
        "visual.ln_post.weight": {**state_dict, "visual.ln_post.weight": torch.zeros(5)},
        "ModifiedResNet": {**state_dict, "visual.layer1.0.conv1.weight": torch.zeros(1)},
    }
    for i, (needle, bad) in enumerate(cases.items()):
        torch.save(bad, tmp_path / f"bad{i}.pt")
        with pytest.raises(CheckpointMismatchError, match=needle.replace(".", r"\.")):
            convert("clip_vit_b32", str(tmp_path / f"bad{i}.pt"), str(tmp_path / f"out{i}"))


def test_reference_matches_openai_layout_when_installed():
    """Our from-scratch torch reference == openai/CLIP's model code (keys, shapes, outputs)."""
    clip_model = clip_anytorch_file("model")
    if clip_model is None:
        pytest.skip("clip-anytorch not installed (pip install --no-deps clip-anytorch)")
    ours = _reference(SMALL, 4)
    c = SMALL
    theirs = clip_model.CLIP(c["embed_dim"], c["image_resolution"], c["vision_layers"], c["vision_width"],
                             c["vision_patch_size"], c["context_length"], c["vocab_size"],
                             c["transformer_width"], c["transformer_width"] // 64, c["transformer_layers"])
    assert {k: v.shape for k, v in theirs.state_dict().items()} == {k: v.shape for k, v in ours.state_dict().items()}
    theirs.load_state_dict(ours.state_dict())
    theirs.eval()
    images, tokens = torch.randn(2, 3, 64, 64), torch.from_numpy(clip_tokens(2, 4))
    with torch.no_grad():
        assert rel_err(theirs.encode_image(images), ours.encode_image(images)) < 1e-6
        assert rel_err(theirs.encode_text(tokens), ours.encode_text(tokens)) < 1e-6


# ----------------------------------------------------------------------------- other sizes, open_clip

# ViT-B/16- and ViT-L/14-shaped (patch 16 / 14, 3 heads of 64 for "L"), reduced in width and depth.
SIZES = {
    "B16": dict(embed_dim=64, image_resolution=64, vision_layers=2, vision_width=128, vision_patch_size=16,
                context_length=77, vocab_size=49408, transformer_width=128, transformer_layers=2),
    "L14": dict(embed_dim=96, image_resolution=56, vision_layers=2, vision_width=192, vision_patch_size=14,
                context_length=77, vocab_size=49408, transformer_width=128, transformer_layers=1),
}


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
@pytest.mark.parametrize("size", sorted(SIZES))
def test_other_vit_sizes_match_openai_build_model(size, tmp_path):
    config = SIZES[size]
    reference, state_dict = openai_clip_model(config, 10)
    torch.save(state_dict, tmp_path / f"ViT-{size}.pt")
    convert("clip_vit", str(tmp_path / f"ViT-{size}.pt"), str(tmp_path / "out"))
    model = load("clip_vit", str(tmp_path / "out"))
    assert {k: model.config[k] for k in config} == config
    r = config["image_resolution"]
    assert model.input_shape == (r, r, 3) and model.representation_dim == config["embed_dim"]
    rng = np.random.RandomState(2)
    x = rng.randn(2, r, r, 3).astype(np.float32)
    direction = rng.randn(config["embed_dim"]).astype(np.float32)
    reps, grad = flax_reps_and_cosine_grad(model.network_fn, model.params, x, direction)
    ref_reps, ref_grad = torch_reps_and_cosine_grad(reference.encode_image, x, direction)
    assert rel_err(reps, ref_reps) < TOL and rel_err(grad, ref_grad) < TOL
    assert _compare_text(model, reference, clip_tokens(2, 3)) < TOL


@pytest.mark.slow  # > 2 s: out of the quick subset (runs in the full suite)
def test_open_clip_gelu_training_checkpoint(tmp_path):
    """open_clip's epoch_K.pt ({'epoch','name','state_dict': module.*}) of a GELU model: converted
    with --option activation=gelu it matches; with the QuickGELU default it does not."""
    config = SIZES["B16"]
    reference, state_dict = openai_clip_model(config, 11, gelu=True)
    torch.save({"epoch": 32, "name": "ViT-B-16_laion", "state_dict": {"module." + k: v for k, v in state_dict.items()},
                "optimizer": {}}, tmp_path / "epoch_32.pt")
    convert("clip_vit", str(tmp_path / "epoch_32.pt"), str(tmp_path / "gelu"), options={"activation": "gelu"})
    convert("clip_vit", str(tmp_path / "epoch_32.pt"), str(tmp_path / "quick"))
    model, wrong = load("clip_vit", str(tmp_path / "gelu")), load("clip_vit", str(tmp_path / "quick"))
    assert model.config["activation"] == "gelu" and any("module." in n for n in model.notes)
    pixels = np.random.RandomState(3).rand(2, 64, 64, 3).astype(np.float32)
    x = model.preprocess.normalize(pixels).astype(np.float32)  # the torch module takes normalised input
    with torch.no_grad():
        expected = reference.encode_image(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    assert rel_err(model.encode(pixels), expected) < TOL  # the easy path: [0, 1] pixels, normalised inside
    assert rel_err(wrong.encode(pixels), expected) > 1e-3
    assert _compare_text(model, reference, clip_tokens(2, 5)) < TOL
    with pytest.raises(ValueError, match="activation"):
        convert("clip_vit", str(tmp_path / "epoch_32.pt"), str(tmp_path / "bad"), options={"activation": "relu"})
    # A key missing from the file is named with the file's `module.` prefix.
    sd = {"module." + k: v for k, v in state_dict.items() if k != "ln_final.bias"}
    torch.save({"state_dict": sd}, tmp_path / "miss.pt")
    with pytest.raises(CheckpointMismatchError, match=r"'module\.ln_final\.bias'"):
        convert("clip_vit", str(tmp_path / "miss.pt"), str(tmp_path / "miss"))


def test_vision_head_width_option(tmp_path):
    """open_clip's ViT-H-14 image tower uses 80-wide heads: width 160 -> 2 heads of 80 (not 2 of 64 + rest)."""
    config = dict(SIZES["B16"], vision_width=160)
    state_dict = _reference(config, 12).state_dict()
    torch.save(state_dict, tmp_path / "h.pt")
    convert("clip_vit", str(tmp_path / "h.pt"), str(tmp_path / "out"), options={"vision_head_width": "80"})
    model = load("clip_vit", str(tmp_path / "out"))
    assert model.config["vision_head_width"] == 80 and model.module.config.vision_heads == 2
    with pytest.raises(CheckpointMismatchError, match="vision_head_width 64"):
        convert("clip_vit", str(tmp_path / "h.pt"), str(tmp_path / "bad"))
