"""Optuna samplers by name, checked at validation time and built once per study."""

from __future__ import annotations

import importlib.util
import inspect
from typing import TYPE_CHECKING, Any

from mltune.errors import ConfigError
from mltune.search_space import SearchSpace, grid_of

if TYPE_CHECKING:
    import optuna

    from mltune.config import StudyConfig

__all__ = ["check_sampler", "create_sampler"]

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
    if study.n_trials is None and study.timeout is None and name != "grid":
        raise ConfigError("study.n_trials", f"must be set (or study.timeout) for sampler "
                          f"{name!r}; only grid search ends by itself", source=source)
    allowed = [p for p in inspect.signature(_sampler_class(name).__init__).parameters
               if p not in ("self", "search_space", "seed")]
    for key in study.sampler_options:
        if key not in allowed:
            known = f"its options: {', '.join(allowed)}" if allowed else "it takes none"
            raise ConfigError(f"study.sampler_options.{key}", f"is not an option of sampler "
                              f"{name!r}; {known}", source=source)
    try:
        create_sampler(study, space)
    except (TypeError, ValueError) as e:
        raise ConfigError("study.sampler_options", f"sampler {name!r} rejects them: {e}",
                          source=source) from None
