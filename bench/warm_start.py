"""What a warm start (``study.warm_start``) buys: the best validation accuracy after k new
trials of a re-tuned study, started cold and warm-started from the study before it.

A user's re-tune, on a ``--samples`` subset of real MNIST: study ``v1`` searches
learning_rate, filters and optimizer with ``--v1-epochs`` epochs per trial (``--v1-trials``
trials, TPE); study ``v2`` then trains ``--epochs`` epochs per trial, no longer searches the
optimizer (fixed to ``adam``) and searches a narrower learning_rate range. ``v2`` runs
``--trials`` trials twice per seed: cold, and warm-started from ``v1`` (its fitting trials
are seeded before TPE samples). The figure is the best ``val_accuracy`` of the *new* trials
after each k (seeded values were measured with other epochs, so they are left out of the
comparison), the median over ``--seeds`` seeds. Every study runs through the public API
(``mltune.tune``) in a temporary folder with its own stores; nothing of mltune is patched.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import (
    data_file,
    data_parser,
    fmt_table,
    machine_info,
    publish,
    quiet_libraries,
    working_dir,
)

HEADING = "## warm_start.py: re-tuning from an earlier study"
SPACE_V1 = {
    "learning_rate": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True},
    "filters": {"type": "categorical", "choices": [8, 16, 32]},
    "optimizer": {"type": "categorical", "choices": ["adam", "sgd", "rmsprop"]},
}
SPACE_V2 = {
    "learning_rate": {"type": "float", "low": 3e-4, "high": 1e-2, "log": True},
    "filters": {"type": "categorical", "choices": [8, 16, 32]},
}


def study(name: str, data: Path, samples: int, seed: int, trials: int, epochs: int,
          space: dict[str, Any], warm: dict[str, str] | None = None,
          optimizer: str | None = None) -> dict[str, Any]:
    training: dict[str, Any] = {"epochs": epochs, "batch_size": 64}
    if optimizer:
        training["optimizer"] = optimizer
    return {
        "study": {"name": name, "sampler": "tpe", "n_trials": trials, "seed": seed,
                  "sampler_options": {"n_startup_trials": 5},
                  **({"warm_start": warm} if warm else {})},
        "data": {"source": str(data), "max_samples": samples, "seed": 0},
        "training": training,
        "model": {"conv_blocks": 2, "dense_units": 64},
        "search_space": space,
    }


def best_so_far(values: list[float]) -> list[float]:
    out, best = [], float("-inf")
    for v in values:
        best = max(best, v)
        out.append(best)
    return out


def main() -> int:
    p = data_parser(__doc__, 6000, "training samples (data.max_samples)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--v1-trials", type=int, default=20)
    p.add_argument("--v1-epochs", type=int, default=1)
    p.add_argument("--trials", type=int, default=10, help="new trials of v2")
    p.add_argument("--epochs", type=int, default=2, help="epochs per trial of v2")
    p.add_argument("--docs", type=Path, default=None,
                   help="also write the section into this markdown file (docs/benchmarks.md)")
    args = p.parse_args()
    data = data_file(args.data)
    if data is None:
        return 2
    quiet_libraries()
    import mltune

    curves: dict[str, list[list[float]]] = {"cold": [], "warm": []}
    taken: list[int] = []
    for seed in range(args.seeds):
        with tempfile.TemporaryDirectory(prefix="mltune-warm-") as tmp, working_dir(Path(tmp)):
            stores = {"tracking_uri": f"sqlite:///{tmp}/mlflow.db",
                      "storage": f"{tmp}/optuna_journal.log"}
            mltune.tune(study("v1", data, args.samples, seed, args.v1_trials, args.v1_epochs,
                              SPACE_V1), progress=False, **stores)
            for kind in ("cold", "warm"):
                warm = {"study": "v1"} if kind == "warm" else None
                mltune.tune(study(f"v2-{kind}", data, args.samples, seed, args.trials,
                                  args.epochs, SPACE_V2, warm, optimizer="adam"),
                            progress=False, **stores)
                trials = mltune.load_study(f"v2-{kind}", **stores).trials
                new = [t for t in trials if "mltune_warm_start" not in t.user_attrs]
                if kind == "warm":
                    taken.append(len(trials) - len(new))
                values = [t.value if t.value is not None else float("-inf") for t in new]
                curves[kind].append(best_so_far(values))
        print(f"seed {seed}: cold {curves['cold'][-1][-1]:.4f}, warm "
              f"{curves['warm'][-1][-1]:.4f} ({taken[-1]} trials seeded)", file=sys.stderr)

    rows = []
    for k in range(args.trials):
        cold = statistics.median(c[k] for c in curves["cold"])
        warm = statistics.median(c[k] for c in curves["warm"])
        rows.append([str(k + 1), f"{cold:.4f}", f"{warm:.4f}"])
    info = machine_info(["mltune", "optuna", "keras"])
    section = "\n".join([
        HEADING, "",
        f"Best val_accuracy of v2's new trials after k trials (median of {args.seeds} seeds; "
        f"{args.samples} MNIST samples; v1: {args.v1_trials} trials of {args.v1_epochs} "
        f"epoch(s), v2: {args.epochs} epochs; seeded from v1: median "
        f"{statistics.median(taken):g} trials). `python bench/warm_start.py`.", "",
        fmt_table(["k", "cold", "warm-started"], rows), "",
        ", ".join(f"{k}: {v}" for k, v in info.items()),
    ])
    publish(section, HEADING, args.docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
