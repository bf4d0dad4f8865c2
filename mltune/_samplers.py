"""Optuna samplers and pruners by name, checked at validation time and built once per
study."""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from mltune._errors import ConfigError
from mltune._search_space import SearchSpace, grid_of, suggest_all

if TYPE_CHECKING:
    import optuna

    from mltune._types import StudyConfig

__all__ = ["check_pruner", "check_sampler", "create_pruner", "create_sampler", "distributions"]

# A sampler given options is tried on a throwaway study first: its start-up trials and a few
# more, so that an option it only reads when it samples (TPE's gamma) fails here, not later.
_DRY_RUN_MAX = 40

# Packages a sampler needs beyond Optuna, and the extra that installs them.
_NEEDS: dict[str, tuple[tuple[str, ...], str]] = {
    "gp": (("torch", "scipy"), "gp"),
    "cmaes": (("cmaes",), "cmaes"),
    "qmc": (("scipy",), "qmc"),
}


def _sampler_class(name: str) -> Any:
    import optuna

    return {
        "random": optuna.samplers.RandomSampler,
        "grid": optuna.samplers.GridSampler,
        "tpe": optuna.samplers.TPESampler,
        "gp": optuna.samplers.GPSampler,
        "cmaes": optuna.samplers.CmaEsSampler,
        "qmc": optuna.samplers.QMCSampler,
    }[name]


def _defaults(name: str) -> dict[str, Any]:
    if name == "tpe":
        # Optuna 5 changed these defaults; say what we want rather than inherit whatever the
        # installed Optuna picks. constant_liar keeps parallel workers from sampling the same
        # point while trials are running.
        return {"multivariate": True, "constant_liar": True}
    return {}


def create_sampler(study: StudyConfig, space: SearchSpace) -> optuna.samplers.BaseSampler:
    """The sampler named by ``study.sampler``, seeded with ``study.seed``."""
    cls = _sampler_class(study.sampler)
    kwargs: dict[str, Any] = {**_defaults(study.sampler), **study.sampler_options}
    if study.sampler == "grid":
        kwargs["search_space"] = grid_of(space)
    if "seed" in inspect.signature(cls.__init__).parameters:
        kwargs.setdefault("seed", study.seed)
    return cls(**kwargs)


def check_sampler(study: StudyConfig, space: SearchSpace, *, source: str) -> None:
    """Raise :class:`ConfigError` unless :func:`create_sampler` will succeed."""
    name = study.sampler
    packages, extra = _NEEDS.get(name, ((), ""))
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        raise ConfigError("study.sampler", f"sampler {name!r} needs the package(s) "
                          f"{', '.join(missing)}; install them with "
                          f"pip install 'mltune[{extra}]'", source=source)
    if not space:
        raise ConfigError("search_space", "must name at least one setting to search (every "
                          "setting it names is fixed under model: or training:)", source=source)
    if study.multi_objective and name == "cmaes":
        raise ConfigError("study.sampler", "sampler 'cmaes' cannot run a multi-objective "
                          "study (study.objectives); use tpe, gp, random, grid or qmc",
                          source=source)
    if study.n_trials is None and study.timeout is None and name != "grid":
        raise ConfigError("study.n_trials", f"must be set (or study.timeout) for sampler "
                          f"{name!r}; only grid search ends by itself", source=source)
    _check_options("sampler", name, _sampler_class(name), study.sampler_options,
                   lambda: create_sampler(study, space), source, skip=("search_space", "seed"))
    if study.sampler_options:
        _dry_run(study, space, source)


def distributions(space: SearchSpace) -> dict[str, optuna.distributions.BaseDistribution]:
    """The Optuna distribution of each parameter of ``space``, as its trials will store it."""
    import optuna

    with _quiet_optuna():
        trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    suggest_all(space, trial)
    return dict(trial.distributions)


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """No "A new study created in memory" lines for the throwaway studies of the checks."""
    import warnings

    import optuna

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        optuna.logging.set_verbosity(before)


