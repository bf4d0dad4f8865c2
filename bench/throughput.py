"""Training throughput of mltune's trainer against a plain ``model.fit`` on NumPy arrays.

"Measured, not assumed": samples per second of ``mltune._trainer.train`` (its input path:
under TensorFlow a ``tf.data`` pipeline over tensors made once per process, plus the one
callback every trial has) against ``model.fit(x, y, ...)`` on the same NumPy arrays, for the
same model (``mltune._model.build_model`` with the same settings and the same seed), in one
run. Target: mltune / plain >= 1.0x.

For each configuration (``--batch-sizes`` x ``--jit``), both sides train a fresh model on a
``--samples`` subset of real MNIST (split as a study splits it: 10% validation) for
``--epochs`` epochs with validation after each epoch, as a trial does:

- **mltune**: ``build_model`` + ``mltune._trainer.train(model, settings, data=dataset)``
  (it compiles the model with ``mltune._trainer.compile_model``); timed by the trainer's own
  ``train_seconds`` (input pipeline + ``model.fit``; not ``compile``).
- **plain**: ``build_model`` + ``mltune._trainer.compile_model(model, settings,
  steps_per_epoch=...)`` (the same compile recipe) + ``model.fit(x, y, batch_size=...,
  epochs=..., validation_data=(xv, yv), verbose=0)``; only the fit is timed.

The trainer is what is measured here, so this script calls mltune's private modules
(``mltune._trainer``, ``mltune._model``, ``mltune._data``) directly; it patches nothing.

Both sides pay the tracing of a new model's train step in every repetition (as every
trial does), and both start from ``keras.utils.set_random_seed(--seed)``; the Keras session
is cleared after each fit, outside the timing. Repetitions are interleaved (A B, then B A,
...; configurations round-robin) so that the noise of a shared machine hits both sides
alike; one warm-up pair per configuration is not counted. Samples/s = training images x
epochs / fit seconds (validation time is in the seconds, not in the count). Reported per
configuration: the median samples/s of each side, the ratio of the medians, the min-max
of the per-pair ratios, and the ratio of each side's best run (noise on a shared machine only
ever slows a run down); and, when there are 2+ epochs, the same for the epochs after the
first.

The backend is ``--backend`` (default tensorflow; it sets ``KERAS_BACKEND`` before Keras is
imported). Under JAX mltune's input path is the plain arrays, so only its callback differs.

Run from the repository root, e.g.::

    /work/venv/bin/python bench/throughput.py                       # full size, 4-5 min
    /work/venv/bin/python bench/throughput.py --samples 3000 --epochs 2 --reps 3  # ~1 min
    /work/venv/bin/python bench/throughput.py --jit auto true --write-docs      # ~9 min

``--write-docs`` writes the section "Trainer throughput (bench/throughput.py)" of
``docs/benchmarks.md`` (other sections are kept).
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import data_file, data_parser, fmt_table, machine_info, publish  # bench/_common.py

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DOCS = Path("docs/benchmarks.md")
SECTION = "## Trainer throughput (bench/throughput.py)"
TARGET = 1.0
JIT = {"auto": "auto", "true": True, "false": False}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = data_parser(__doc__, 8000,
                    "data.max_samples: training + validation images (10%% validation)")
    p.add_argument("--epochs", type=int, default=3,
                   help="epochs per fit (2+: also the rate of the epochs after the first)")
    p.add_argument("--reps", type=int, default=5,
                   help="counted pairs (mltune + plain) per configuration, after one warm-up")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256],
                   help="settings['batch_size'] values to measure")
    p.add_argument("--jit", nargs="+", choices=tuple(JIT), default=["auto"],
                   help="settings['jit_compile'] values to measure")
    p.add_argument("--filters", type=int, default=32, help="settings['filters']")
    p.add_argument("--seed", type=int, default=0, help="data split and model seed")
    p.add_argument("--backend", choices=("tensorflow", "jax"), default="tensorflow",
                   help="KERAS_BACKEND")
    p.add_argument("--write-docs", action="store_true",
                   help=f"write the section into {DOCS} (else print only)")
    return p.parse_args(argv)


@dataclass(frozen=True)
class Case:
    batch_size: int
    jit: str  # a key of JIT

    @property
    def name(self) -> str:
        return f"batch {self.batch_size}, jit_compile {self.jit}"


@dataclass
class Side:
    rates: list[float] = field(default_factory=list)  # samples/s, counted reps
    steady: list[float] = field(default_factory=list)  # samples/s of epochs 2.., if any
    seconds: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    jit_used: set[str] = field(default_factory=set)  # what Keras resolved "auto" to


@dataclass
class Result:
    mltune: Side = field(default_factory=Side)
    plain: Side = field(default_factory=Side)
    ratios: list[float] = field(default_factory=list)  # per pair: mltune / plain
    steady_ratios: list[float] = field(default_factory=list)  # the same for epochs 2..
    mltune_first: list[bool] = field(default_factory=list)  # per pair: which side went first


@dataclass
class Fit:
    seconds: float  # the whole fit
    epoch_seconds: list[float]  # on_epoch_begin to on_epoch_end (validation included)
    val_accuracy: float  # of the last epoch
    jit: str  # what Keras resolved settings["jit_compile"] to


def settings_for(args: argparse.Namespace, case: Case) -> dict[str, Any]:
    from mltune._settings import default_settings

    s = default_settings()
    s.update(epochs=args.epochs, batch_size=case.batch_size, jit_compile=JIT[case.jit],
             filters=args.filters)
    return s


def load(args: argparse.Namespace, data: Path) -> Any:
    """The arrays a study with ``data.max_samples: --samples`` trains on."""
    from mltune._config import parse_config
    from mltune._data import load_data

    raw = {"study": {"name": "bench-throughput"},
           "data": {"source": str(data), "max_samples": args.samples}}
    config = parse_config(raw, source="bench/throughput.py", for_study=False)
    return load_data(config.data, seed=args.seed)


def fit_mltune(settings: dict[str, Any], data: Any, seed: int) -> Fit:
    """mltune's trainer, timed by its own ``train_seconds``."""
    import keras

    from mltune._model import build_model
    from mltune._trainer import train

    keras.utils.set_random_seed(seed)
    model = build_model(settings, input_shape=data.input_shape, num_classes=data.num_classes,
                        pixel_max=data.pixel_max)
    result = train(model, settings, data=data)
    return Fit(result.train_seconds, result.history["epoch_seconds"],
               result.history["val_accuracy"][-1], str(model.jit_compile))


