"""Searched parameters: one definition gives ``trial.suggest_*`` and the grid.

Each parameter type is small and says what it does: :meth:`suggest` asks an Optuna trial
for a value, :meth:`grid` lists the finite values for ``GridSampler`` (or None when there
are infinitely many) and :meth:`size` counts them without listing them.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    import optuna

__all__ = ["Categorical", "Float", "Int", "Param", "SearchSpace"]

Scalar = Union[None, bool, int, float, str]


@dataclass(frozen=True)
class Float:
    name: str
    low: float
    high: float
    log: bool = False
    step: float | None = None

    def suggest(self, trial: optuna.Trial) -> float:
        value = trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        # Optuna's stepped values carry float noise (0.30000000000000004); logged params and
        # the model get the grid's value.
        return round(value, 12) if self.step is not None else value

    def grid(self) -> list[Scalar] | None:
        step, n = self.step, self.size()
        if step is None or n is None:
            return None
        # Rounding keeps 0.1 * 3 from becoming 0.30000000000000004 in params and tables.
        return [round(self.low + i * step, 12) for i in range(n)]

    def size(self) -> int | None:
        if self.step is None:
            return None
        # Counted on the decimal values as written (0.1, not 0.1000000000000000055...), as
        # Optuna does, and exactly: a tiny step must not overflow a float.
        span = Fraction(str(self.high)) - Fraction(str(self.low))
        return int(span // Fraction(str(self.step))) + 1

    def bounds(self) -> list[Any]:
        return [self.low, self.high]


@dataclass(frozen=True)
class Int:
    name: str
    low: int
    high: int
    log: bool = False
    step: int = 1

    def suggest(self, trial: optuna.Trial) -> int:
        return trial.suggest_int(self.name, self.low, self.high, log=self.log, step=self.step)

    def grid(self) -> list[Scalar] | None:
        return list(range(self.low, self.high + 1, self.step))

    def size(self) -> int | None:
        return (self.high - self.low) // self.step + 1

    def bounds(self) -> list[Any]:
        return [self.low, self.high]


@dataclass(frozen=True)
class Categorical:
    name: str
    choices: tuple[Scalar, ...]

    def suggest(self, trial: optuna.Trial) -> Any:
        return trial.suggest_categorical(self.name, self.choices)

    def grid(self) -> list[Scalar] | None:
        return list(self.choices)

    def size(self) -> int | None:
        return len(self.choices)

    def bounds(self) -> list[Any]:
        return list(self.choices)


Param = Union[Float, Int, Categorical]
SearchSpace = dict[str, Param]


def suggest_all(space: SearchSpace, trial: optuna.Trial) -> dict[str, Any]:
    """Ask ``trial`` for a value of every parameter, in the order of the study file."""
    return {name: param.suggest(trial) for name, param in space.items()}


def grid_of(space: SearchSpace) -> dict[str, list[Scalar]]:
    """The grid for ``optuna.samplers.GridSampler``; every parameter must be finite."""
    grid: dict[str, list[Scalar]] = {}
    for name, param in space.items():
        values = param.grid()
        if values is None:
            raise ValueError(f"{name} has no finite grid")
        grid[name] = values
    return grid


def grid_size(space: SearchSpace) -> int:
    """The number of points of the grid, counted without listing them."""
    total = 1
    for name, param in space.items():
        n = param.size()
        if n is None:
            raise ValueError(f"{name} has no finite grid")
        total *= n
    return total
