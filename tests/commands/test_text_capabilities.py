"""Which encoders take captions is a capability of the architecture table (`ArchSpec.joint_text`,
`ArchSpec.text_tower`), never a list of names in a command: the flag is true exactly where the text tower
maps into the image representation space (checked on every architecture's abstract shapes), and
`explain`'s image and text modes follow the flag (a table with the flags moved moves the answers)."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cocoa_jax import cli, models
from cocoa_jax.commands import explain, explain_text
from cocoa_jax.commands.errors import UsageError


def test_joint_text_is_set_exactly_where_both_towers_share_one_space():
    for name, spec in models.ARCHITECTURES.items():
        config = dict(spec.default_config)
        module = spec.build(config)
        fns = spec.encoders(module, config)
        assert spec.text_tower == (fns.text is not None), name
        if not spec.joint_text:
            assert fns.encode is None or fns.text is None, f"{name} has both towers but no joint_text flag"
            continue
        _, params = models.init_abstract(name, config)
        image = jax.eval_shape(fns.encode, params, jax.ShapeDtypeStruct((1, *spec.input_shape(config)), jnp.float32))
        text = jax.eval_shape(fns.text, params, jax.ShapeDtypeStruct((1, int(fns.context_length)), jnp.int32))
        assert image.shape == text.shape == (1, fns.dim), (name, image.shape, text.shape)
    assert {n for n, s in models.ARCHITECTURES.items() if s.joint_text} >= {"clip_vit", "clip_vit_b32", "siglip"}


@pytest.fixture
def files(tmp_path):
    from PIL import Image

    (tmp_path / "weights").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "img.png")
    return {"weights": str(tmp_path / "weights"), "image": str(tmp_path / "img.png"), "out": str(tmp_path / "out")}


def _moved(monkeypatch, **flags):
    table = dict(models.ARCHITECTURES)
    for name, joint in flags.items():
        table[name] = dataclasses.replace(table[name], joint_text=joint)
    monkeypatch.setattr(models, "ARCHITECTURES", table)


def test_explain_image_mode_reads_the_flag(files, monkeypatch):
    def check(model):
        args = cli.parse(["explain", "--model", model, "--weights", files["weights"], "--images", files["image"],
                          "--corpus-text", "a dog", "--foil-text", "a cat", "--out", files["out"]])
        return explain._check_data_arguments(args, ("cocoa",))

    assert check("siglip")["corpus_text"] == ["a dog"]
    with pytest.raises(UsageError, match=r"need an image-text encoder \(clip_vit_b32, clip_vit, siglip"):
        check("resnet18")
    _moved(monkeypatch, resnet18=True, siglip=False)
    assert check("resnet18")["foil_text"] == ["a cat"]
    with pytest.raises(UsageError, match=r"\(clip_vit_b32, resnet18, clip_vit, siglip2_naflex\); --model siglip has no text tower"):
        check("siglip")


def test_explain_text_mode_reads_the_flags(files, monkeypatch):
    def check(model, *extra):
        args = cli.parse(["explain", "--text", "a dog", "--model", model, "--weights", files["weights"],
                          "--foil-text", "a cat", *extra, "--out", files["out"]])
        return explain_text.check(args)

    assert check("siglip", "--corpus", files["image"])["files"]["corpus"] == [files["image"]]
    checked = check("sentence_bert", "--corpus-text", "a puppy")
    assert checked["texts"] == ["a dog"]
    # no --methods: the text mode's defaults (the image defaults' RISE grid was refused on a sentence)
    from cocoa_jax.text.pipeline import DEFAULT_TEXT_METHODS

    assert checked["methods"] == DEFAULT_TEXT_METHODS
    assert check("sentence_bert", "--corpus-text", "a puppy", "--methods", "rise")["methods"] == ("rise",)
    with pytest.raises(UsageError, match="--corpus images need an image-text encoder"):
        check("sentence_bert", "--corpus", files["image"])
    with pytest.raises(UsageError, match="--text needs a model with a text tower: digits, digits_clip, "):
        check("resnet18", "--corpus-text", "a puppy")
    _moved(monkeypatch, siglip=False, resnet18=True)   # an image model without the flag has no text tower
    with pytest.raises(UsageError, match="--text needs a model with a text tower: .*; got --model siglip"):
        check("siglip", "--corpus", files["image"])
    assert check("resnet18", "--corpus", files["image"])["texts"] == ["a dog"]


def test_localize_takes_every_joint_text_architecture(files, monkeypatch):
    from cocoa_jax.commands import localize

    def check(model):
        return localize.check_args(cli.parse(["localize", "--model", model, "--weights", files["weights"], "--image",
                                              files["image"], "--query", "dog", "--out", files["out"]]))

    assert check("siglip")["query"] == "dog" and check("clip_vit")["foil"] is None
    with pytest.raises(ValueError, match="--model must be one of digits_clip, clip_vit_b32, clip_vit, siglip, siglip2_naflex, got"):
        check("resnet18")
    _moved(monkeypatch, resnet18=True, siglip=False)
    assert check("resnet18")["image"] == files["image"]
    with pytest.raises(ValueError, match="--model must be one of digits_clip, clip_vit_b32, resnet18, clip_vit, siglip2_naflex, got"):
        check("siglip")