def fit_plain(settings: dict[str, Any], data: Any, seed: int) -> Fit:
    """A plain ``model.fit`` on the NumPy arrays; only the fit is timed."""
    import keras

    from mltune._model import build_model
    from mltune._trainer import compile_model

    class EpochClock(keras.callbacks.Callback):
        """Epoch hooks only: Keras's per-batch path stays as without callbacks."""

        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []
            self._start = 0.0

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.seconds.append(time.perf_counter() - self._start)

    keras.utils.set_random_seed(seed)
    model = build_model(settings, input_shape=data.input_shape, num_classes=data.num_classes,
                        pixel_max=data.pixel_max)
    batch_size = int(settings["batch_size"])
    steps = max(1, math.ceil(len(data.x_train) / batch_size))
    compile_model(model, settings, steps_per_epoch=steps)  # as mltune's trainer compiles
    clock = EpochClock()
    start = time.perf_counter()
    history = model.fit(data.x_train, data.y_train, batch_size=batch_size,
                        epochs=int(settings["epochs"]),
                        validation_data=(data.x_val, data.y_val), callbacks=[clock], verbose=0)
    seconds = time.perf_counter() - start
    return Fit(seconds, clock.seconds, float(history.history["val_accuracy"][-1]),
               str(model.jit_compile))


def steady_rate(fit: Fit, n_train: int) -> float | None:
    """Samples/s of the epochs after the first (which traces the train and test steps)."""
    later = fit.epoch_seconds[1:]
    return n_train * len(later) / sum(later) if later else None


def one_pair(args: argparse.Namespace, case: Case, data: Any, mltune_first: bool,
             result: Result | None) -> str:
    """Both sides once, in the given order; counted into ``result`` unless it is None."""
    from mltune._trainer import release

    settings = settings_for(args, case)
    n = len(data.x_train)
    fits: dict[str, Fit] = {}
    order = ("mltune", "plain") if mltune_first else ("plain", "mltune")
    for side in order:
        fit = fit_mltune if side == "mltune" else fit_plain
        fits[side] = fit(settings, data, args.seed)
        release()  # outside the timing, after both sides alike
    rate = {k: n * args.epochs / f.seconds for k, f in fits.items()}
    steady = {k: steady_rate(f, n) for k, f in fits.items()}
    if result is not None:
        for side, f in fits.items():
            s: Side = getattr(result, side)
            s.rates.append(rate[side])
            s.seconds.append(f.seconds)
            s.val_accuracy.append(f.val_accuracy)
            s.jit_used.add(f.jit)
            if steady[side] is not None:
                s.steady.append(steady[side])
        result.ratios.append(rate["mltune"] / rate["plain"])
        result.mltune_first.append(mltune_first)
        if steady["mltune"] and steady["plain"]:
            result.steady_ratios.append(steady["mltune"] / steady["plain"])
    line = (f"{order[0]} first: mltune {rate['mltune']:,.0f}/s, plain {rate['plain']:,.0f}/s, "
            f"ratio {rate['mltune'] / rate['plain']:.3f}")
    if steady["mltune"] and steady["plain"]:
        line += (f"; epochs 2..: {steady['mltune']:,.0f}/s vs {steady['plain']:,.0f}/s, "
                 f"ratio {steady['mltune'] / steady['plain']:.3f}")
    return line


