"""What the user sees while a study runs: a live display on a terminal, plain lines elsewhere."""

from __future__ import annotations

import sys
from typing import Any, Protocol, TextIO

__all__ = ["PlainProgress", "Progress", "RichProgress", "make_progress"]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={_fmt(v)}" for k, v in params.items())


class Progress(Protocol):
    def study_started(self, name: str, n_trials: int | None, done: int) -> None: ...
    def trial_started(self, number: int, params: dict[str, Any]) -> None: ...
    def epoch_ended(self, number: int, epoch: int, epochs: int, metrics: dict[str, float]
                    ) -> None: ...
    def trial_finished(self, number: int, state: str, value: float | None, detail: str,
                       best: tuple[int, float] | None) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


class PlainProgress:
    """One line per trial start and end; for logs, pipes and CI."""

    def __init__(self, metric: str, stream: TextIO | None = None) -> None:
        self.metric = metric
        self.stream = stream or sys.stdout
        self.n_trials: int | None = None
        self.started = 0

    def _print(self, text: str) -> None:
        from mltune._trial_process import output_lock

        with output_lock:
            print(text, file=self.stream, flush=True)

    def study_started(self, name: str, n_trials: int | None, done: int) -> None:
        self.n_trials = n_trials
        more = f"{n_trials} trials" if n_trials else "trials until the grid is exhausted"
        resumed = f", resuming after {done} earlier trials" if done else ""
        self._print(f"study {name}: {more}{resumed}")

    def _of(self) -> str:
        return f"{self.started}/{self.n_trials}" if self.n_trials else f"{self.started}"

    def trial_started(self, number: int, params: dict[str, Any]) -> None:
        self.started += 1
        self._print(f"[{self._of()}] trial {number} started: {_params(params)}")

    def epoch_ended(self, number: int, epoch: int, epochs: int, metrics: dict[str, float]
                    ) -> None:
        pass

    def trial_finished(self, number: int, state: str, value: float | None, detail: str,
                       best: tuple[int, float] | None) -> None:
        shown = f" {self.metric}={value:.4f}" if value is not None else ""
        extra = f" ({detail})" if detail else ""
        best_text = f"; best {best[1]:.4f} (trial {best[0]})" if best else ""
        self._print(f"[{self._of()}] trial {number} {state}{shown}{extra}{best_text}")

    def message(self, text: str) -> None:
        self._print(text)

    def close(self) -> None:
        pass


class RichProgress(PlainProgress):
    """A live panel: trial i/N, its parameters, the epoch bar and the best so far."""

    def __init__(self, metric: str) -> None:
        from rich.console import Console
        from rich.live import Live

        super().__init__(metric)
        self.console = Console()
        self.live = Live(console=self.console, refresh_per_second=4, transient=True)
        self.current: dict[str, Any] = {}
        self.best: tuple[int, float] | None = None
        self.live.start()

    def _print(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False)

    def _render(self) -> None:
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        grid = Table.grid(padding=(0, 1))
        cur = self.current
        if cur:
            grid.add_row(f"trial {cur['number']} [{self._of()}]", _params(cur["params"]))
            epochs = cur.get("epochs") or 1
            bar = ProgressBar(total=epochs, completed=cur.get("epoch", 0), width=30)
            last = cur.get("metrics", {})
            text = f"epoch {cur.get('epoch', 0)}/{epochs}"
            if self.metric in last:
                text += f"  {self.metric}={last[self.metric]:.4f}"
            grid.add_row(bar, text)
        if self.best:
            grid.add_row("best so far", f"{self.metric}={self.best[1]:.4f} (trial {self.best[0]})")
        self.live.update(grid)

    def trial_started(self, number: int, params: dict[str, Any]) -> None:
        self.started += 1
        self.current = {"number": number, "params": params}
        self._render()

    def epoch_ended(self, number: int, epoch: int, epochs: int, metrics: dict[str, float]
                    ) -> None:
        self.current.update(epoch=epoch + 1, epochs=epochs, metrics=metrics)
        self._render()

    def trial_finished(self, number: int, state: str, value: float | None, detail: str,
                       best: tuple[int, float] | None) -> None:
        self.best = best
        super().trial_finished(number, state, value, detail, best)
        self.current = {}
        self._render()

    def close(self) -> None:
        self.live.stop()


def make_progress(metric: str, *, live: bool | None = None) -> PlainProgress:
    """A live display on a terminal and in Jupyter (rich needs ipywidgets there: the
    ``notebook`` extra), plain lines otherwise (logs, pipes, CI)."""
    if live is None:
        live = sys.stdout.isatty() or _in_jupyter()
    return RichProgress(metric) if live else PlainProgress(metric)


def _in_jupyter() -> bool:
    """Whether this runs in a Jupyter kernel that can show rich's live display."""
    import importlib.util

    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    try:
        ip = shell.get_ipython()
    except AttributeError:
        return False
    kernel = ip is not None and type(ip).__name__ == "ZMQInteractiveShell"
    return kernel and importlib.util.find_spec("ipywidgets") is not None
