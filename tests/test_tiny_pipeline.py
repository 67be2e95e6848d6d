"""The tiny Stable Diffusion pipeline: built offline, loadable, sampleable, reproducible, LoRA-round-trippable."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline
from peft import LoraConfig
from safetensors import safe_open
from transformers import CLIPTokenizer

from royalty.attribution.model.text_to_image import canonical_safetensors, save_lora
from royalty.attribution.model.tiny_pipeline import TinyPipelineConfig, build_tiny_pipeline, build_tokenizer

MAX_LENGTH = TinyPipelineConfig().max_length


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "pipe")


def load(folder: Path) -> StableDiffusionPipeline:
    pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("caption", ["a red heart emoji", "café ☕", "Ünïcödé 漢字 🙂 tabs\tand\nnewlines", ""])
def test_tokenizer_loads_offline_and_tokenizes_any_text(tmp_path: Path, caption: str) -> None:
    build_tokenizer(tmp_path, MAX_LENGTH)
    tok = CLIPTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert tok.model_max_length == MAX_LENGTH
    ids = tok(caption, padding="max_length", max_length=MAX_LENGTH, truncation=True).input_ids
    assert len(ids) == MAX_LENGTH
    assert all(0 <= i < len(tok) for i in ids)
    assert ids[0] == tok.bos_token_id and tok.eos_token_id in ids
    # no byte is unknown: the text decodes back (lower-cased, whitespace folded, as CLIP's does)
    unpadded = tok(caption).input_ids
    if len(unpadded) <= MAX_LENGTH:
        assert tok.decode(unpadded, skip_special_tokens=True) == " ".join(caption.lower().split())


def test_tokenizer_merges_and_truncates(tmp_path: Path) -> None:
    build_tokenizer(tmp_path, MAX_LENGTH)
    tok = CLIPTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert tok.tokenize("the") == ["the</w>"]  # merges apply
    ids = tok("word " * 50, padding="max_length", max_length=MAX_LENGTH, truncation=True).input_ids
    assert len(ids) == MAX_LENGTH and ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id


def test_a_tokenizer_built_with_words_makes_each_word_one_token(tmp_path: Path) -> None:
    """A base trained on captions: each caption word one token, other text still byte-complete."""
    words = ("fox", "smiling", "face", "with", "sunglasses", "a", "cat")
    build_tokenizer(tmp_path, MAX_LENGTH, words)
    tok = CLIPTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert tok.tokenize("smiling face with sunglasses") == ["smiling</w>", "face</w>", "with</w>", "sunglasses</w>"]
    assert tok.tokenize("Fox") == ["fox</w>"] and tok.tokenize("cat") == ["cat</w>"]
    # a word outside the list falls back to smaller pieces, never to an unknown token
    ids = tok("foxglove").input_ids
    assert tok.decode(ids, skip_special_tokens=True) == "foxglove" and tok.unk_token_id not in ids[1:-1]
    # without words, the files are what they always were
    build_tokenizer(tmp_path / "plain", MAX_LENGTH)
    build_tokenizer(tmp_path / "plain-again", MAX_LENGTH, ())
    assert digests(tmp_path / "plain") == digests(tmp_path / "plain-again")


def test_tokenizer_files_are_reproducible(tmp_path: Path) -> None:
    build_tokenizer(tmp_path / "a", MAX_LENGTH)
    build_tokenizer(tmp_path / "b", MAX_LENGTH)
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    assert (tmp_path / "a" / "merges.txt").read_text().startswith("#version: 0.2\n")


def test_pipeline_loads_and_samples(base: Path) -> None:
    pipe = load(base)
    assert pipe.safety_checker is None
    assert pipe.vae_scale_factor == 2
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 16
    assert pipe.text_encoder.config.vocab_size == len(pipe.tokenizer)
    out = pipe("a red heart", num_inference_steps=2, height=16, width=16, generator=torch.Generator().manual_seed(0), output_type="np")
    assert out.images.shape == (1, 16, 16, 3)
    assert out.nsfw_content_detected is None
    again = pipe("a red heart", num_inference_steps=2, height=16, width=16, generator=torch.Generator().manual_seed(0), output_type="np")
    assert (out.images == again.images).all()


def test_build_leaves_global_rng_alone(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_pipeline(tmp_path / "p")
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_prediction_type_is_recorded(tmp_path: Path, prediction_type: str) -> None:
    folder = build_tiny_pipeline(tmp_path / "p", TinyPipelineConfig(prediction_type=prediction_type))
    assert json.loads((folder / "scheduler" / "scheduler_config.json").read_text())["prediction_type"] == prediction_type


def test_unknown_prediction_type_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="prediction_type"):
        build_tiny_pipeline(tmp_path / "p", TinyPipelineConfig(prediction_type="sample"))
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("levels", [(True,), (False, False)], ids=["one flag for two levels", "no attention"])
def test_cross_attention_levels_need_a_flag_per_level_and_one_set(tmp_path: Path, levels: tuple[bool, ...]) -> None:
    with pytest.raises(ValueError, match="cross_attention_levels"):
        build_tiny_pipeline(tmp_path / "p", TinyPipelineConfig(cross_attention_levels=levels))
    assert not (tmp_path / "p").exists()


def test_building_twice_gives_identical_files(base: Path, tmp_path: Path) -> None:
    again = digests(build_tiny_pipeline(tmp_path / "again"))
    assert again == digests(base)
    assert any(name.endswith(".safetensors") for name in again)
    other = digests(build_tiny_pipeline(tmp_path / "seed1", TinyPipelineConfig(seed=1)))
    assert other["unet/diffusion_pytorch_model.safetensors"] != again["unet/diffusion_pytorch_model.safetensors"]


def unet_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    config = TinyPipelineConfig()
    latents = torch.randn(2, config.latent_channels, 8, 8, generator=g)
    text = torch.randn(2, config.max_length, config.cross_attention_dim, generator=g)
    return latents, torch.tensor([10, 500]), text


@pytest.mark.parametrize("alpha", [4, 8])  # 8: the saved metadata must carry alpha != rank
def test_lora_round_trip_in_diffusers_format(base: Path, tmp_path: Path, alpha: int) -> None:
    latents, t, text = unet_inputs()
    trained = load(base).unet
    with torch.no_grad():
        before = trained(latents, t, text).sample
    trained.add_adapter(
        LoraConfig(r=4, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    )
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, param in trained.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=g) * 0.1)
        expected = trained(latents, t, text).sample
    assert not torch.allclose(expected, before)  # the LoRA changes the output

    save_lora(trained, tmp_path / "lora")
    assert sorted(p.name for p in (tmp_path / "lora").iterdir()) == ["pytorch_lora_weights.safetensors"]
    with safe_open(tmp_path / "lora" / "pytorch_lora_weights.safetensors", "pt") as f:
        keys = list(f.keys())
    # diffusers' names (what its training scripts write), not peft's lora_A/lora_B
    assert keys and all(k.startswith("unet.") and k.endswith((".lora.down.weight", ".lora.up.weight")) for k in keys)

    pipe = load(base)
    pipe.load_lora_weights(tmp_path / "lora")
    with torch.no_grad():
        loaded = pipe.unet(latents, t, text).sample
    assert torch.allclose(loaded, expected, rtol=0, atol=1e-6)


def safetensors_parts(path: Path) -> tuple[dict, bytes]:
    """The parsed JSON header and the tensor bytes of a .safetensors file."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def test_lora_file_is_reproducible(base: Path, tmp_path: Path) -> None:
    parts = []
    for name in ("a", "b"):
        unet = load(base).unet
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # peft draws lora_A from the global RNG
            unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
        save_lora(unet, tmp_path / name)
        parts.append(safetensors_parts(tmp_path / name / "pytorch_lora_weights.safetensors"))
    assert parts[0] == parts[1]
    a, b = ((tmp_path / n / "pytorch_lora_weights.safetensors").read_bytes() for n in ("a", "b"))
    assert a == b
    assert json.loads(parts[0][0]["__metadata__"]["lora_adapter_metadata"])["unet.target_modules"] == ["to_k", "to_out.0", "to_q", "to_v"]