def run(args: argparse.Namespace, cases: list[Case], data: Any) -> dict[Case, Result]:
    results = {case: Result() for case in cases}
    for case in cases:
        line = one_pair(args, case, data, mltune_first=True, result=None)
        print(f"  warm-up  {case.name}: {line}", flush=True)
    for rep, (i, case) in itertools.product(range(args.reps), enumerate(cases)):
        first = (rep + i) % 2 == 1  # alternates per rep, and between configurations
        line = one_pair(args, case, data, mltune_first=first, result=results[case])
        print(f"  rep {rep + 1}/{args.reps} {case.name}: {line}", flush=True)
    return results


def _med(values: Sequence[float]) -> float:
    return statistics.median(values)


def _ratio(r: Result, steady: bool = False) -> float:
    if steady:
        return _med(r.mltune.steady) / _med(r.plain.steady)
    return _med(r.mltune.rates) / _med(r.plain.rates)


def tables(results: dict[Case, Result]) -> tuple[str, str | None]:
    """The whole-fit table (the target's figure) and, with 2+ epochs, the epochs-2.. table."""
    rows = []
    for case, r in results.items():
        ratio = _ratio(r)
        rows.append([
            case.name,
            "/".join(sorted(r.mltune.jit_used | r.plain.jit_used)),
            f"{_med(r.mltune.rates):,.0f}",
            f"{_med(r.plain.rates):,.0f}",
            f"**{ratio:.3f}x**",
            f"{min(r.ratios):.3f} - {max(r.ratios):.3f}",
            f"{max(r.mltune.rates) / max(r.plain.rates):.3f}x",
            f"{_med(r.mltune.seconds):.2f} / {_med(r.plain.seconds):.2f}",
            f"{_med(r.mltune.val_accuracy):.3f} / {_med(r.plain.val_accuracy):.3f}",
            "met" if ratio >= TARGET else "MISSED",
        ])
    whole = fmt_table(["configuration", "jit used", "mltune samples/s", "plain samples/s",
                       "mltune / plain", "per-pair ratios (min - max)", "best / best",
                       "fit s (mltune / plain)", "val_accuracy (mltune / plain)",
                       f">= {TARGET:.1f}x"], rows)
    if not all(r.steady_ratios for r in results.values()):
        return whole, None
    steady = fmt_table(
        ["configuration", "mltune samples/s", "plain samples/s", "mltune / plain",
         "per-pair ratios (min - max)"],
        [[case.name, f"{_med(r.mltune.steady):,.0f}", f"{_med(r.plain.steady):,.0f}",
          f"{_ratio(r, steady=True):.3f}x",
          f"{min(r.steady_ratios):.3f} - {max(r.steady_ratios):.3f}"]
         for case, r in results.items()])
    return whole, steady


def order_effect(results: dict[Case, Result]) -> str:
    """The median whole-fit ratio by which side went first: a gap means an order effect."""
    split: dict[bool, list[float]] = {True: [], False: []}
    for r in results.values():
        for x, first in zip(r.ratios, r.mltune_first, strict=True):
            split[first].append(x)
    if not (split[True] and split[False]):
        return ""
    return (f"Median ratio with mltune first {_med(split[True]):.3f} ({len(split[True])} "
            f"pairs), with plain first {_med(split[False]):.3f} ({len(split[False])} pairs).")


