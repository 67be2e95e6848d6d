"""Text-to-image fine-tunes end to end: a tiny Stable-Diffusion-layout pipeline built from
configs (attribution/model/tiny_pipeline.py), captioned images, LoRA or the whole UNet,
then generate by prompt → attribute → payout → report, all through the real CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from royalty.attribution.model.tiny_pipeline import TinyPipelineConfig, build_tiny_pipeline
from train_fixtures import CONCEPTS, STYLES, draw, make_data, royalty

# 16 px images → 8×8 latents (VAE scale 2), which the two-level UNet halves once
T2I = ("--resolution", "16", "--batch-size", "4", "--timestep-draws", "1", "--seed", "0")


def make_captioned_targets(root: Path, concept: str = CONCEPTS[3], column: str = "caption") -> Path:
    """One target per owner, captioned with its concept: the prompt it was made from."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "metadata.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file_name", "target_id", "owner", column])
        for owner in STYLES:
            draw(concept, owner).save(root / f"{owner}.png")
            writer.writerow([f"{owner}.png", f"{concept}-{owner}", owner, concept])
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("t2i")
    return {
        "base": build_tiny_pipeline(root / "base"),
        "vbase": build_tiny_pipeline(root / "vbase", TinyPipelineConfig(prediction_type="v_prediction")),
        "data": make_data(root / "data"),
        "targets": make_captioned_targets(root / "targets"),
        "root": root,
    }


@pytest.fixture(scope="module")
def lora_run(folders) -> Path:
    out = folders["root"] / "lora-run"
    royalty(
        "train", folders["data"], "--targets", folders["targets"], "--out", out, "--model", folders["base"],
        "--steps", "6", "--optimizer", "adamw", "--lr", "0.001", "--checkpoint-every", "3", *T2I, check=True,
    )
    return out


def test_a_lora_run_records_its_base_and_writes_diffusers_lora_weights(lora_run, folders) -> None:
    manifest = json.loads((lora_run / "run.json").read_text())
    source = manifest["model_source"]
    assert source["kind"] == "text-to-image-pipeline" and source["path"] == str(folders["base"])
    assert len(source["sha256"]) == 64 and source["prediction_type"] == "epsilon"
    assert source["lora"] == {"rank": 4, "alpha": 4.0, "targets": ["to_k", "to_q", "to_v", "to_out.0"]}
    assert (lora_run / "model" / "pytorch_lora_weights.safetensors").is_file()
    # only the adapters trained: every UNet base weight, the VAE and the text encoder stay
    assert all("lora_" not in n for n in manifest["frozen_parameters"])
    values = pd.read_parquet(lora_run / "values.parquet")
    assert len(values) == 6 * 2 and values["value"].abs().sum() > 0