def _dry_run(study: StudyConfig, space: SearchSpace, source: str) -> None:
    """Sample with the configured sampler on an in-memory study, past its start-up trials."""
    import optuna

    startup = study.sampler_options.get("n_startup_trials", 10)
    n = min(_DRY_RUN_MAX, (startup if isinstance(startup, int) else 0) + 3)
    with _quiet_optuna():
        try:
            sampler = create_sampler(study, space)
            trial_study = optuna.create_study(sampler=sampler, directions=study.directions)  # type: ignore[arg-type]
            for i in range(n):
                trial = trial_study.ask()
                suggest_all(space, trial)
                values = [float(i % 7)] * len(study.directions)
                trial_study.tell(trial, values if len(values) > 1 else values[0])
        except Exception as e:
            raise ConfigError("study.sampler_options", f"sampler {study.sampler!r} fails "
                              f"with them when it samples: {type(e).__name__}: {e}",
                              source=source) from None


def _check_options(kind: str, name: str, cls: Any, options: dict[str, Any],
                   create: Callable[[], Any], source: str, skip: tuple[str, ...] = ()
                   ) -> None:
    """``study.<kind>_options`` must be keyword arguments of ``cls`` (but ``skip``, which
    mltune sets), and ``create()`` must accept their values."""
    allowed = [p for p in inspect.signature(cls.__init__).parameters
               if p not in ("self", *skip)]
    for key in options:
        if key not in allowed:
            known = f"its options: {', '.join(allowed)}" if allowed else "it takes none"
            raise ConfigError(f"study.{kind}_options.{key}", f"is not an option of {kind} "
                              f"{name!r}; {known}", source=source)
    try:
        with _quiet_optuna():  # its warnings come once, when the study is made
            create()
    except (TypeError, ValueError) as e:
        raise ConfigError(f"study.{kind}_options", f"{kind} {name!r} rejects them: {e}",
                          source=source) from None


def _pruner_class(name: str) -> Any:
    import optuna

    return {
        "none": optuna.pruners.NopPruner,
        "median": optuna.pruners.MedianPruner,
        "percentile": optuna.pruners.PercentilePruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
        # Optuna prunes nothing in a multi-objective study: mltune._pareto decides, in the
        # objective, after each epoch.
        "pareto": optuna.pruners.NopPruner,
    }[name]


def _max_epochs(settings: dict[str, Any], space: SearchSpace) -> int:
    """The most epochs a trial can train: a searched ``epochs`` at its highest."""
    param = space.get("epochs")
    return int(max(param.bounds()) if param is not None else settings["epochs"])


def _pruner_kwargs(study: StudyConfig, settings: dict[str, Any], space: SearchSpace
                   ) -> dict[str, Any]:
    if study.pruner == "pareto":  # its options are mltune's (mltune._pareto.ParetoOptions)
        return {}
    kwargs = dict(study.pruner_options)
    if study.pruner == "hyperband":
        # A trial's resource is the number of epochs it has trained (the step it reports).
        kwargs.setdefault("min_resource", 1)
        kwargs.setdefault("max_resource", _max_epochs(settings, space))
    return kwargs


def create_pruner(study: StudyConfig, settings: dict[str, Any], space: SearchSpace
                  ) -> optuna.pruners.BasePruner:
    """The pruner named by ``study.pruner``; trials report their metric once per epoch, with
    the number of epochs trained as the step. ``pareto``: Optuna's ``NopPruner``, the trials
    prune themselves (:mod:`mltune._pareto`)."""
    return _pruner_class(study.pruner)(**_pruner_kwargs(study, settings, space))


