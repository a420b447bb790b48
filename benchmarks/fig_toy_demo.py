"""README's "What the demo shows": the per-clip table and the frame figure, from a finished `motion-sweep demo`.

    motion-sweep demo --storage ./demo-results
    python benchmarks/fig_toy_demo.py ./demo-results/demo [--out benchmarks/figures/toy_demo_frames.png]

Prints the markdown table (motion fidelity of every variant against each reference clip, one sample each) and
writes the figure: per reference clip, frames 0, 2, 4, 6 of the reference, then of the variants in `FIGURE_ROWS`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

#: The figure's rows after each reference: the paper's method, the strongest plain design, each embedding removed.
FIGURE_ROWS = ("qk=1d v=2d debias=difference", "qk=2d v=2d debias=none", "qk=1d v=off", "qk=off v=2d debias=difference")
FRAMES = (0, 2, 4, 6)


def table(samples: list[dict]) -> str:
    """Variants (rows) × reference clips (columns): motion fidelity of each sample ("error" for an error row),
    then the text similarity's range over the ok rows and the sample counts."""
    clips = sorted({r["video"] for r in samples})
    lines = ["| variant | " + " | ".join(clips) + " |", "|---" * (len(clips) + 1) + "|"]
    for variant in sorted({r["variant"] for r in samples}):
        cells = []
        for clip in clips:
            got = [r for r in samples if r["variant"] == variant and r["video"] == clip]
            cells.append(" / ".join(f"{r['motion_fidelity']:+.2f}" if r["status"] == "ok" else "error"
                                    for r in got) or "–")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    ok = [r for r in samples if r["status"] == "ok"]
    ts = [r["text_similarity"] for r in ok]
    lines += ["", f"text similarity (toy CLIP) {min(ts):.2f}–{max(ts):.2f}; n = {len(samples)} samples, {len(ok)} ok"]
    return "\n".join(lines)


def figure(samples: list[dict], out: Path) -> None:
    import videoio
    from PIL import Image

    ok = [r for r in samples if r["status"] == "ok"]
    rows = []
    for clip in sorted({r["video"] for r in ok}):
        group = [r for r in ok if r["video"] == clip]
        videos = [group[0]["source_video"]]
        videos += [next(r["video_path"] for r in group if r["variant"] == v) for v in FIGURE_ROWS
                   if any(r["variant"] == v for r in group)]
        for path in videos:
            frames = videoio.read_video(path)
            rows.append(np.concatenate([frames[i] for i in FRAMES if i < len(frames)], axis=1))
    image = np.concatenate(rows, axis=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).resize((image.shape[1] * 2, image.shape[0] * 2), Image.NEAREST).save(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", help="the demo's sweep folder (e.g. ./demo-results/demo)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "figures" / "toy_demo_frames.png"))
    args = parser.parse_args(argv)
    from sweep.results.tables import load

    samples = load(args.sweep, "samples").to_pylist()
    print(table(samples))
    figure(samples, Path(args.out))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
