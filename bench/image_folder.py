"""An image folder streamed from disk: memory that does not grow with the number of images,
and read speed against Keras' own folder reader.

A folder of generated JPEG images (``--size`` x ``--size`` colour, ``--classes`` classes) is
written to a temporary folder (or ``--folder``), once for ``--n`` images and once for
``--base`` images. Two measurements:

- **Peak RSS of a one-epoch trial** (target: ``--n`` within 200 MB of ``--base``): a study of
  one trial (``mltune.tune``, the built-in CNN at ``--image-size``, one epoch, the default
  process per trial) on each folder, each in a fresh process of this script; reported: its
  own ``ru_maxrss`` and its children's (the trial's process); growth is the larger growth of
  the trial's process and of the larger of the two.
- **Images per second**: one pass over the training batches of mltune's pipeline
  (``Dataset.batched(batch).train_stream``: read, decode, resize, shuffle, batch) against one
  pass of ``keras.utils.image_dataset_from_directory`` on the same folder, image size and batch
  size (target: mltune >= 1.0x), in one process: one warm-up pass each, then ``--repeats``
  alternating passes, the best of each reported.

Run from the repository root, e.g.::

    /work/venv/bin/python bench/image_folder.py --n 400 --base 100      # a quick check
    /work/venv/bin/python bench/image_folder.py                         # 20,000 vs 2,000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def make_folder(root: Path, n: int, size: int, classes: int) -> Path:
    """``n`` JPEG images in ``classes`` sub-folders (kept when they are there already)."""
    from PIL import Image

    marker = root / ".complete"
    if marker.exists():
        return root
    rng = np.random.default_rng(0)
    for i in range(n):
        label = i % classes
        folder = root / f"class{label:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        pixels[..., label % 3] //= 2
        Image.fromarray(pixels).save(folder / f"{i:06d}.jpg", quality=90)
    marker.write_text(str(n))
    return root


def peak_mb() -> dict[str, float]:
    """Peak RSS in MB of this process (the study's) and of its largest waited-for child (the
    trial's process), and the larger of the two."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"study_process_mb": own, "trial_process_mb": children,
            "peak_rss_mb": max(own, children)}


def trial(folder: Path, image_size: int, batch: int, work: Path) -> dict[str, Any]:
    """One one-epoch trial on ``folder`` (in this process's child, forked per trial)."""
    import mltune

    study = {
        "study": {"name": f"bench-{folder.name}", "n_trials": 1, "sampler": "random",
                  "seed": 0},
        "data": {"source": str(folder), "image_size": [image_size, image_size]},
        "training": {"epochs": 1, "batch_size": batch},
        "model": {"conv_blocks": 2, "filters": 16, "dense_units": 32},
        "search_space": {"learning_rate": {"type": "float", "low": 1e-3, "high": 2e-3}},
    }
    start = time.perf_counter()
    result = mltune.tune(study, storage=str(work / "journal.log"),
                         tracking_uri=f"sqlite:///{work / 'mlflow.db'}")
    return {"states": result.states, "seconds": time.perf_counter() - start, **peak_mb()}


def images_per_second(folder: Path, image_size: int, batch: int, repeats: int
                      ) -> dict[str, float]:
    import keras

    from mltune._data import load_data
    from mltune._types import DataConfig

    data = load_data(DataConfig(source=str(folder), image_size=(image_size, image_size),
                                validation_split=0.01, test_split=0.01), seed=0)
    ours = data.batched(batch).train_stream
    theirs = keras.utils.image_dataset_from_directory(
        folder, image_size=(image_size, image_size), batch_size=batch, shuffle=True, seed=0,
        verbose=False)

    def rate(stream: Any) -> float:
        count, start = 0, time.perf_counter()
        for x, _ in stream:
            count += int(x.shape[0])
        return count / (time.perf_counter() - start)

    rate(ours), rate(theirs)  # warm-up passes: the file cache, tracing
    # Alternating passes, best of each: other work on the machine slows single passes.
    rates = [(rate(ours), rate(theirs)) for _ in range(repeats)]
    mltune_rate, keras_rate = max(r[0] for r in rates), max(r[1] for r in rates)
    return {"mltune_images_per_s": mltune_rate, "keras_images_per_s": keras_rate,
            "ratio": mltune_rate / keras_rate}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="images in the big folder")
    parser.add_argument("--base", type=int, default=2_000, help="images in the small folder")
    parser.add_argument("--size", type=int, default=96, help="pixels per side of an image")
    parser.add_argument("--image-size", type=int, default=96, help="data.image_size")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes of each reader")
    parser.add_argument("--folder", type=Path, default=None,
                        help="where the generated folders go (default: a temporary folder)")
    parser.add_argument("--skip", choices=("rss", "speed"), action="append", default=[])
    parser.add_argument("--trial", type=Path, help=argparse.SUPPRESS)  # a measuring child
    args = parser.parse_args(argv)
    if args.trial is not None:
        with tempfile.TemporaryDirectory(prefix="mltune-bench-") as work:
            print(json.dumps(trial(args.trial, args.image_size, args.batch, Path(work))))
        return 0
    base = args.folder or Path(tempfile.mkdtemp(prefix="mltune-bench-images-"))
    folders = {n: make_folder(base / f"images-{n}-{args.size}px", n, args.size, args.classes)
               for n in (args.base, args.n)}
    report: dict[str, Any] = {"n": args.n, "base": args.base, "size": args.size,
                              "image_size": args.image_size, "batch": args.batch}
    if "rss" not in args.skip:
        for n, folder in folders.items():
            proc = subprocess.run(
                [sys.executable, __file__, "--trial", str(folder), "--image-size",
                 str(args.image_size), "--batch", str(args.batch)],
                capture_output=True, text=True, check=True,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
            report[f"trial_{n}"] = json.loads(proc.stdout.strip().splitlines()[-1])
        growth = max(report[f"trial_{args.n}"][k] - report[f"trial_{args.base}"][k]
                     for k in ("peak_rss_mb", "trial_process_mb"))
        report["peak_rss_growth_mb"] = growth
        report["rss_target_met"] = growth <= 200
    if "speed" not in args.skip:
        speed = images_per_second(folders[args.n], args.image_size, args.batch, args.repeats)
        report.update(speed)
        report["speed_target_met"] = speed["ratio"] >= 1.0
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
