"""`.safetensors` checkpoints (open_clip's `open_clip_model.safetensors`) for the CLIP port.

open_clip publishes each model twice, `open_clip_pytorch_model.bin` (torch.save) and
`open_clip_model.safetensors`, holding the same state dict; its OpenAI-architecture CLIPs use
OpenAI's key names. The reference is openai/CLIP's own `build_model` (clip-anytorch's
`model.py`, loaded by path as tests/models/test_models_clip.py does), with `nn.GELU` in place of
QuickGELU for open_clip's GELU models; random weights at reduced size, written with
`safetensors.torch.save_file` and converted with `cocoa-jax convert`.
"""
from __future__ import annotations


import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from safetensors.torch import save_file  # noqa: E402

from cocoa_jax.cli import main  # noqa: E402
from cocoa_jax.models import load  # noqa: E402
from cocoa_jax_ports import NotACheckpointError, convert  # noqa: E402
from tests.reference.clip import clip_tokens, openai_clip_model  # noqa: E402
from tests.reference.compare import flax_reps_and_cosine_grad, rel_err, torch_reps_and_cosine_grad  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
torch.set_num_threads(2)
TOL = 1e-5
B16 = dict(embed_dim=64, image_resolution=64, vision_layers=2, vision_width=128, vision_patch_size=16,
           context_length=77, vocab_size=49408, transformer_width=128, transformer_layers=2)


def _openai_model(seed, gelu):
    """openai's build_model on a random state dict of B16's shapes (fp32), QuickGELU or GELU."""
    return openai_clip_model(B16, seed, gelu)[0]


def _save_safetensors(model, path, dtype=torch.float32):
    """The model's state dict as safetensors (contiguous copies: the format refuses shared storage)."""
    save_file({k: v.detach().to(dtype).contiguous().clone() for k, v in model.state_dict().items()}, str(path))
    return str(path)


def _check(model, reference):
    rng = np.random.RandomState(1)
    x = rng.randn(2, 64, 64, 3).astype(np.float32)
    direction = rng.randn(B16["embed_dim"]).astype(np.float32)
    reps, grad = flax_reps_and_cosine_grad(model.network_fn, model.params, x, direction)  # torch's input
    ref_reps, ref_grad = torch_reps_and_cosine_grad(reference.encode_image, x, direction)
    tokens = clip_tokens(2, 2)
    with torch.no_grad():
        ref_text = reference.encode_text(torch.from_numpy(tokens)).numpy()
    text = np.asarray(model.encode_text(tokens.astype(np.int32)))
    errors = rel_err(reps, ref_reps), rel_err(grad, ref_grad), rel_err(text, ref_text)
    assert max(errors) < TOL, errors


def test_open_clip_gelu_safetensors_through_the_command(tmp_path, capsys):
    """open_clip_model.safetensors of a GELU model (e.g. laion ViT-B-16), `cocoa-jax convert clip_vit ...
    --option activation=gelu`: image representations, input gradients and text match."""
    reference = _openai_model(20, gelu=True)
    path = _save_safetensors(reference, tmp_path / "open_clip_model.safetensors")
    out = tmp_path / "out"
    assert main(["convert", "clip_vit", path, str(out), "--option", "activation=gelu"]) == 0
    assert "converted clip_vit" in capsys.readouterr().out
    model = load("clip_vit", str(out))
    assert {k: model.config[k] for k in B16} == B16 and model.config["activation"] == "gelu"
    _check(model, reference)


@pytest.mark.slow
def test_fp16_safetensors_quickgelu(tmp_path):
    """An fp16 safetensors state dict of an OpenAI (QuickGELU) CLIP: widened exactly, noted; the
    reference runs the same fp16-rounded weights in fp32."""
    reference = _openai_model(21, gelu=False)
    path = _save_safetensors(reference, tmp_path / "open_clip_model.safetensors", torch.float16)
    with torch.no_grad():
        for p in reference.parameters():
            p.copy_(p.half().float())
    convert("clip_vit", path, str(tmp_path / "out"))
    model = load("clip_vit", str(tmp_path / "out"))
    assert any("fp16" in n for n in model.notes) and any("activation not given" in n for n in model.notes)
    _check(model, reference)


def test_damaged_safetensors_are_named(tmp_path, capsys):
    reference = _openai_model(22, gelu=False)
    good = _save_safetensors(reference, tmp_path / "good.safetensors")
    data = open(good, "rb").read()
    cut_header = tmp_path / "cut_header.safetensors"
    cut_header.write_bytes(data[:40])
    with pytest.raises(NotACheckpointError, match="truncated or damaged safetensors"):
        convert("clip_vit", str(cut_header), str(tmp_path / "a"))
    cut_data = tmp_path / "cut_data.safetensors"
    header_end = 8 + int.from_bytes(data[:8], "little")
    cut_data.write_bytes(data[:header_end + 100])
    with pytest.raises(NotACheckpointError, match="not a readable safetensors file"):
        convert("clip_vit", str(cut_data), str(tmp_path / "b"))
    assert main(["convert", "clip_vit", str(cut_data), str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cocoa-jax convert: error:" in err[0] and "safetensors" in err[0]
    for name in "abc":
        assert not (tmp_path / name).exists()
