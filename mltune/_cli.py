"""``mltune``: thin commands that parse, load the config, call one library function, and turn
mltune's errors into one message and a non-zero exit (2 for bad input).

Importing this module must stay cheap: ``mltune --help`` never imports TensorFlow or MLflow.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from mltune import __version__

app = typer.Typer(
    name="mltune",
    help="Tune Keras CNNs with Optuna; every trial is an MLflow run.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

def _opt_int(text: str) -> Optional[int]:
    """An int, or None for an empty value: MLproject passes every parameter, '' when unset."""
    return int(text) if text.strip() else None


def _opt_float(text: str) -> Optional[float]:
    return float(text) if text.strip() else None


def _opt_str(text: str) -> Optional[str]:
    return text if text.strip() else None


def _storage_str(text: str) -> Optional[str]:
    """An empty ``--storage`` (the MLproject's default) means $MLTUNE_STORAGE, as no option."""
    return text if text.strip() else os.environ.get("MLTUNE_STORAGE") or None


ConfigArg = Annotated[Path, typer.Argument(help="Study file (YAML).", show_default=False)]
SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", help="Override any key of the study file: key.path=value (repeatable).",
    show_default=False)]
TrackingOpt = Annotated[Optional[str], typer.Option(
    "--tracking-uri", parser=_opt_str, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or "
    "sqlite:///mlflow.db).", show_default=False)]
StorageOpt = Annotated[Optional[str], typer.Option(
    "--storage", parser=_storage_str, envvar="MLTUNE_STORAGE", help="Optuna storage: a database "
    "URL (sqlite:///, postgresql://...) or a journal file path (default: $MLTUNE_STORAGE, "
    "else optuna_journal.log beside the MLflow SQLite store, or in the current folder for a "
    "tracking server).", show_default=False)]
ExperimentOpt = Annotated[Optional[str], typer.Option(
    "--experiment", parser=_opt_str, help="MLflow experiment name (default: "
    "study.experiment, else the study name).", show_default=False)]
DataOpt = Annotated[Optional[str], typer.Option(
    "--data", parser=_opt_str, help="Data source instead of data.source: mnist, fashion_mnist, "
    "cifar10, digits, or a .npz/.csv file or image folder (relative to the current folder).",
    show_default=False)]