def render(args: argparse.Namespace, argv: Sequence[str], info: dict[str, str],
           backend: str, data: Any, results: dict[Case, Result], wall: float) -> str:
    whole, steady = tables(results)
    ok = sum(_ratio(r) >= TARGET for r in results.values())
    input_path = ("a `tf.data` pipeline (tensors made once per process, shuffled index "
                  "batches gathered in parallel, prefetched; validation batches cached)"
                  if backend == "tensorflow" else
                  "the same NumPy arrays as the plain side (Keras feeds them itself)")
    command = " ".join([sys.executable, "bench/throughput.py", *argv])
    versions = (f"TensorFlow {info['tensorflow']}, " if backend == "tensorflow" else
                f"JAX {info['jax']}, ")
    lines = [
        SECTION,
        "",
        f"Measured {info['date']} on {info['nproc']} cores ({info['cpu']}), {info['os']}; "
        f"Python {info['python']}, Keras {info['keras']} on the **{backend}** backend, "
        f"{versions}NumPy {info['numpy']}; mltune at {info['commit']}. No GPU. The machine "
        "is shared, so single figures are noisy; the per-pair ratios show how much.",
        "",
        f"Re-run from the repository root (this run took {wall / 60:.1f} min):",
        "",
        "```sh",
        command,
        "```",
        "",
        "- **mltune's trainer / plain `model.fit`, whole fit: "
        + ", ".join(f"{_ratio(r):.3f}x ({c.name})" for c, r in results.items())
        + f"**; target >= {TARGET:.1f}x: **{'met' if ok == len(results) else 'MISSED'}** "
        f"({ok} of {len(results)} configurations).",
    ]
    if steady is not None:
        lines.append(
            "- Epochs 2.. only (no tracing, no pipeline set-up): "
            + ", ".join(f"{_ratio(r, steady=True):.3f}x ({c.name})"
                        for c, r in results.items()) + ".")
    lines += [
        "",
        f"The same model (`mltune._model.build_model`, default settings with filters "
        f"{args.filters}: 2 conv blocks, dense 128, dropout 0.25; Adam 1e-3, constant rate) "
        f"from the same seed ({args.seed}) on MNIST `data.max_samples: {args.samples}` "
        f"({len(data.x_train)} training, {len(data.x_val)} validation images, uint8, scaled "
        f"in the model), {args.epochs} epoch(s) with validation after each. mltune: "
        "`mltune._trainer.train`, timed by its `train_seconds` (input pipeline + fit, with "
        f"its epoch callback); its input path here is {input_path}. Plain: "
        "`mltune._trainer.compile_model` (the same compile) + `model.fit(x, y, batch_size, epochs, "
        "validation_data=(xv, yv), verbose=0)` on the NumPy arrays, only the fit timed "
        "(its one callback has epoch hooks only, to time the epochs). "
        "Every fit is a new model, so both sides pay the tracing of the train step each "
        f"time. {args.reps} counted pairs per configuration after one warm-up pair, "
        "interleaved (the side that goes first alternates; configurations round-robin), "
        "the Keras session cleared after each fit outside the timing. Samples/s = "
        "training images x epochs / fit seconds (medians; validation time is in the "
        "seconds, not in the count).",
        "",
        whole,
        "",
    ]
    if steady is not None:
        lines += [
            "The same pairs, epochs 2.. only (each epoch timed from `on_epoch_begin` to "
            "`on_epoch_end`, validation included; the first epoch traces the steps):",
            "",
            steady,
            "",
        ]
    lines += [
        "Per-pair ratios, whole fit (`m`: mltune went first, `p`: plain went first): "
        + "; ".join(f"{c.name}: " + ", ".join(
            f"{x:.3f}{'m' if first else 'p'}" for x, first in zip(r.ratios, r.mltune_first,
                                                                 strict=True))
            for c, r in results.items()) + (". " + order_effect(results)).rstrip(),
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    os.environ["KERAS_BACKEND"] = args.backend  # before anything imports Keras
    data_path = data_file(args.data)
    if data_path is None:
        return 2
    start = time.perf_counter()
    from mltune._device import configure_gpus

    configure_gpus()  # imports TensorFlow with its start-up lines muted, as mltune does
    import keras

    backend = keras.backend.backend()
    packages = ("keras", "numpy", "tensorflow" if backend == "tensorflow" else "jax")
    info = machine_info(packages)
    data = load(args, data_path.resolve())
    cases = [Case(b, j) for j in args.jit for b in args.batch_sizes]
    print(f"{info['nproc']} cores, {info['cpu']}; Keras {info['keras']} on {backend}; "
          f"{len(data.x_train)} training images x {args.epochs} epochs; {len(cases)} "
          f"configurations x ({args.reps} + 1 warm-up) pairs", flush=True)
    results = run(args, cases, data)
    section = render(args, argv, info, backend, data, results, time.perf_counter() - start)
    publish(section, SECTION, DOCS if args.write_docs else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