def test_the_lora_weights_load_into_the_base_pipeline_as_trained(folders, tmp_path) -> None:
    """`StableDiffusionPipeline.from_pretrained(BASE).load_lora_weights(RUN/model)` is the
    model the run trained: its UNet computes what the trained one does."""
    from diffusers import StableDiffusionPipeline

    from royalty.attribution.training.config import TrainConfig
    from royalty.attribution.training.trainer import prepare, train

    config = TrainConfig(
        data=folders["data"], targets=folders["targets"], out=tmp_path / "run", model=folders["base"], resolution=16,
        steps=3, batch_size=4, lr=0.01, optimizer="adamw", timestep_draws=1,
    )
    prep = prepare(config)
    train(prep)
    trained = prep.task.model.eval()
    pipe = StableDiffusionPipeline.from_pretrained(folders["base"], local_files_only=True, safety_checker=None)
    pipe.load_lora_weights(tmp_path / "run" / "model")
    g = torch.Generator().manual_seed(0)
    x, cond, t = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 16, 32, generator=g), torch.tensor([10, 500])
    with torch.no_grad():
        want = trained(x, t, encoder_hidden_states=cond).sample
        got = pipe.unet(x, t, encoder_hidden_states=cond).sample
        base = StableDiffusionPipeline.from_pretrained(folders["base"], local_files_only=True).unet(x, t, encoder_hidden_states=cond).sample
    assert torch.allclose(got, want, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(base, want, atol=1e-4)  # the adapters changed the model


def test_generate_by_prompt_then_attribute_payout_and_report(lora_run, tmp_path) -> None:
    gen = tmp_path / "gen"
    proc = royalty("generate", lora_run, "--prompt", "bar", "--prompt", "circle", "--num", "2", "--steps", "3", "--out", gen, "--quiet")
    assert proc.returncode == 0, proc.stderr
    meta = pd.read_csv(gen / "metadata.csv")
    assert meta["caption"].tolist() == ["bar", "bar", "circle", "circle"] and len(list(gen.glob("*.png"))) == 4
    assert (meta["guidance_scale"] == 1.0).all()
    proc = royalty("attribute", lora_run, gen, "--name", "gen", "--quiet")
    assert proc.returncode == 0, proc.stderr
    values = pd.read_parquet(lora_run / "attributions" / "gen" / "values.parquet")
    assert sorted(values["target_id"].unique()) == sorted(meta["target_id"])
    pay = royalty("payout", lora_run, "--attribution", "gen", "--revenue", "100.00", "--on-no-positive", "equal")
    assert pay.returncode == 0, pay.stderr
    payees = json.loads(pay.stdout)["payees"]
    assert sum(p["amount"]["minor"] + p["carried_forward"]["minor"] for p in payees) == 10000
    rep = royalty("report", lora_run, "--attribution", "gen", "--out", tmp_path / "r.html", "--quiet")
    assert rep.returncode == 0, rep.stderr
    assert "gen-00000000" in (tmp_path / "r.html").read_text()


def test_prompts_are_the_conditioning_of_the_values(lora_run, tmp_path) -> None:
    """The same images attributed under other prompts get other values: the captions are
    what the targets' losses are conditioned on."""
    other = make_captioned_targets(tmp_path / "t", column="caption")
    meta = pd.read_csv(other / "metadata.csv")
    meta["caption"] = ["a completely different prompt"] * len(meta)
    meta.to_csv(other / "metadata.csv", index=False)
    same = make_captioned_targets(tmp_path / "s")
    for name, folder in (("other", other), ("same", same)):
        assert royalty("attribute", lora_run, folder, "--name", name, "--quiet").returncode == 0
    a = pd.read_parquet(lora_run / "attributions" / "same" / "values.parquet")["value"].to_numpy()
    b = pd.read_parquet(lora_run / "attributions" / "other" / "values.parquet")["value"].to_numpy()
    run = pd.read_parquet(lora_run / "values.parquet")["value"].to_numpy()
    assert (a == run).all()  # the run's own targets and prompts: its own values, replayed exactly
    assert not (a == b).all()


def test_a_full_unet_fine_tune_saves_a_pipeline(folders, tmp_path) -> None:
    from diffusers import StableDiffusionPipeline

    out = tmp_path / "full"
    proc = royalty("train", folders["data"], "--targets", folders["targets"], "--out", out, "--model", folders["base"],
                   "--steps", "2", "--lora-rank", "0", "--optimizer", "sgd", "--lr", "0.01", *T2I, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "lora" not in json.loads((out / "run.json").read_text())["model_source"]
    pipe = StableDiffusionPipeline.from_pretrained(out / "model", local_files_only=True)
    assert pipe.unet.config.cross_attention_dim == 32


def test_v_prediction_pipelines_train(folders, tmp_path) -> None:
    out = tmp_path / "v"
    proc = royalty("train", folders["data"], "--targets", folders["targets"], "--out", out, "--model", folders["vbase"],
                   "--steps", "2", "--optimizer", "sgd", "--lr", "0.01", *T2I, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "run.json").read_text())["model_source"]["prediction_type"] == "v_prediction"


@pytest.mark.parametrize("problem", ["no column", "empty caption", "named column missing"])
def test_missing_captions_are_refused_by_row(folders, tmp_path, problem) -> None:
    data = make_data(tmp_path / "data")
    meta = pd.read_csv(data / "metadata.csv")
    args: tuple[str, ...] = ()
    if problem == "no column":
        meta = meta.drop(columns=["caption"])
    elif problem == "empty caption":
        meta.loc[2, "caption"] = ""
    else:
        args = ("--caption-column", "prompt")
    meta.to_csv(data / "metadata.csv", index=False)
    proc = royalty("train", data, "--targets", folders["targets"], "--out", tmp_path / "run", "--model", folders["base"],
                   "--steps", "1", *T2I, *args, "--quiet")
    assert proc.returncode == 65, proc.stderr
    assert {"no column": "--caption-column", "empty caption": meta.loc[2, "file_name"], "named column missing": "'prompt'"}[problem] in proc.stderr
    assert not (tmp_path / "run").exists()
    if problem == "empty caption":
        ok = royalty("train", data, "--targets", folders["targets"], "--out", tmp_path / "run", "--model", folders["base"],
                     "--steps", "1", *T2I, "--allow-empty-captions", "--quiet")
        assert ok.returncode == 0, ok.stderr


def test_text_to_image_only_options_and_layouts_are_refused(folders, tmp_path) -> None:
    targets = folders["targets"]
    pixel = royalty("train", folders["data"], "--targets", targets, "--out", tmp_path / "a", "--lora-rank", "4", *T2I, "--quiet")
    assert pixel.returncode == 2 and "text-to-image" in pixel.stderr
    sdxl = tmp_path / "sdxl"
    import shutil

    shutil.copytree(folders["base"], sdxl)
    index = json.loads((sdxl / "model_index.json").read_text())
    index["text_encoder_2"] = ["transformers", "CLIPTextModelWithProjection"]
    (sdxl / "model_index.json").write_text(json.dumps(index))
    proc = royalty("train", folders["data"], "--targets", targets, "--out", tmp_path / "b", "--model", sdxl, *T2I, "--quiet")
    assert proc.returncode == 65 and "SDXL" in proc.stderr
    bad = royalty("train", folders["data"], "--targets", targets, "--out", tmp_path / "c", "--model", folders["base"],
                  "--lora-targets", "no_such_layer", *T2I, "--quiet")
    assert bad.returncode == 2 and "no_such_layer" in bad.stderr
    odd = royalty("train", folders["data"], "--targets", targets, "--out", tmp_path / "d", "--model", folders["base"],
                  "--resolution", "18", "--quiet")
    assert odd.returncode == 2 and "multiple of 4" in odd.stderr


def test_generate_needs_prompts_exactly_for_text_to_image_runs(lora_run, tmp_path) -> None:
    proc = royalty("generate", lora_run, "--num", "1", "--out", tmp_path / "g", "--quiet")
    assert proc.returncode == 2 and "--prompt" in proc.stderr
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("bar\n\ncircle\n", encoding="utf-8")
    ok = royalty("generate", lora_run, "--prompts", prompts, "--num", "1", "--steps", "2", "--out", tmp_path / "g", "--quiet")
    assert ok.returncode == 0, ok.stderr
    assert pd.read_csv(tmp_path / "g" / "metadata.csv")["caption"].tolist() == ["bar", "circle"]


@pytest.mark.parametrize("mode", ["replay", "checkpoints"])
def test_both_attribute_modes_value_text_to_image_runs(lora_run, folders, mode) -> None:
    """Replay re-walks the run (base + LoRA rebuilt from the recorded recipe, final weights'
    hash checked); checkpoints mode starts from the saved adapters' states. On the run's
    own targets replay gives the run's values exactly; checkpoints mode (first order at
    the checkpoint's weights) gives values of the same sign pattern, not bit for bit."""
    name = f"own-{mode}"
    proc = royalty("attribute", lora_run, folders["targets"], "--name", name, "--mode", mode, "--quiet")
    assert proc.returncode == 0, proc.stderr
    got = pd.read_parquet(lora_run / "attributions" / name / "values.parquet")
    run = pd.read_parquet(lora_run / "values.parquet")
    assert list(got["sample_id"]) == list(run["sample_id"]) and list(got["target_id"]) == list(run["target_id"])
    if mode == "replay":
        assert (got["value"].to_numpy() == run["value"].to_numpy()).all()
    else:
        assert got["value"].abs().sum() > 0


def test_a_text_to_image_run_is_reproducible_byte_for_byte(folders, tmp_path) -> None:
    outputs = []
    for name in ("a", "b"):
        royalty("train", folders["data"], "--targets", folders["targets"], "--out", tmp_path / name, "--model", folders["base"],
                "--steps", "2", "--optimizer", "adamw", "--lr", "0.001", "--lora-alpha", "8", *T2I, "--quiet", check=True)
        outputs.append(json.loads((tmp_path / name / "run.json").read_text())["outputs"])
    assert outputs[0] == outputs[1]  # values, steps and the LoRA file (its header's keys sorted)


@pytest.mark.parametrize("lora_rank", ["4", "0"], ids=["lora", "full-unet"])
def test_with_sgd_the_step_values_track_the_targets_loss_change(folders, tmp_path, lora_rank) -> None:
    """At a small SGD step each step's Σ values is the first- and second-order prediction of
    how much the targets' loss (under their prompts) falls: they must rank the steps alike."""
    from scipy.stats import spearmanr

    out = tmp_path / "sgd"
    royalty("train", folders["data"], "--targets", folders["targets"], "--out", out, "--model", folders["base"],
            "--steps", "30", "--optimizer", "sgd", "--lr", "0.01", "--lora-rank", lora_rank, *T2I, "--quiet", check=True)
    steps = pd.read_parquet(out / "steps.parquet")
    change = steps["target_loss_before"] - steps["target_loss_after"]
    assert change.abs().min() > 0 and change.std() > 0
    rho = spearmanr(steps["value_sum"], change).statistic
    assert rho >= 0.97, f"Spearman {rho:.4f}"


def test_two_processes_equal_one_on_a_lora_run(folders, tmp_path) -> None:
    """torchrun: each process draws its share of the global batch's latents and captions;
    values, ledger and adapters equal the one-process run up to the summation order."""
    from distributed_fixtures import SGD_RTOL, _assert_same_run, _check, torchrun

    # first order: the fine-tune's secant second order differences two float32 gradients,
    # so the summation order moves it by ~3e-4 of its scale (its two processes are in test_distributed)
    args = ("--model", folders["base"], "--steps", "3", "--optimizer", "sgd", "--lr", "0.05", "--order", "1", *T2I, "--quiet")
    runs = {}
    for name, launch in (("one", royalty), ("two", torchrun)):
        runs[name] = tmp_path / name
        _check(launch("train", folders["data"], "--targets", folders["targets"], "--out", runs[name], *args))
    assert json.loads((runs["two"] / "run.json").read_text())["world_size"] == 2
    _assert_same_run(runs["one"], runs["two"], SGD_RTOL, weights_atol=1e-6)


def test_audit_retrains_a_text_to_image_run_through_its_task(lora_run) -> None:
    """The audit's retrainings train the same LoRA objective: everyone at seed 0 is the run."""
    proc = royalty("audit", lora_run, "--owners", "2", "--seeds", "1", "--quiet", check=True)
    checks = json.loads(proc.stdout)["checks"]
    assert checks["base_matches_run"] is True
    assert checks["grand_coalition_reproduces_run"] is True


def test_a_text_to_image_base_gets_the_fine_tune_recipe_and_a_pixel_unet_the_from_scratch_one(folders, tmp_path):
    """Options left out come from the recipe for the model; an option given always wins."""
    from royalty.attribution.training.config import FINE_TUNE, FROM_SCRATCH, TrainConfig

    common = ("--resolution", "16", "--batch-size", "4", "--seed", "0", "--quiet")
    royalty("train", folders["data"], "--targets", folders["targets"], "--out", tmp_path / "ft", "--model", folders["base"],
            "--steps", "1", *common, check=True)
    config = json.loads((tmp_path / "ft" / "run.json").read_text())["config"]
    assert (config["optimizer"], config["lr"], config["timestep_draws"], config["target_max_timestep"]) == (
        FINE_TUNE.optimizer, FINE_TUNE.lr, FINE_TUNE.timestep_draws, FINE_TUNE.target_max_timestep)
    assert (config["order"], config["curvature"]) == (FINE_TUNE.order, FINE_TUNE.curvature) == (2, "secant")
    assert (config["steps"], config["epochs"]) == (1, None)  # --steps given: the recipe's length does not apply
    royalty("train", folders["data"], "--targets", folders["targets"], "--out", tmp_path / "own", "--model", folders["base"],
            "--optimizer", "sgd", "--lr", "0.05", "--timestep-draws", "1", *common, check=True)
    config = json.loads((tmp_path / "own" / "run.json").read_text())["config"]
    assert (config["optimizer"], config["lr"], config["timestep_draws"]) == ("sgd", 0.05, 1)
    assert (config["steps"], config["epochs"]) == (None, FINE_TUNE.epochs)
    # order 1 asked for: the recipe's curvature does not apply (it would be refused at order 1)
    royalty("train", folders["data"], "--targets", folders["targets"], "--out", tmp_path / "o1", "--model", folders["base"],
            "--steps", "1", "--order", "1", *common, check=True)
    config = json.loads((tmp_path / "o1" / "run.json").read_text())["config"]
    assert (config["order"], config["curvature"]) == (1, "hessian")
    # the library's own defaults are the from-scratch recipe: the command without --model changes nothing
    plain = TrainConfig(data=Path(), targets=Path(), out=Path())
    assert (plain.optimizer, plain.lr, plain.timestep_draws, plain.target_max_timestep, plain.epochs, plain.order, plain.curvature) == (
        FROM_SCRATCH.optimizer, FROM_SCRATCH.lr, FROM_SCRATCH.timestep_draws, FROM_SCRATCH.target_max_timestep, FROM_SCRATCH.epochs,
        FROM_SCRATCH.order, FROM_SCRATCH.curvature)
