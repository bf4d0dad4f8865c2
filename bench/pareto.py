"""What ``study.pruner: pareto`` buys a multi-objective study: epochs trained and the Pareto
front reached, with and without pruning, at an equal budget of trials.

A study with objectives ``val_accuracy`` (maximize) and ``params`` (minimize), where small
and large models compete: the built-in CNN over filters, conv_blocks, dense_units and
learning_rate, on a ``--samples`` subset of real MNIST, ``--epochs`` epochs per trial. Each
seed runs ``--trials`` trials in three arms: no pruner, ``pareto`` with ``n_warmup_steps: 0``
(pruning from epoch 1 on) and ``pareto`` with its default ``n_warmup_steps: 1`` (from epoch 2
on); both with ``n_startup_trials: --startup`` and ``n_dominating: 1``. The sampler is
``random`` with the seed, so trial n draws the same configuration in every arm, and trial n is
seeded with seed + n: the arms differ only in which trials are stopped early (TensorFlow on
several threads is not bit-exact, so a trial's values may differ slightly between arms).

Figures per arm (summed, or medians, over ``--seeds`` seeds): epochs trained in total, trials
pruned, the study's wall time, and the hypervolume of the Pareto front of the completed
trials in (val_accuracy, log10 params) against the fixed reference point (0, 10^7 params):
the area that the front dominates, larger is better. Also: how many trials on the front of
the unpruned arm the pruned arms stopped, and the fronts' points. Every study runs through
the public API (``mltune.tune``) in a temporary folder with its own stores; nothing of mltune
is patched.
"""

from __future__ import annotations

import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    data_file,
    data_parser,
    fmt_table,
    load_avg,
    machine_info,
    publish,
    quiet_libraries,
    working_dir,
)

HEADING = "## Pareto pruning (bench/pareto.py)"
OBJECTIVES = [{"metric": "val_accuracy", "direction": "maximize"},
              {"metric": "params", "direction": "minimize"}]
SPACE = {
    "filters": {"type": "categorical", "choices": [4, 8, 16, 32]},
    "conv_blocks": {"type": "categorical", "choices": [1, 2]},
    "dense_units": {"type": "categorical", "choices": [16, 64, 128]},
    "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
}
REF_LOG_PARAMS = 7.0  # the reference point: 10^7 parameters, val_accuracy 0
ARMS = {"none": None, "pareto-warmup-0": 0, "pareto-warmup-1": 1}


def study(name: str, data: Path, samples: int, seed: int, trials: int, epochs: int,
          warmup: int | None, startup: int) -> dict[str, Any]:
    pruner: dict[str, Any] = {}
    if warmup is not None:
        pruner = {"pruner": "pareto", "pruner_options": {
            "n_startup_trials": startup, "n_warmup_steps": warmup, "n_dominating": 1}}
    return {
        "study": {"name": name, "objectives": OBJECTIVES, "sampler": "random",
                  "n_trials": trials, "seed": seed, **pruner},
        "data": {"source": str(data), "max_samples": samples, "seed": 0},
        "training": {"epochs": epochs, "batch_size": 64},
        "search_space": SPACE,
    }


def front(points: dict[int, tuple[float, float]]) -> dict[int, tuple[float, float]]:
    """The trials (number -> (val_accuracy, params)) that no other trial dominates."""
    def beats(a: tuple[float, float], b: tuple[float, float]) -> bool:
        return a[0] >= b[0] and a[1] <= b[1] and a != b

    return {n: p for n, p in points.items() if not any(beats(q, p) for q in points.values())}


def hypervolume(points: list[tuple[float, float]]) -> float:
    """The area dominated by ``points`` (val_accuracy, params) in (val_accuracy, log10
    params), bounded by the reference point (0, 10^REF_LOG_PARAMS)."""
    area, best = 0.0, 0.0
    # from the smallest model up: each adds the accuracy it gains over the smaller ones
    for accuracy, params in sorted(points, key=lambda p: (p[1], -p[0])):
        if accuracy > best:
            area += (accuracy - best) * max(0.0, REF_LOG_PARAMS - math.log10(params))
            best = accuracy
    return area


def run_arm(name: str, config: dict[str, Any]) -> dict[str, Any]:
    import mltune

    with tempfile.TemporaryDirectory(prefix="mltune-pareto-") as tmp, working_dir(Path(tmp)):
        stores = {"tracking_uri": f"sqlite:///{tmp}/mlflow.db",
                  "storage": f"{tmp}/optuna_journal.log"}
        start = time.perf_counter()
        mltune.tune(config, progress=False, **stores)
        wall = time.perf_counter() - start
        trials = mltune.load_study(config["study"]["name"], **stores).trials
    points = {t.number: (float(t.values[0]), float(t.values[1])) for t in trials
              if t.state.name == "COMPLETE" and t.values}
    return {
        "arm": name, "wall": wall, "points": points, "front": front(points),
        "epochs": sum(int(t.user_attrs.get("epochs_run", 0)) for t in trials),
        "pruned": {t.number: int(t.user_attrs.get("epochs_run", 0)) for t in trials
                   if t.state.name == "PRUNED"},
        "params": {t.number: t.params for t in trials},
    }


