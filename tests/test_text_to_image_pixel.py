"""Pixel-space text-to-image pipelines: a Stable Diffusion layout saved without a VAE
(`"vae": [null, null]` in model_index.json), whose conditional UNet denoises the RGB images
themselves. Trained (LoRA and whole UNet), generated from by prompt, attributed and paid
through the real CLI, as the latent pipelines in test_text_to_image.py are."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from royalty.attribution.model.tiny_pipeline import TinyPipelineConfig, build_tiny_pipeline
from test_text_to_image import T2I, make_captioned_targets
from train_fixtures import make_data, royalty

# 16 px images denoised as they are; the two-level UNet halves them once, attention below
PIXEL = TinyPipelineConfig(vae_channels=(), cross_attention_levels=(False, True))


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("t2i-pixel")
    return {
        "base": build_tiny_pipeline(root / "base", PIXEL),
        "data": make_data(root / "data"),
        "targets": make_captioned_targets(root / "targets"),
        "root": root,
    }


@pytest.fixture(scope="module")
def lora_run(folders) -> Path:
    out = folders["root"] / "lora-run"
    royalty("train", folders["data"], "--targets", folders["targets"], "--out", out, "--model", folders["base"],
            "--steps", "4", "--lr", "0.001", *T2I, "--quiet", check=True)  # fmt: skip
    return out


def test_the_pixel_pipeline_folder_has_no_vae_and_a_three_channel_unet(folders) -> None:
    from diffusers import StableDiffusionPipeline

    base = folders["base"]
    assert json.loads((base / "model_index.json").read_text())["vae"] == [None, None]
    assert not (base / "vae").exists()
    pipe = StableDiffusionPipeline.from_pretrained(base, vae=None, safety_checker=None, local_files_only=True)
    assert pipe.unet.config.in_channels == pipe.unet.config.out_channels == 3
    assert [type(b).__name__ for b in pipe.unet.down_blocks] == ["DownBlock2D", "CrossAttnDownBlock2D"]


def test_a_lora_fine_tune_values_the_images_it_denoises(lora_run, folders) -> None:
    from royalty.attribution.data.folders import load_targets
    from royalty.attribution.model.text_to_image import TextToImage, load_pipeline

    manifest = json.loads((lora_run / "run.json").read_text())
    assert manifest["model_source"]["kind"] == "text-to-image-pipeline" and "lora" in manifest["model_source"]
    values = pd.read_parquet(lora_run / "values.parquet")
    assert values["value"].abs().sum() > 0
    # the task's inputs are the images themselves, untouched, in [-1, 1]
    pipe = load_pipeline(folders["base"])
    table = load_targets(folders["targets"], 16)
    inputs = TextToImage(pipe.unet, pipe, seed=0).inputs(table)
    assert pipe.vae is None and torch.equal(inputs.x, table.images)


def test_generate_by_prompt_attribute_and_pay(lora_run, tmp_path) -> None:
    from PIL import Image

    gen = tmp_path / "gen"
    proc = royalty("generate", lora_run, "--prompt", "bar", "--num", "2", "--steps", "3", "--guidance-scale", "2",
                   "--out", gen, "--quiet")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    images = sorted(gen.glob("*.png"))
    assert len(images) == 2 and all(Image.open(p).size == (16, 16) for p in images)
    assert len({Image.open(p).tobytes() for p in images}) == 2  # one seed each
    assert royalty("attribute", lora_run, gen, "--name", "gen", "--quiet").returncode == 0
    pay = royalty("payout", lora_run, "--attribution", "gen", "--revenue", "10.00", "--on-no-positive", "equal")
    assert pay.returncode == 0, pay.stderr
    payees = json.loads(pay.stdout)["payees"]
    assert sum(p["amount"]["minor"] + p["carried_forward"]["minor"] for p in payees) == 1000


def test_replay_gives_the_runs_values_exactly(lora_run, folders) -> None:
    proc = royalty("attribute", lora_run, folders["targets"], "--name", "own", "--quiet")
    assert proc.returncode == 0, proc.stderr
    got = pd.read_parquet(lora_run / "attributions" / "own" / "values.parquet")["value"].to_numpy()
    assert (got == pd.read_parquet(lora_run / "values.parquet")["value"].to_numpy()).all()


def test_a_full_unet_fine_tune_saves_a_pixel_pipeline(folders, tmp_path) -> None:
    out = tmp_path / "run"
    royalty("train", folders["data"], "--targets", folders["targets"], "--out", out, "--model", folders["base"],
            "--steps", "2", "--lora-rank", "0", *T2I, "--quiet", check=True)  # fmt: skip
    assert json.loads((out / "model" / "model_index.json").read_text())["vae"] == [None, None]
    gen = royalty("generate", out, "--prompt", "circle", "--num", "1", "--steps", "2", "--out", tmp_path / "g", "--quiet")
    assert gen.returncode == 0, gen.stderr


def test_a_pipeline_without_vae_needs_an_rgb_unet(folders, tmp_path) -> None:
    odd = tmp_path / "odd"
    shutil.copytree(folders["base"], odd)
    config = json.loads((odd / "unet" / "config.json").read_text())
    config["in_channels"] = config["out_channels"] = 4
    (odd / "unet" / "config.json").write_text(json.dumps(config))
    proc = royalty("train", folders["data"], "--targets", folders["targets"], "--out", tmp_path / "r", "--model", odd, *T2I, "--quiet")
    assert proc.returncode == 65 and "RGB" in proc.stderr


def test_weights_that_do_not_fit_their_config_are_a_data_error(folders, tmp_path) -> None:
    odd = tmp_path / "odd"
    shutil.copytree(folders["base"], odd)
    config = json.loads((odd / "unet" / "config.json").read_text())
    config["block_out_channels"] = [16, 64]
    (odd / "unet" / "config.json").write_text(json.dumps(config))
    proc = royalty("train", folders["data"], "--targets", folders["targets"], "--out", tmp_path / "r", "--model", odd, *T2I, "--quiet")
    assert proc.returncode == 65 and "cannot load the text-to-image pipeline" in proc.stderr
    assert not (tmp_path / "r").exists()
