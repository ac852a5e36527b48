"""What the shapes models draw, as one picture: a row per row of the benchmark's table (analysis.benchmark.ROWS: the
same sampler settings), a column per held-out prompt (fixed seeds), each image framed green where the evaluator
accepts it and red where it does not, and the row's accepted count beside it — the table's score, seen.

    python -m analysis.sample_grid --model fm=assets/fm-shapes32 --model ntm=assets/ntm-shapes32 \
        --per-category 2 --out docs/samples-shapes.png
"""
from __future__ import annotations

import argparse
import os
import textwrap

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from analysis import key_values
from analysis.benchmark import ROWS, generate
from ntm_core.data.shapes_eval import check
from ntm_core.data.shapes import eval_prompts
from ntm_core.images import to_uint8
from ntm_core.pipeline import load_pipeline

CELL, BORDER, LABEL_W, HEAD_H = 96, 4, 190, 64
PASS, FAIL, INK, PAPER = (0, 160, 60), (210, 40, 40), (20, 20, 20), (255, 255, 255)


def rows_for(models: dict[str, str], prompts: list[dict], guidance: float, seed: int):
    """[(label, [uint8 images], [accepted])] for every row of every model."""
    captions, specs = [p["caption"] for p in prompts], [p["spec"] for p in prompts]
    out = []
    for key, folder in models.items():
        pipe = load_pipeline(folder)
        methods = list(dict.fromkeys(r[0] for r in ROWS[key]))  # a method's rows together, by steps
        for label, steps, options in sorted(ROWS[key], key=lambda r: (methods.index(r[0]), r[1])):
            if options.get("denoise") == "learned" and getattr(pipe, "denoiser", None) is None:
                continue
            images, _ = generate(pipe, captions, steps, options, guidance, seed, batch=len(captions))
            pictures = [to_uint8(im) for im in images]
            out.append((f"{label}, {steps} step{'s' if steps > 1 else ''} ({key})", pictures,
                        [check(s, im) for s, im in zip(specs, pictures)]))
    return out


def draw(rows, captions: list[str]) -> Image.Image:
    font = ImageFont.load_default(size=12)
    width = LABEL_W + len(captions) * (CELL + 2 * BORDER)
    sheet = Image.new("RGB", (width, HEAD_H + len(rows) * (CELL + 2 * BORDER)), PAPER)
    pen = ImageDraw.Draw(sheet)
    for j, caption in enumerate(captions):
        x = LABEL_W + j * (CELL + 2 * BORDER)
        pen.multiline_text((x + 2, 2), "\n".join(textwrap.wrap(caption, 15)[:4]), fill=INK, font=font, spacing=1)
    for i, (label, pictures, accepted) in enumerate(rows):
        y = HEAD_H + i * (CELL + 2 * BORDER)
        text = "\n".join(textwrap.wrap(label, 26)) + f"\naccepted {sum(accepted)} of {len(accepted)}"
        pen.multiline_text((4, y + 8), text, fill=INK, font=font, spacing=2)
        for j, (picture, ok) in enumerate(zip(pictures, accepted)):
            x = LABEL_W + j * (CELL + 2 * BORDER)
            pen.rectangle([x, y, x + CELL + 2 * BORDER - 1, y + CELL + 2 * BORDER - 1], fill=PASS if ok else FAIL)
            tile = Image.fromarray(np.asarray(picture)).resize((CELL, CELL), Image.NEAREST)
            sheet.paste(tile, (x + BORDER, y + BORDER))
    return sheet


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[], metavar="KEY=FOLDER", help=f"keys: {list(ROWS)}")
    ap.add_argument("--per-category", type=int, default=2)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs/samples-shapes.png")
    a = ap.parse_args(argv)
    models = key_values(ap, a.model, "--model")
    if not models or set(models) - set(ROWS):
        ap.error(f"give --model KEY=FOLDER with keys from {list(ROWS)}")
    torch.set_grad_enabled(False)
    prompts = eval_prompts(a.per_category, a.seed)
    rows = rows_for(models, prompts, a.guidance, a.seed)
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    draw(rows, [p["caption"] for p in prompts]).save(a.out)
    for label, _, accepted in rows:
        print(f"{label:60s} accepted {sum(accepted)} of {len(accepted)}")
    print("wrote", a.out)


if __name__ == "__main__":
    main()