SeedOpt = Annotated[Optional[int], typer.Option(
    "--seed", parser=_opt_int, help="Sampler and data-split seed (default: study.seed).",
    show_default=False)]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks and library logs.")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mltune {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    """Tune Keras CNNs with Optuna; every trial is an MLflow run."""


def _quiet(debug: bool) -> None:
    """Keep library chatter (TensorFlow start-up, Optuna's per-trial logs) off the screen."""
    if debug:
        logging.basicConfig(level=logging.INFO)
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    for name in ("optuna", "mlflow", "alembic", "absl", "tensorflow", "keras"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _run(debug: bool, fn: Callable[[], Any]) -> Any:
    from mltune import ConfigError, DataError, MltuneError
    from mltune._errors import Terminated

    _quiet(debug)
    try:
        return fn()
    except (ConfigError, DataError) as e:
        if debug:
            raise
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    except MltuneError as e:
        if debug:
            raise
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    except Terminated:
        typer.echo("terminated (SIGTERM)", err=True)
        raise typer.Exit(143) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    except Exception as e:
        if debug:
            raise
        typer.echo(f"error: {type(e).__name__}: {e}\n(run with --debug for the traceback)",
                   err=True)
        raise typer.Exit(1) from None


@app.command()
def tune(
    config: ConfigArg,
    sampler: Annotated[Optional[str], typer.Option(
        parser=_opt_str, help="random, grid, tpe, gp, cmaes or qmc (default: study.sampler).",
        show_default=False)] = None,
    n_trials: Annotated[Optional[int], typer.Option(
        "--n-trials", parser=_opt_int, help="Trials to run now (default: study.n_trials; "
        "grid: until exhausted).", show_default=False)] = None,
    timeout: Annotated[Optional[float], typer.Option(
        parser=_opt_float, help="Stop starting trials after this many seconds.",
        show_default=False)] = None,
    study_name: Annotated[Optional[str], typer.Option(
        "--study-name", parser=_opt_str, help="Optuna study name; an existing study is "
        "resumed (default: study.name).", show_default=False)] = None,
    seed: SeedOpt = None,
    data: DataOpt = None,
    register_as: Annotated[Optional[str], typer.Option(
        "--register-as", parser=_opt_str, help="When the study ends, register its best model "
        "under this name in the MLflow Model Registry (see `mltune register`).",
        show_default=False)] = None,
    workers: Annotated[int, typer.Option(
        "--workers", min=0, help="Worker processes sharing the study (each runs `mltune "
        "worker`; the default journal-file storage is safe for them). 0: only create the "
        "study, for workers started elsewhere.")] = 1,
    gpus: Annotated[Optional[str], typer.Option(
        "--gpus", parser=_opt_str, help="GPUs to use, e.g. 0,1: one worker per GPU (times "
        "--trials-per-gpu), each seeing only its GPU.", show_default=False)] = None,
    trials_per_gpu: Annotated[int, typer.Option(
        "--trials-per-gpu", min=1, help="Concurrent trials on each GPU of --gpus, each with a "
        "share of its memory.")] = 1,
    trials_per_process: Annotated[Optional[int], typer.Option(
        "--trials-per-process", min=1, parser=_opt_int, help="Run trials in worker processes "
        "that are replaced after this many trials each, so memory stays bounded over long "
        "studies (TensorFlow keeps about 10 MB per fitted model). Default: no limit.",
        show_default=False)] = None,
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
    experiment: ExperimentOpt = None,
    set_: SetOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Run an Optuna study over the CNN; one MLflow parent run, one child run per trial."""

    def go() -> None:
        import mltune

        cfg = mltune.load_config(config, set_ or [], data=data, sampler=sampler, n_trials=n_trials,
                          timeout=timeout, name=study_name, seed=seed, experiment=experiment)
        gpu_list = [g.strip() for g in gpus.split(",") if g.strip()] if gpus else None
        result = mltune.tune(cfg, storage=storage, tracking_uri=tracking_uri, workers=workers,
                             gpus=gpu_list, trials_per_gpu=trials_per_gpu,
                             trials_per_process=trials_per_process)
        states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(result.states.items()))
        typer.echo(f"study {result.study_name}: {result.n_trials} trials ({states})")
        if result.best_trial is not None and cfg.study.multi_objective:
            values = ", ".join(f"{k}={v:.4g}" for k, v in result.best_values.items())
            typer.echo(f"best trial {result.best_trial} ({result.selection_rule}): {values}; "
                       f"MLflow run {result.best_run_id}")
        elif result.best_trial is not None:
            typer.echo(f"best {cfg.study.metric}={result.best_value:.4f}: trial "
                       f"{result.best_trial}, MLflow run {result.best_run_id}")
        if result.best_params:
            typer.echo("best params: " + " ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in result.best_params.items()))
        typer.echo(f"parent run {result.parent_run_id} in experiment {result.experiment_id}; "
                   f"look at it with: {_ui_hint(tracking_uri, result.experiment_id)}")
        if result.best_trial is not None and not register_as:
            where = "".join(f" {opt} {value}" for opt, value in (
                ("--storage", storage), ("--tracking-uri", tracking_uri)) if value)
            typer.echo(f"next: mltune trials {result.study_name}{where}   (the table of trials)"
                       f"\n      mltune register --study {result.study_name} --name MODEL"
                       f"{where}   (register the best model)")
        if register_as:
            _echo_registration(mltune.register_best(
                study_name=result.study_name, name=register_as, storage=storage,
                tracking_uri=tracking_uri))

    _run(debug, go)


@app.command()
def compare(
    config: ConfigArg,
    samplers: Annotated[str, typer.Option(
        "--samplers", help="Samplers to compare, comma-separated: random, grid, tpe, gp, cmaes, "
        "qmc (e.g. random,grid,tpe).", show_default=False)],
    budget: Annotated[str, typer.Option(
        "--budget", help="Each study's budget: trials (20) or time (600s, 10m, 1h: no trial "
        "starts after it).", show_default=False)],
    seeds: Annotated[int, typer.Option(
        "--seeds", min=1, help="Studies per sampler, seeded study.seed + 0, 1, ...")] = 3,
    study_name: Annotated[Optional[str], typer.Option(
        "--study-name", parser=_opt_str, help="The comparison's name; its studies are "
        "NAME-SAMPLER-seedK (default: study.name).", show_default=False)] = None,
    seed: Annotated[Optional[int], typer.Option(
        "--seed", parser=_opt_int, help="The first study's seed (default: study.seed, else "
        "0); every study keeps its data split.", show_default=False)] = None,
    data: DataOpt = None,
    output: Annotated[Optional[Path], typer.Option(
        "--output", help="Folder for comparison.html, .png, .csv and .md (default: "
        "./compare-NAME).", show_default=False)] = None,
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
    experiment: ExperimentOpt = None,
    set_: SetOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Compare samplers on your model and data: each runs as its own studies on the same
    budget, over several seeds, under one MLflow run; prints the table and the winner, and
    writes best-so-far figures (against trials and time) and the table."""

    def go() -> None:
        import mltune
        from mltune._compare import display_table

        cfg = mltune.load_config(config, set_ or [], for_study=False, data=data,
                                 name=study_name, seed=seed, experiment=experiment)
        result = mltune.compare(cfg, samplers=samplers, budget=budget, seeds=seeds,
                                output=output, storage=storage, tracking_uri=tracking_uri)
        import pandas as pd

        shown = display_table(result.table, result.metric, result.test_metric)
        with pd.option_context("display.max_columns", None, "display.width", 200):
            typer.echo(shown.to_string(index=False))
        typer.echo(result.summary)
        typer.echo(f"comparison run {result.run_id} in experiment {result.experiment_id}; "
                   f"look at it with: {_ui_hint(tracking_uri, result.experiment_id)}")
        typer.echo(f"figures and table: {result.output}")

    _run(debug, go)


@app.command()
def train(
    config: ConfigArg,
    data: DataOpt = None,
    seed: SeedOpt = None,
    tracking_uri: TrackingOpt = None,
    experiment: ExperimentOpt = None,
    set_: SetOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Train once with fixed settings (no study): one MLflow run with the model and its test
    metrics. Searched settings that are not fixed take their defaults."""

    def go() -> None:
        import mltune

        cfg = mltune.load_config(config, set_ or [], for_study=False, data=data, seed=seed,
                          experiment=experiment)
        run = mltune.train(cfg, tracking_uri=tracking_uri)
        shown = " ".join(f"{k}={v:.4f}" for k, v in run.test_metrics.items())
        typer.echo(f"run {run.run_id}: {shown}; look at it with: {_ui_hint(tracking_uri)}")

    _run(debug, go)


@app.command()
def worker(
    study_name: Annotated[str, typer.Option("--study-name", "--study", help="Study name.",
                                            show_default=False)],
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
    max_trials: Annotated[Optional[int], typer.Option(
        "--max-trials", min=1, parser=_opt_int, help="Exit after running this many trials.",
        show_default=False)] = None,
    debug: DebugOpt = False,
) -> None:
    """Join a running study from any machine and run its trials until it has enough.

    The study's settings are stored with it, so no study file is needed; point --storage at
    the study's database (or journal file on the same machine) and --tracking-uri at the
    same MLflow server."""

    def go() -> None:
        import mltune

        ran = mltune.run_worker(study_name=study_name, storage=storage, tracking_uri=tracking_uri,
                         max_trials=max_trials)
        typer.echo(f"worker done: {ran} trials of study {study_name}")

    _run(debug, go)


@app.command()
def register(
    study: Annotated[str, typer.Option("--study", "--study-name", help="Study name.",
                                       show_default=False)],
    name: Annotated[str, typer.Option("--name", help="Registered model name.",
                                      show_default=False)],
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Register a study's best model in the MLflow Model Registry: it is evaluated on the
    held-out test split, and the new version gets the alias champion if its test accuracy
    beats the current champion's, else challenger."""

    def go() -> None:
        import mltune

        _echo_registration(mltune.register_best(study_name=study, name=name, storage=storage,
                                                tracking_uri=tracking_uri))

    _run(debug, go)


def _echo_registration(reg: Any) -> None:
    if reg.already_registered:
        typer.echo(f"the best trial is registered already: {reg.name} version {reg.version}"
                   + (f" (@{reg.alias})" if reg.alias else ""))
        return
    scores = " ".join(f"{k}={v:.4f}" for k, v in reg.test_metrics.items())
    typer.echo(f"registered {reg.name} version {reg.version} as @{reg.alias} ({scores}); "
               f"load it with mlflow.pyfunc.load_model('models:/{reg.name}@{reg.alias}')")
    if reg.alias == "challenger":
        typer.echo(f"version {reg.previous_champion} stays @champion: its test accuracy is "
                   "at least as high")


@app.command()
def trials(
    study: Annotated[str, typer.Argument(help="Study name.", show_default=False)],
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
    output_format: Annotated[str, typer.Option(
        "--format", help="table, csv or json.")] = "table",
    debug: DebugOpt = False,
) -> None:
    """Print the trials of a study: number, state, value, params, MLflow run id."""

    def go() -> None:
        import mltune

        _check_format(output_format)
        _echo_frame(mltune.load_trials(study, storage, tracking_uri=tracking_uri),
                    output_format, empty="no trials")

    _run(debug, go)


@app.command()
def studies(
    storage: StorageOpt = None,
    tracking_uri: TrackingOpt = None,
    output_format: Annotated[str, typer.Option(
        "--format", help="table, csv or json.")] = "table",
    debug: DebugOpt = False,
) -> None:
    """Print the studies of a storage: trials by state, best value, MLflow experiment."""

    def go() -> None:
        import mltune

        _check_format(output_format)
        frame = mltune.load_studies(storage, tracking_uri=tracking_uri)
        if output_format == "table":
            frame = frame.drop(columns=["experiment_id"])
        _echo_frame(frame, output_format, empty="no studies")

    _run(debug, go)


def _check_format(output_format: str) -> None:
    from mltune import ConfigError

    if output_format not in ("table", "csv", "json"):
        raise ConfigError("--format", f"must be one of table, csv, json, but got "
                          f"{output_format!r}")


def _echo_frame(frame: Any, output_format: str, *, empty: str) -> None:
    if output_format == "csv":
        typer.echo(frame.to_csv(index=False), nl=False)
    elif output_format == "json":
        typer.echo(frame.to_json(orient="records", date_format="iso", indent=2))
    else:
        import pandas as pd

        with pd.option_context("display.max_columns", None, "display.width", 200):
            typer.echo(frame.to_string(index=False) if not frame.empty else empty)


def _ui_hint(tracking_uri: str | None, experiment_id: str | None = None) -> str:
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    if uri.startswith(("http://", "https://")):
        from mltune._secrets import redact

        page = f"/#/experiments/{experiment_id}/runs?workflowType=machine_learning" if (
            experiment_id) else ""
        return redact(uri.rstrip("/")) + page
    return f"mlflow ui --backend-store-uri {uri}"


def main() -> None:
    from mltune._secrets import remember, scrub_console

    # Every line this process prints, tracebacks of --debug included, passes the redaction.
    remember(*[a.partition("=")[2] or a for a in sys.argv[1:] if "://" in a],
             os.environ.get("MLFLOW_TRACKING_URI"))
    scrub_console()
    app(prog_name="mltune")


if __name__ == "__main__":  # pragma: no cover
    main()