def check_pruner(study: StudyConfig, space: SearchSpace, settings: dict[str, Any], *,
                 source: str) -> list[str]:
    """Raise :class:`ConfigError` unless :func:`create_pruner` will succeed; return advice
    on combinations that work but waste the pruner (or the sampler)."""
    name = study.pruner
    if name == "pareto":
        return _check_pareto(study, space, settings, source)
    if study.multi_objective and name != "none":
        raise ConfigError("study.pruner", f"pruner {name!r} compares one objective, but the "
                          "study has several (study.objectives); use pruner 'pareto' (it "
                          "prunes a trial that other trials dominate at the same epoch) or "
                          "none", source=source)
    cls, kwargs = _pruner_class(name), _pruner_kwargs(study, settings, space)
    if name == "percentile" and "percentile" not in study.pruner_options:
        raise ConfigError("study.pruner_options.percentile", "must be set for pruner "
                          "'percentile' (e.g. 25.0: prune a trial below the 25th percentile of "
                          "the trials at the same epoch)", source=source)

    def create() -> Any:
        if name == "hyperband":  # HyperbandPruner checks these only when it first prunes
            _check_hyperband(kwargs, source)
        return cls(**kwargs)

    _check_options("pruner", name, cls, study.pruner_options, create, source)
    max_epochs = _max_epochs(settings, space)
    notes: list[str] = []
    if name == "none":
        return notes
    if max_epochs <= 1:
        notes.append(f"pruner {name!r} has nothing to save: trials train {max_epochs} epoch, "
                     "and pruning acts between epochs")
    startup = study.pruner_options.get("n_startup_trials", 5)
    if name in ("median", "percentile") and study.n_trials is not None and (
            study.n_trials <= startup):
        notes.append(f"pruner {name!r} prunes nothing in the first {startup} trials "
                     f"(n_startup_trials), and the study has {study.n_trials}")
    # Optuna shows a sampler only the trials of the current trial's Hyperband bracket, so a
    # model-based sampler starts over in each bracket.
    if name == "hyperband" and study.sampler in ("tpe", "gp"):
        rf = kwargs.get("reduction_factor", 3)
        lo, hi = kwargs["min_resource"], kwargs["max_resource"]
        brackets = math.floor(math.log(hi / lo, rf)) + 1 if hi != "auto" else 1
        startup_trials = study.sampler_options.get("n_startup_trials", 10)
        needed = startup_trials * brackets
        if study.n_trials is None or study.n_trials < needed:
            have = (f"the study has {study.n_trials}" if study.n_trials is not None
                    else "set n_trials to at least that")
            sampler = study.sampler.upper()
            notes.append(f"{sampler} with the hyperband pruner samples at random until each of "
                         f"hyperband's {brackets} brackets has {startup_trials} trials "
                         f"(sampler_options.n_startup_trials): about {needed} trials before "
                         f"{sampler} starts, and {have}; lower n_startup_trials (e.g. "
                         f"{max(2, startup_trials // brackets)}) or raise n_trials")
    return notes


def _check_pareto(study: StudyConfig, space: SearchSpace, settings: dict[str, Any],
                  source: str) -> list[str]:
    from mltune._pareto import ParetoOptions

    if not study.multi_objective:
        raise ConfigError("study.pruner", "pruner 'pareto' compares several objectives "
                          "(study.objectives), but the study has one; use median, percentile, "
                          "successive_halving or hyperband", source=source)
    options = ParetoOptions.parse(study.pruner_options, source=source)
    notes: list[str] = []
    max_epochs = _max_epochs(settings, space)
    if max_epochs <= options.n_warmup_steps + 1:
        notes.append(f"pruner 'pareto' has nothing to save: trials train at most {max_epochs} "
                     f"epoch(s), pruning starts after epoch {options.n_warmup_steps + 1} "
                     "(n_warmup_steps + 1) and no trial is pruned after its last epoch")
    if study.n_trials is not None and study.n_trials <= options.n_startup_trials:
        notes.append(f"pruner 'pareto' prunes nothing in the first {options.n_startup_trials} "
                     f"trials (n_startup_trials), and the study has {study.n_trials}")
    return notes


def _check_hyperband(kwargs: dict[str, Any], source: str) -> None:
    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    lo, hi, rf = kwargs["min_resource"], kwargs["max_resource"], kwargs.get(
        "reduction_factor", 3)
    if not is_int(lo) or lo < 1:
        raise ConfigError("study.pruner_options.min_resource", "must be an integer >= 1 (epochs), "
                          f"but got {lo!r}", source=source)
    if hi != "auto" and (not is_int(hi) or hi < lo):
        raise ConfigError("study.pruner_options.max_resource", f"must be an integer >= "
                          f"min_resource ({lo}) or 'auto', but got {hi!r}", source=source)
    if not is_int(rf) or rf < 2:
        raise ConfigError("study.pruner_options.reduction_factor", "must be an integer >= 2, "
                          f"but got {rf!r}", source=source)
