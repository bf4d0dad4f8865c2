"""MLflow tracking: the only module that imports ``mlflow``.

Runs are addressed by explicit ids through :class:`mlflow.MlflowClient`, never through the
global active-run stack (which is per thread and breaks with parallel trials). The parent
run belongs to the study; each trial gets a child run whose status follows the trial.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.tracking.registry import UnsupportedModelRegistryStoreURIException

from mltune._errors import ConfigError, MltuneError
from mltune._names import Tag
from mltune._secrets import check_userinfo, redact, remember, scrub, scrub_files
from mltune._storage import check_sqlite, sqlite_lock

if TYPE_CHECKING:
    import keras
    import numpy as np

__all__ = ["DEFAULT_TRACKING_URI", "Tracker", "project_run_id",
           "resolve_tracking_uri"]

CHAMPION, CHALLENGER = "champion", "challenger"


class TrackingUnavailable(MltuneError):
    """The tracking server stayed unreachable through MLflow's retries."""

    def __init__(self, uri: str, error: BaseException) -> None:
        reason = redact(str(error).splitlines()[0])[:300] if str(error) else type(error).__name__
        super().__init__(
            f"the MLflow tracking server at {redact(uri)} stays unreachable ({reason}); this "
            "worker stops. Completed trials are kept in the study: run the same command again "
            "when the server is back")

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


PARENT_RUN_ID = "mlflow.parentRunId"


def project_run_id() -> str | None:
    """The run ``mlflow run`` started for this process (``MLFLOW_RUN_ID``), if any."""
    return os.environ.get("MLFLOW_RUN_ID") or None


def resolve_tracking_uri(uri: str | None) -> str:
    """The URI given, else the one the user set (``mlflow.set_tracking_uri`` or
    ``MLFLOW_TRACKING_URI``), else the embedded SQLite store."""
    from mlflow.tracking._tracking_service.utils import is_tracking_uri_set

    if uri:
        return uri
    return mlflow.get_tracking_uri() if is_tracking_uri_set() else DEFAULT_TRACKING_URI


@contextlib.contextmanager
def _global_uri(uri: str) -> Iterator[None]:
    """Model logging and loading resolve the tracking URI globally: set ours for that call
    and put back exactly what the process had (set or not), so the caller's is untouched."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    # MLflow's context puts back its own setting, and on the way unsets MLFLOW_TRACKING_URI
    # when that was where the URI came from (set_tracking_uri(None) clears it).
    env = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        if env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env


@contextlib.contextmanager
def _no_run_urls() -> Iterator[None]:
    """MLflow prints "View run ... at: <url>" for every run it ends on a server; the progress
    display is the one place that talks to the user. Restored afterwards."""
    key = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"
    before = os.environ.get(key)
    os.environ[key] = "true"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def _first_line(error: BaseException) -> str:
    """The error's first line, without SQLAlchemy's wrapping ("(sqlite3.OperationalError)",
    the statement): the driver's own message."""
    text = str(getattr(error, "orig", None) or error).strip()
    return redact(text.splitlines()[0])[:600] if text else type(error).__name__


def _deleted(name: str, experiment_id: str, uri: str) -> ConfigError:
    return ConfigError("--experiment", f"the MLflow experiment must be active, but {name!r} "
                       f"is deleted in {redact(uri)}; restore it (mlflow experiments restore "
                       f"--experiment-id {experiment_id}) or pass another --experiment")


def _clean_tags(tags: dict[str, Any]) -> dict[str, str]:
    return {k: scrub(str(v)) for k, v in tags.items()}


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


