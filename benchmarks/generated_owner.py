"""Do images generated after training pay the owner whose style they show?

    python benchmarks/generated_owner.py RUN GENERATED [--name NAME] [--sheet docs/generated.png]

GENERATED is a `royalty generate` folder already attributed with
`royalty attribute RUN GENERATED --name NAME`. A generated image's style owner is judged
independently of the values, by its nearest training images in pixel space (the owner
of most of its 5 nearest neighbours, and how clear that vote is). For each image this
prints that owner, the owner paid the largest share (raw and specific values), and the
agreement over all images and over the ones whose style is clear (≥ 4 of 5 neighbours).
With --sheet it draws each generated image beside its nearest training image.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from royalty.attribution.data.images import decode_image

NEIGHBOURS = 5


def load(folder: Path, names: list[str], resolution: int) -> np.ndarray:
    """Images in [0, 1] as the run saw them (royalty's own decoding at the run's resolution)."""
    return np.stack([(decode_image((folder / n).read_bytes(), resolution).permute(1, 2, 0).numpy() + 1) / 2 for n in names])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("generated", type=Path)
    ap.add_argument("--name", default=None)
    ap.add_argument("--sheet", type=Path, default=None)
    args = ap.parse_args()
    name = args.name or args.generated.resolve().name
    manifest = json.loads((args.run / "run.json").read_text())
    train_dir = Path(manifest["input_folders"]["train"])
    train = manifest["inputs"]["train"]
    resolution = int(manifest["config"]["resolution"])
    train_px = load(train_dir, [r["file_name"] for r in train], resolution).reshape(len(train), -1)
    owners = np.array([r["owner"] for r in train])
    meta = pd.read_csv(args.generated / "metadata.csv", dtype={"target_id": str})
    gen_px = load(args.generated, list(meta["file_name"]), resolution).reshape(len(meta), -1)
    dist = ((gen_px[:, None, :] - train_px[None, :, :]) ** 2).mean(-1)
    values = pd.read_parquet(args.run / "attributions" / name / "values.parquet")
    bases = [c for c in ("value", "value_specific") if c in values.columns]
    tops = {b: values.groupby(["target_id", "owner"])[b].sum().unstack("owner").idxmax(axis=1) for b in bases}
    rows = []
    for i, target in enumerate(meta["target_id"]):
        near = np.argsort(dist[i])[:NEIGHBOURS]
        vote = pd.Series(owners[near]).value_counts()
        rows.append({
            "target_id": target, "style_owner": vote.index[0], "votes": int(vote.iloc[0]),
            "nearest": train[near[0]]["id"], **{f"top_{b}": tops[b][target] for b in bases},
        })
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    clear = table["votes"] >= NEIGHBOURS - 1
    for b in bases:
        hit = table[f"top_{b}"] == table["style_owner"]
        print(f"{b}: largest share to the style owner for {hit.sum()}/{len(table)} images; "
              f"{hit[clear].sum()}/{int(clear.sum())} of those with a clear style (≥ {NEIGHBOURS - 1}/{NEIGHBOURS} neighbours)")
    if args.sheet is not None:  # rows of 16: generated images above their nearest training images
        scale, per_row = 4, 16
        size = 32 * scale
        rows_n = -(-len(table) // per_row)
        sheet = Image.new("RGB", (min(len(table), per_row) * (size + 8), rows_n * (2 * size + 24)), "white")
        for i, row in table.iterrows():
            x, y = (i % per_row) * (size + 8), (i // per_row) * (2 * size + 24)
            gen = Image.open(args.generated / meta["file_name"][i]).convert("RGB").resize((size, size), Image.NEAREST)
            near = next(r for r in train if r["id"] == row["nearest"])
            ref = Image.open(train_dir / near["file_name"]).convert("RGB").resize((size, size), Image.NEAREST)
            sheet.paste(gen, (x, y))
            sheet.paste(ref, (x, y + size + 8))
        args.sheet.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(args.sheet)
        print(f"wrote {args.sheet}")


if __name__ == "__main__":
    main()
