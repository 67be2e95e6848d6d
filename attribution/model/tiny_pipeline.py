"""A tiny Stable Diffusion pipeline built in code, for tests and for bases built from scratch.

The text-to-image path must be testable on a CPU without the model hub: this module writes a
complete `StableDiffusionPipeline` folder (VAE, CLIP text encoder and tokenizer, conditional
UNet, DDPM scheduler) from configs alone, with a byte-level BPE tokenizer generated here rather
than downloaded. Everything is seeded, so building twice gives byte-identical files; it loads
with `StableDiffusionPipeline.from_pretrained` as a real Stable Diffusion checkpoint does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from royalty.quiet import quiet_model_libraries

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
# A few frequent English pairs, so that the BPE really merges (as CLIP's does) while the
# vocabulary stays tiny. "</w>" marks the end of a word, as in CLIP's own merges.
_MERGES: tuple[tuple[str, str], ...] = (
    ("t", "h"), ("th", "e</w>"), ("a", "n"), ("e", "r</w>"), ("i", "n"),
    ("o", "n</w>"), ("e", "d</w>"), ("r", "e"), ("a", "t"), ("e", "n"),
)  # fmt: skip
PREDICTION_TYPES = ("epsilon", "v_prediction")


@dataclass(frozen=True)
class TinyPipelineConfig:
    """Sizes of the tiny pipeline: small enough to train and sample in seconds on a CPU.

    The VAE halves the image once per VAE block but the last (scale factor 2 with two blocks);
    with no VAE blocks the pipeline has no VAE and the UNet denoises RGB pixels (the folder's
    `model_index.json` says `"vae": [null, null]`). The UNet's cross-attention reads the text
    encoder's hidden states, so `text_hidden` must equal `cross_attention_dim`.
    """

    latent_channels: int = 4
    unet_channels: tuple[int, ...] = (32, 64)
    cross_attention_dim: int = 32
    text_hidden: int = 32
    text_layers: int = 2
    max_length: int = 16  # tokenizer model_max_length and the text model's positions
    vae_channels: tuple[int, ...] = (32, 64)  # (): pixel space, no VAE
    # which UNet levels (outermost first) carry cross-attention; (): the outermost only, as
    # Stable Diffusion's lowest level has none
    cross_attention_levels: tuple[bool, ...] = ()
    prediction_type: str = "epsilon"
    norm_num_groups: int = 8
    sample_size: int = 16  # the image side the pipeline generates by default
    # words the tokenizer merges into whole tokens (a base trained on captions); empty: bytes only
    words: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        # fail on the config, before anything is built or written
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type {self.prediction_type!r} is not one of {PREDICTION_TYPES}")
        if self.text_hidden != self.cross_attention_dim:
            raise ValueError(f"text_hidden ({self.text_hidden}) must equal cross_attention_dim ({self.cross_attention_dim})")
        if self.max_length < 2:
            raise ValueError("max_length must leave room for the start and end tokens")
        if self.cross_attention_levels and (len(self.cross_attention_levels) != len(self.unet_channels) or not any(self.cross_attention_levels)):
            raise ValueError("cross_attention_levels needs one flag per UNet level, at least one of them set")

    @property
    def in_channels(self) -> int:
        """What the UNet denoises: VAE latents, or RGB pixels without a VAE."""
        return self.latent_channels if self.vae_channels else 3

    @property
    def attention_levels(self) -> tuple[bool, ...]:
        return self.cross_attention_levels or (True,) + (False,) * (len(self.unet_channels) - 1)


def _bpe(pieces: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE on one word: merge the best-ranked adjacent pair, everywhere, until none is known."""
    while len(pieces) > 1:
        pair = min(zip(pieces, pieces[1:]), key=lambda p: ranks.get(p, len(ranks)))
        if pair not in ranks:
            break
        merged, i = [], 0
        while i < len(pieces):
            if i + 1 < len(pieces) and (pieces[i], pieces[i + 1]) == pair:
                merged.append(pieces[i] + pieces[i + 1])
                i += 2
            else:
                merged.append(pieces[i])
                i += 1
        pieces = merged
    return pieces