class Tracker:
    """Writes one study's runs to one MLflow experiment."""

    def __init__(self, tracking_uri: str | None = None, experiment: str | None = None) -> None:
        self.uri = resolve_tracking_uri(tracking_uri)
        remember(self.uri)
        self.experiment_name = experiment
        self.experiment_id: str | None = None
        self._client: MlflowClient | None = None

    @property
    def client(self) -> MlflowClient:
        """The MLflow client, made on first use: making it opens the store, which for a new
        SQLite database creates its tables (after :meth:`check`, so nothing is written to a
        store that fails it)."""
        if self._client is None:
            database = check_sqlite(self.uri, "--tracking-uri", write=False)
            with contextlib.ExitStack() as stack:
                if database is not None:
                    stack.enter_context(sqlite_lock(database, "--tracking-uri"))
                self._client = MlflowClient(self.uri)
        return self._client

    # -- checks before anything is written -------------------------------------------------
    def check(self) -> None:
        """Raise :class:`ConfigError` if the tracking store cannot be used; before anything is
        written to it (a new SQLite store is created here, once it passes)."""
        shown = redact(self.uri)
        check_userinfo(self.uri, "--tracking-uri")
        if self.uri.startswith(("http://", "https://")):
            import requests

            try:
                requests.get(self.uri.rstrip("/") + "/health", timeout=10).raise_for_status()
            except requests.RequestException as e:
                reason = type(e).__name__
                raise ConfigError("--tracking-uri", f"cannot reach the MLflow tracking server "
                                  f"at {shown} ({reason})") from None
        check_sqlite(self.uri, "--tracking-uri")
        try:
            self.client  # noqa: B018 -- opens the store (creates a new one, under its lock)
        except UnsupportedModelRegistryStoreURIException as e:
            schemes = ", ".join(sorted(s for s in e.supported_uri_schemes if s))
            raise ConfigError("--tracking-uri", f"must be a tracking URI MLflow supports (a "
                              f"scheme of {schemes}), but got {shown}") from None
        except ConfigError:
            raise
        except Exception as e:  # SQLAlchemy's, Alembic's or MLflow's: no raw SQL error shown
            raise ConfigError("--tracking-uri", f"cannot open the MLflow store {shown}: "
                              f"{_first_line(e)}") from None
        try:
            self._check_experiment()
            self._check_project_params()
        except MlflowException as e:
            raise ConfigError("--tracking-uri", f"cannot use {shown}: "
                              f"{redact(e.message.splitlines()[0])}") from None

    def _check_experiment(self) -> None:
        """The study's experiment, when it exists, is not deleted: MLflow refuses runs in a
        deleted one, which would be found only after the study is created. (Under ``mlflow
        run`` the runs go to the project run's experiment instead.)"""
        if self.experiment_name is None or project_run_id():
            return
        exp = self.client.get_experiment_by_name(self.experiment_name)
        if exp is not None and exp.lifecycle_stage == "deleted":
            raise _deleted(exp.name, exp.experiment_id, self.uri)

    def _check_project_params(self) -> None:
        """Under ``mlflow run``, MLflow has logged every ``-P`` value as a parameter of the
        project's run before mltune starts: one that holds a password is refused, with what
        to do instead."""
        run_id = project_run_id()
        if not run_id:
            return
        params = self.client.get_run(run_id).data.params
        for key, value in sorted(params.items()):
            if scrub(value) != value:
                raise ConfigError(f"-P {key}", (
                    f"`mlflow run` logged this value, password and all, as a parameter of "
                    f"run {run_id}: delete that run (mlflow runs delete --run-id {run_id}, "
                    "then mlflow gc) and give a URL with a password by the environment "
                    "instead (MLTUNE_STORAGE, MLFLOW_TRACKING_URI or PGPASSWORD), which "
                    "MLflow does not log"))

    def unavailable(self, error: BaseException) -> bool:
        """Whether ``error`` says the tracking server cannot be reached (after retries)."""
        import requests

        if isinstance(error, requests.ConnectionError):
            return True
        text = str(error)
        return isinstance(error, MlflowException) and any(s in text for s in (
            "Max retries exceeded", "Connection refused", "Failed to establish a new connection",
            "RemoteDisconnected", "Connection aborted"))

    def ensure_experiment(self) -> str:
        if self.experiment_id is None:
            name = self.experiment_name or "Default"
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                try:
                    self.experiment_id = self.client.create_experiment(name)
                except MlflowException:  # created meanwhile by another worker?
                    exp = self.client.get_experiment_by_name(name)
                    if exp is None:  # no: the error was another
                        raise
                    self.experiment_id = exp.experiment_id
            else:
                if exp.lifecycle_stage == "deleted":  # deleted since check()
                    raise _deleted(name, exp.experiment_id, self.uri)
                self.experiment_id = exp.experiment_id
        return self.experiment_id

    def finished_trial_runs(self, experiment_name: str) -> list[dict[str, Any]] | None:
        """The FINISHED, COMPLETE trial runs of mltune studies in an experiment (to warm-start
        a study from), or None when the experiment does not exist or is deleted. Each:
        ``run_id``, ``study`` (its ``mltune.study_name``), ``params`` and ``fixed`` (its
        parent's params: the settings that were not searched), as MLflow keeps them
        (strings), and its ``metrics`` (the last value of each)."""
        exp = self.client.get_experiment_by_name(experiment_name)
        if exp is None or exp.lifecycle_stage == "deleted":
            return None
        runs: list[Any] = []
        token: str | None = None
        while True:
            page = self.client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'",
                                           max_results=1000, page_token=token,
                                           order_by=["attributes.start_time ASC"])
            runs.extend(page)
            token = page.token
            if not token:
                break
        parents: dict[str, dict[str, str]] = {r.info.run_id: dict(r.data.params) for r in runs}
        models = self._trial_models(exp.experiment_id)
        found = []
        for run in runs:
            tags = run.data.tags
            parent = tags.get(PARENT_RUN_ID)
            if not parent or Tag.TRIAL_NUMBER not in tags or tags.get(
                    Tag.STATE, "COMPLETE") != "COMPLETE":
                continue
            if parent not in parents:
                try:
                    parents[parent] = dict(self.client.get_run(parent).data.params)
                except MlflowException:
                    parents[parent] = {}
            found.append({"run_id": run.info.run_id, "study": tags.get(Tag.STUDY_NAME),
                          "params": dict(run.data.params), "fixed": parents[parent],
                          "metrics": dict(run.data.metrics),
                          "model_uri": models.get(run.info.run_id)})
        return found

    def _trial_models(self, experiment_id: str) -> dict[str, str]:
        """Run id -> the URI of the trial model it logged (``model``, as :meth:`log_model`
        names it), for the logged models of an experiment that were finalized."""
        from mlflow.entities import LoggedModelStatus

        models: dict[str, str] = {}
        token: str | None = None
        while True:
            page = self.client.search_logged_models([experiment_id], page_token=token)
            for model in page:
                if (model.name == "model" and model.source_run_id
                        and model.status == LoggedModelStatus.READY):
                    models[model.source_run_id] = f"models:/{model.model_id}"
            token = page.token
            if not token:
                return models

    # -- runs -------------------------------------------------------------------------------
    def run_exists(self, run_id: str | None) -> bool:
        if not run_id:
            return False
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return False
        return run.info.lifecycle_stage == "active"

    def start_parent(self, *, name: str, tags: dict[str, str], params: dict[str, Any],
                     project_run_id: str | None = None) -> str:
        """A new study's parent run: ``project_run_id`` (the run of ``mlflow run``) when
        given, else a new run in the study's experiment."""
        if project_run_id:
            run = self.client.get_run(project_run_id)
            self.experiment_id = run.info.experiment_id
            self.client.update_run(project_run_id, name=name)
            self.set_tags(project_run_id, tags)
            # The project's own parameters are logged already; add the settings it lacks.
            self.log_params(project_run_id, {k: v for k, v in params.items()
                                             if k not in run.data.params})
            return project_run_id
        run = self.client.create_run(self.ensure_experiment(), run_name=name,
                                     tags=_clean_tags(_context_tags() | tags))
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def resume_parent(self, run_id: str, experiment_id: str, tags: dict[str, str]) -> None:
        """A resumed study's parent run, RUNNING again, in its experiment (the study's)."""
        self.experiment_id = experiment_id
        if self.run_status(run_id) != "RUNNING":
            self.reopen(run_id)
        self.set_tags(run_id, tags)

    def run_experiment(self, run_id: str) -> str:
        return str(self.client.get_run(run_id).info.experiment_id)

    def experiment_name_of(self, experiment_id: str) -> str:
        return str(self.client.get_experiment(experiment_id).name)

    def experiment_names(self, experiment_ids: list[str]) -> dict[str, str]:
        """The names of those experiments that exist in the store; nothing for a local
        store that is not there (looking creates nothing)."""
        database = check_sqlite(self.uri, "--tracking-uri", write=False)
        if database is not None and not database.is_file():
            return {}
        names = {}
        for experiment_id in experiment_ids:
            try:
                names[experiment_id] = self.experiment_name_of(experiment_id)
            except MlflowException:
                continue
        return names

    def start_child(self, parent_run_id: str, *, name: str, tags: dict[str, str],
                    params: dict[str, Any]) -> str:
        run = self.client.create_run(
            self.ensure_experiment(), run_name=name,
            tags=_clean_tags(_context_tags() | tags | {PARENT_RUN_ID: parent_run_id}))
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def nest(self, run_id: str, parent_run_id: str) -> None:
        """Make ``run_id`` a child of ``parent_run_id`` (the UI shows it beneath): a study's
        parent run under the run of a comparison of samplers."""
        self.set_tags(run_id, {PARENT_RUN_ID: parent_run_id})

    def end_run(self, run_id: str, status: str) -> None:
        with _no_run_urls():
            self.client.set_terminated(run_id, status=status)

    def run_status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status

    def reopen(self, run_id: str) -> None:
        """An ended run is RUNNING again: a study resumed under its parent run."""
        self.client.update_run(run_id, status="RUNNING")

    def fail_pending_models(self, experiment_id: str) -> list[str]:
        """Logged models left PENDING by a process killed while logging them (``kill -9``,
        a lost node) become FAILED once their run has ended; returns their ids. A model whose
        run is still RUNNING may be being logged right now, and is left alone."""
        from mlflow.entities import LoggedModelStatus

        failed: list[str] = []
        token: str | None = None
        while True:
            page = self.client.search_logged_models([experiment_id], page_token=token)
            for model in page:
                if model.status != LoggedModelStatus.PENDING:
                    continue
                run_id = model.source_run_id
                if run_id and self.run_exists(run_id) and self.run_status(run_id) == "RUNNING":
                    continue
                self.client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
                failed.append(model.model_id)
            token = page.token
            if not token:
                return failed

    # -- data -------------------------------------------------------------------------------
    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        items = [Param(k, scrub(str(v))) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i:i + 100])

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in _clean_tags(tags).items()])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        now = _now_ms()
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, step)
                                               for k, v in metrics.items()])

    def log_error(self, run_id: str, error: BaseException) -> None:
        """The error's one-line summary as a tag, the traceback as ``error.txt``."""
        summary = f"{type(error).__name__}: {error}"
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        self.set_tags(run_id, {"mltune.error": scrub(summary)[:5000]})
        self.client.log_text(run_id, scrub(text), "error.txt")

    def log_artifacts(self, run_id: str, folder: str | Path) -> None:
        """The files under ``folder``, its text files scrubbed first (in place)."""
        scrub_files(folder)
        self.client.log_artifacts(run_id, str(folder))

    def log_model(self, run_id: str, path: str, example: np.ndarray, *, outputs: Any,
                  code: tuple[list[str], list[str]] = ([], [])) -> str:
        """Log the Keras model saved at ``path`` (a ``.keras`` file, written perhaps by a
        trial's own process) with signature and input example; returns its model URI.
        Nothing here runs the model: this process may never start the backend's runtime.

        ``outputs``: :func:`mltune._trainer.output_spec` of the model. ``code``: the user's
        files to ship (MLflow ``code_paths``) and the modules to import before loading, so
        custom layers are registered (:func:`mltune._usercode.code_paths`). With them,
        ``mlflow.pyfunc.load_model`` imports those modules itself."""
        import numpy as np

        example = np.asarray(example, dtype=np.float32)
        return self._log_to_run(run_id, "model", _KerasFlavor, model=_SavedKeras(path),
                                signature=_signature(example, outputs),
                                input_example=example, user_code=code,
                                # MLflow would reload the model and predict the example
                                # (0.3 s per model); the tests load and run logged models.
                                validate_serving_input=False)

    def _log_to_run(self, run_id: str, name: str, flavor: Any, **kwargs: Any) -> str:
        """``Model.log`` to ``run_id`` with explicit requirements; returns the model URI."""
        import keras
        from mlflow.models import Model

        # Created here so the logged model lands in the run's experiment: left to itself,
        # Model.log picks the global experiment (Default) when no run is active.
        logged = self.client.create_logged_model(
            experiment_id=self.client.get_run(run_id).info.experiment_id, name=name,
            source_run_id=run_id)
        with _global_uri(self.uri):
            info = Model.log(artifact_path=None, name=name, flavor=flavor, run_id=run_id,
                             model_id=logged.model_id, pip_requirements=_requirements(keras),
                             **kwargs)
        return str(info.model_uri)

    # -- Model Registry ---------------------------------------------------------------------
    def load_keras_model(self, model_uri: str) -> keras.Model:
        """The Keras model at ``model_uri``; the user's modules it ships are imported first,
        so its custom layers load."""
        import importlib
        import sys

        import mlflow.keras

        with _global_uri(self.uri):
            local = Path(mlflow.artifacts.download_artifacts(model_uri))
            meta = local / _IMPORTS_FILE
            if meta.exists():
                code = str(local / "code")
                if code not in sys.path:
                    sys.path.append(code)  # after the user's own path: theirs come first
                for module in json.loads(meta.read_text())["modules"]:
                    importlib.import_module(module)
            return mlflow.keras.load_model(str(local))

    def log_serving_model(self, run_id: str, model: keras.Model, *,
                          input_shape: tuple[int, ...], class_names: list[str],
                          example: np.ndarray, code: tuple[list[str], list[str]] = ([], []),
                          resize: str | None = None) -> str:
        """Log ``model`` as a python_function model that takes raw images in any usual form
        (see :mod:`mltune._serving`); returns its model URI. ``resize`` (stretch, crop or
        pad: a model trained on an image folder) makes it take images of any size, resized
        as in training.

        Its input schema is ``Tensor('object', (-1,))``, the one tensor spec MLflow lets
        through unchecked: it enforces any other spec's dtype and rank exactly, which would
        turn away the uint8, channel-less, single and flattened images the loader accepts,
        and REST's ragged lists before the loader could say what is wrong with them. The
        loader checks the shape itself: a wrong one is HTTP 400 naming the expected shape.
        What the spec cannot state is on the model: its metadata (``input_shape``;
        ``input_dtype``, the training data's, whose value range the model expects;
        ``class_names``: ``mlflow.models.get_model_info(uri).metadata``), its input example
        (two test images) and the version's description. The price: MLflow passes a DataFrame
        of several columns to no such spec, so flattened rows go as an array
        (``df.to_numpy()``; over REST ``inputs`` or ``instances``, not ``dataframe_split``).
        Marking the signature as made from type hints would skip MLflow's checks for every
        form, but the server would then take ``inputs`` only, and the MLmodel would misstate
        the model.
        """
        import mlflow.pyfunc
        import numpy as np
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec

        import mltune._serving as serving

        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(object), (-1,))]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(class_names)),
                                       name="probabilities")]))
        metadata = {"input_shape": list(input_shape),
                    "input_dtype": str(np.asarray(example).dtype),
                    "class_names": list(class_names),
                    **({"resize": resize} if resize else {})}
        with tempfile.TemporaryDirectory(prefix="mltune-serving-") as tmp:
            data = Path(tmp, "data")
            data.mkdir()
            model.save(data / serving.KERAS_FILE)
            files, modules = code
            (data / serving.META_FILE).write_text(json.dumps(
                {"input_shape": list(input_shape), "class_names": class_names,
                 "modules": modules, "resize": resize}))
            # Shipped under a name of its own, so loading needs no mltune installation.
            loader = Path(tmp, "mltune_serving.py")
            shutil.copyfile(serving.__file__, loader)
            return self._log_to_run(
                run_id, "serving_model", mlflow.pyfunc, loader_module="mltune_serving",
                data_path=str(data), code_paths=[str(loader), *files], signature=signature,
                input_example=example, metadata=metadata)

    def register_version(self, name: str, model_uri: str, *, run_id: str,
                         tags: dict[str, Any], description: str) -> str:
        """A new version of registered model ``name``; returns its version number."""
        try:
            self.client.create_registered_model(
                name, description="Registered by mltune: CNNs tuned with Optuna.")
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        model_id = model_uri.removeprefix("models:/")
        # The registry looks the logged model up through the global tracking URI (MLflow 3.17:
        # MlflowClient() in SqlAlchemyStore.create_model_version).
        with _global_uri(self.uri):
            version = self.client.create_model_version(
                name, source=model_uri, run_id=run_id,
                tags=_clean_tags(tags), description=scrub(description),
                model_id=model_id)
        return str(version.version)

    def versions_of_run(self, name: str, run_id: str) -> list[Any]:
        try:
            return list(self.client.search_model_versions(
                f"name = '{name}' and run_id = '{run_id}'"))
        except MlflowException:
            return []

    def champion(self, name: str) -> Any | None:
        try:
            return self.client.get_model_version_by_alias(name, CHAMPION)
        except MlflowException:
            return None

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, version)