def main() -> int:
    p = data_parser(__doc__, 3000, "training samples (data.max_samples)")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--trials", type=int, default=10, help="trials per study (every arm)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per trial")
    p.add_argument("--startup", type=int, default=3,
                   help="pruner_options.n_startup_trials of the pareto arms")
    p.add_argument("--docs", type=Path, default=None,
                   help="also write the section into this markdown file (docs/benchmarks.md)")
    args = p.parse_args()
    data = data_file(args.data)
    if data is None:
        return 2
    quiet_libraries()
    load_before = load_avg()
    command = "python bench/pareto.py " + " ".join(sys.argv[1:])
    results: dict[str, list[dict[str, Any]]] = {a: [] for a in ARMS}
    started = time.perf_counter()
    for seed in range(args.seeds):
        # the arms' order turns each seed, so that none always runs first on a loaded machine
        order = list(ARMS)[seed % len(ARMS):] + list(ARMS)[:seed % len(ARMS)]
        for arm in order:
            r = run_arm(arm, study(f"pareto-{arm}-{seed}", data, args.samples, seed,
                                   args.trials, args.epochs, ARMS[arm], args.startup))
            r["seed"] = seed
            results[arm].append(r)
            print(f"seed {seed} {arm}: {r['epochs']} epochs, {len(r['pruned'])} pruned, "
                  f"hypervolume {hypervolume(list(r['front'].values())):.4f}, "
                  f"{r['wall']:.0f} s", file=sys.stderr)
    minutes = (time.perf_counter() - started) / 60

    full = args.trials * args.epochs
    rows = []
    for arm, runs in results.items():
        epochs = sum(r["epochs"] for r in runs)
        lost = sum(len(set(base["front"]) & set(r["pruned"]))
                   for r, base in zip(runs, results["none"], strict=True))
        base_front = sum(len(b["front"]) for b in results["none"])
        rows.append([
            arm, f"{epochs} of {full * args.seeds} ({epochs / (full * args.seeds):.0%})",
            str(sum(len(r["pruned"]) for r in runs)),
            f"{statistics.median(hypervolume(list(r['front'].values())) for r in runs):.4f}",
            " / ".join(f"{hypervolume(list(r['front'].values())):.4f}" for r in runs),
            "-" if arm == "none" else f"{lost} of {base_front}",
            f"{statistics.median(r['wall'] for r in runs):.0f}",
        ])
    fronts = []
    for arm, runs in results.items():
        for r in runs:
            shown = ", ".join(
                f"#{n} {acc:.3f}/{params / 1000:.1f}k" for n, (acc, params) in
                sorted(r["front"].items(), key=lambda kv: kv[1][1]))
            pruned = ", ".join(f"#{n}@{e}" for n, e in sorted(r["pruned"].items())) or "-"
            fronts.append([arm, str(r["seed"]), shown, pruned])
    info = machine_info(["mltune", "optuna", "keras", "tensorflow"])
    section = "\n".join([
        HEADING, "",
        f"Objectives val_accuracy (maximize) and params (minimize); the built-in CNN over "
        f"filters 4-32, conv_blocks 1-2, dense_units 16-128, learning_rate 1e-4..1e-2 (log); "
        f"{args.samples} MNIST samples (10% validation), {args.epochs} epochs per trial, batch "
        f"64; {args.trials} trials per study (`sampler: random`, the same configurations in "
        f"every arm), seeds 0..{args.seeds - 1}. Pareto arms: `n_startup_trials: "
        f"{args.startup}`, `n_dominating: 1`, `n_warmup_steps` 0 or 1 (the default). "
        f"Hypervolume: the area the front of the completed trials dominates in (val_accuracy, "
        f"log10 params) up to the reference point (0, 10^7 params); larger is better. "
        f"\"Front trials stopped\": trials on the unpruned arm's front that the arm pruned. "
        f"Command (from the repository root, {minutes:.0f} min): `{command}`.", "",
        fmt_table(["arm", "epochs trained", "trials pruned", "hypervolume (median)",
                   "hypervolume per seed", "front trials stopped", "wall s (median)"], rows),
        "",
        "Fronts (trial: val_accuracy/params, smallest first) and pruned trials (#trial@epoch):",
        "",
        fmt_table(["arm", "seed", "Pareto front", "pruned"], fronts), "",
        ", ".join(f"{k}: {v}" for k, v in info.items())
        + f"; load average (1 / 5 / 15 min) {load_before} at the start, {load_avg()} at the end.",
    ])
    publish(section, HEADING, args.docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