def word_merges(words: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """BPE merges, after the fixed pairs, under which each of `words` is one token.

    Each word is tokenized with the merges so far and its two leftmost pieces merged, until
    it is whole; merges added later rank lower, so they never split a word listed earlier.
    """
    merges = list(_MERGES)
    ranks = {pair: i for i, pair in enumerate(merges)}
    table = bytes_to_unicode()
    for word in sorted(set(w.lower() for w in words)):
        encoded = "".join(table[b] for b in word.encode("utf-8"))
        if not encoded:
            continue
        pieces = _bpe([*encoded[:-1], encoded[-1] + "</w>"], ranks)
        while len(pieces) > 1:
            ranks[(pieces[0], pieces[1])] = len(merges)
            merges.append((pieces[0], pieces[1]))
            pieces = _bpe(pieces, ranks)
    return tuple(merges)


def _vocab(merges: tuple[tuple[str, str], ...]) -> dict[str, int]:
    """CLIP's vocabulary layout: bytes, bytes ending a word, merged pairs, then the two specials."""
    chars = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for token in [*chars, *(c + "</w>" for c in chars), *(a + b for a, b in merges), BOS, EOS]:
        vocab.setdefault(token, len(vocab))
    return vocab


def build_tokenizer(folder: Path, max_length: int, words: tuple[str, ...] = ()) -> None:
    """Write a CLIP tokenizer (vocab.json, merges.txt, tokenizer_config.json) into `folder`.

    Every byte has a token, so any text (any unicode) tokenizes without an unknown token;
    the files are written with fixed key order and newlines, so they are byte-for-byte
    the same on every call.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    merges = word_merges(words)
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": max_length,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
    }
    files = {
        "vocab.json": json.dumps(_vocab(merges), ensure_ascii=False, indent=2) + "\n",
        "merges.txt": "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
        "tokenizer_config.json": json.dumps(config, indent=2) + "\n",
    }
    for name, text in files.items():
        (folder / name).write_bytes(text.encode("utf-8"))


def _models(config: TinyPipelineConfig, vocab_size: int, bos: int, eos: int) -> tuple[UNet2DConditionModel, AutoencoderKL | None, CLIPTextModel]:
    """The three networks (no VAE in pixel space), initialised from the torch RNG the caller seeded."""
    vae_factor = 2 ** (len(config.vae_channels) - 1) if config.vae_channels else 1
    levels = config.attention_levels
    unet = UNet2DConditionModel(
        sample_size=config.sample_size // vae_factor,  # the default image, in latents
        in_channels=config.in_channels,
        out_channels=config.in_channels,
        layers_per_block=1,
        block_out_channels=config.unet_channels,
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in levels),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(levels)),
        cross_attention_dim=config.cross_attention_dim,
        attention_head_dim=8,  # diffusers reads it as the head count: it must divide the channels
        norm_num_groups=config.norm_num_groups,
    )
    n_vae = len(config.vae_channels)
    vae = None if not n_vae else AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n_vae,
        up_block_types=("UpDecoderBlock2D",) * n_vae,
        block_out_channels=config.vae_channels,
        layers_per_block=1,
        latent_channels=config.latent_channels,
        norm_num_groups=config.norm_num_groups,
        sample_size=config.sample_size,
    )
    text_config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=config.text_hidden,
        intermediate_size=2 * config.text_hidden,
        projection_dim=config.text_hidden,
        num_hidden_layers=config.text_layers,
        num_attention_heads=4,
        max_position_embeddings=config.max_length,
        # the pooled output finds the end token by id: it must be this vocabulary's
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    return unet, vae, CLIPTextModel(text_config)


def build_tiny_pipeline(folder: Path, config: TinyPipelineConfig = TinyPipelineConfig()) -> Path:
    """Build the tiny Stable Diffusion pipeline and save it (safetensors) into `folder`.

    The weights come from `config.seed` inside a forked RNG: the same config gives the same
    files, and the caller's global RNG state is left as it was.
    """
    folder = Path(folder)
    build_tokenizer(folder / "tokenizer", config.max_length, config.words)
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        unet, vae, text_encoder = _models(config, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
    # Stable Diffusion's own schedule (scaled-linear betas, no clipping, steps_offset 1: else the pipeline warns)
    scheduler = DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        steps_offset=1,
        prediction_type=config.prediction_type,
    )
    from diffusers import StableDiffusionPipeline  # imports image processors: only when writing

    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def main(argv: list[str] | None = None) -> None:
    """`python -m royalty.attribution.model.tiny_pipeline DIR`: a pipeline to try royalty's text-to-image path on."""
    import argparse

    ap = argparse.ArgumentParser(description="Write a tiny Stable-Diffusion-layout pipeline (random weights, 16 px images) to DIR.")
    ap.add_argument("folder", type=Path)
    ap.add_argument("--prediction-type", choices=PREDICTION_TYPES, default="epsilon")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    quiet_model_libraries()
    if args.folder.exists() and any(args.folder.iterdir()):
        raise SystemExit(f"{args.folder} is not empty")
    build_tiny_pipeline(args.folder, TinyPipelineConfig(prediction_type=args.prediction_type, seed=args.seed))
    print(args.folder)


if __name__ == "__main__":
    main()