def _signature(example: np.ndarray, outputs: Any) -> Any:
    """The signature from the example and the model's output spec, or, for a model of
    several outputs, from its predictions on the example."""
    import numpy as np
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import Schema, TensorSpec

    if not isinstance(outputs, tuple):
        return infer_signature(example, outputs)
    dtype, shape = outputs
    return ModelSignature(
        inputs=Schema([TensorSpec(example.dtype, (-1, *example.shape[1:]))]),
        outputs=Schema([TensorSpec(np.dtype(dtype), (-1, *(-1 if d is None else int(d)
                                                           for d in shape)))]))


class _SavedKeras:
    """Stands in for a Keras model that is already saved: MLflow's Keras flavor only calls
    ``model.save(path)``, which copies the file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def save(self, filepath: str, **kwargs: Any) -> None:
        shutil.copyfile(self.path, filepath)


def _requirements(keras: Any) -> list[str]:
    """Explicit pip requirements: inferring them takes seconds per logged model."""
    from importlib.metadata import PackageNotFoundError, version

    requirements = [f"mlflow=={mlflow.__version__}", f"keras=={keras.__version__}"]
    backend = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}.get(
        keras.backend.backend())
    if backend:
        try:
            requirements.append(f"{backend}=={version(backend)}")
        except PackageNotFoundError:
            pass
    return requirements


class _KerasFlavor:
    """``mlflow.keras`` with its save folder made first.

    MLflow's Keras 3 flavor writes the input example before it creates the model folder
    (https://github.com/mlflow/mlflow/issues/16183), so logging with an input example fails.
    ``Model.log`` takes the flavor as a module-like object; this one fixes that one step.
    """

    __name__ = "mlflow.keras"

    @staticmethod
    def save_model(path: str, validate_serving_input: bool = True,
                   user_code: tuple[list[str], list[str]] = ([], []), **kwargs: Any) -> None:
        # validate_serving_input is an option of Model.log, which passes it on to the flavor.
        import mlflow.keras

        os.makedirs(path, exist_ok=True)
        mlflow.keras.save_model(path=path, **kwargs)
        files, modules = user_code
        if files:
            _ship_user_code(path, kwargs["mlflow_model"], files, modules)


_IMPORTS_FILE = "mltune_imports.json"
_LOADER_MODULE = "mltune_keras_loader"


def _ship_user_code(path: str, model: Any, files: list[str], modules: list[str]) -> None:
    """Put the user's files under ``code/`` (as MLflow's ``code_paths`` does) and make the
    python_function flavor load through :mod:`mltune._keras_loader`, which imports
    ``modules`` before Keras reads the model, so their custom layers are registered."""
    import mltune._keras_loader as loader

    code = Path(path, "code")
    code.mkdir(exist_ok=True)
    for f in files:
        src = Path(f)
        if src.is_dir():
            shutil.copytree(src, code / src.name, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copyfile(src, code / src.name)
    # Shipped under a name of its own, so loading needs no mltune installation.
    shutil.copyfile(loader.__file__, code / f"{_LOADER_MODULE}.py")
    conf = model.flavors["python_function"]
    Path(path, _IMPORTS_FILE).write_text(json.dumps({"modules": modules}))
    conf["loader_module"] = _LOADER_MODULE
    conf["code"] = "code"
    model.save(os.path.join(path, "MLmodel"))


_CONTEXT: dict[str, str] | None = None


def _context_tags() -> dict[str, str]:
    """The tags MLflow's fluent ``start_run`` adds (user, source), resolved once."""
    global _CONTEXT
    if _CONTEXT is None:
        from mlflow.tracking.context.registry import resolve_tags

        _CONTEXT = {k: v for k, v in resolve_tags({}).items() if k.startswith("mlflow.")}
    return dict(_CONTEXT)