def test_canonical_safetensors_makes_key_order_irrelevant(tmp_path: Path) -> None:
    """safetensors writes metadata keys in Rust HashMap order, which changes from process to
    process: the same header with its keys in two orders becomes the same bytes, and
    still loads as the same tensors."""
    from safetensors.torch import save_file

    tensors = {"b": torch.arange(6.0).reshape(2, 3), "a": torch.ones(5, dtype=torch.float64)}
    save_file(tensors, tmp_path / "x.safetensors", metadata={"format": "pt", "zeta": "1", "alpha": "2"})
    header, data = safetensors_parts(tmp_path / "x.safetensors")
    flipped = json.dumps(dict(reversed(list(header.items())))).encode()
    flipped += b" " * (-len(flipped) % 8)
    (tmp_path / "y.safetensors").write_bytes(len(flipped).to_bytes(8, "little") + flipped + data)
    assert (tmp_path / "x.safetensors").read_bytes() != (tmp_path / "y.safetensors").read_bytes()
    for name in ("x", "y"):
        canonical_safetensors(tmp_path / f"{name}.safetensors")
    assert (tmp_path / "x.safetensors").read_bytes() == (tmp_path / "y.safetensors").read_bytes()
    with safe_open(tmp_path / "y.safetensors", framework="pt") as fh:
        assert fh.metadata() == {"format": "pt", "zeta": "1", "alpha": "2"}
        assert all(torch.equal(fh.get_tensor(k), v) for k, v in tensors.items())
