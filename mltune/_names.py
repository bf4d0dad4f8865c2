"""Every name mltune writes into MLflow (run tags) and Optuna (study and trial user attrs).

One place, so a reader (and the MLflow UI search box) can find what each means, and no
module types a key of its own.
"""

from __future__ import annotations

__all__ = ["FIT_OWNED", "RUN_STATUS", "Attr", "Tag"]

# model.fit arguments that mltune sets itself (fit_kwargs cannot).
FIT_OWNED = ("x", "y", "batch_size", "epochs", "validation_data", "validation_split",
             "callbacks", "verbose", "shuffle", "steps_per_epoch", "initial_epoch")

# Optuna trial state -> MLflow run status. A trial still RUNNING when the process stops was
# interrupted: its run is FAILED, never left RUNNING.
RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED",
              "RUNNING": "FAILED", "WAITING": "FAILED"}


class Tag:
    """MLflow run tags."""

    # the study, on the parent run and on every trial run
    STUDY_NAME = "mltune.study_name"
    SAMPLER = "mltune.sampler"
    METRIC = "mltune.metric"
    DIRECTION = "mltune.direction"
    OBJECTIVES = "mltune.objectives"
    PRUNER = "mltune.pruner"
    VERSION = "mltune.version"
    STORAGE = "mltune.storage"
    BUILDER = "mltune.builder"  # where the model comes from: builtin, or file.py:function
    KIND = "mltune.kind"  # "train" for `mltune train` runs
    # the study's summary on the parent run
    BEST_TRIAL = "mltune.best_trial"
    BEST_RUN_ID = "mltune.best_run_id"
    SELECTION_RULE = "mltune.selection_rule"
    WARM_START = "mltune.warm_start"  # the warm start's source and how many trials it gave
    # one trial's run
    TRIAL_NUMBER = "mltune.trial_number"
    STATE = "mltune.state"  # the Optuna trial state
    DEVICE = "mltune.device"
    CUDA_VISIBLE_DEVICES = "mltune.cuda_visible_devices"
    PRUNED_AT_EPOCH = "mltune.pruned_at_epoch"
    ERROR = "mltune.error"
    ERROR_KIND = "mltune.error_kind"  # out_of_memory, non_finite_loss
    MODEL_ERROR = "mltune.model_error"
    PARETO_FRONT = "mltune.pareto_front"
    # a comparison of samplers (`mltune compare`): its own run, the studies' parents beneath it
    COMPARE = "mltune.compare"  # the samplers compared, comma-separated
    WINNER = "mltune.winner"
    WITHIN_SPREAD = "mltune.within_spread"  # true: the winner's lead is within the seeds' spread
    # a registered model version
    PARENT_RUN_ID = "mltune.parent_run_id"
    RUN_ID = "mltune.run_id"


class Attr:
    """Optuna user attrs: ``STUDY_*`` on the study, the others on each trial; and
    :attr:`STUDY_CONFIG`, a study *system* attr."""

    # Set last by the process that creates the study, once the study file is stored and the
    # warm start seeded: a start that finds it can sample at once.
    STUDY_PARENT_RUN = "mlflow_parent_run_id"
    WARM_START = "mltune_warm_start"  # study: its source was read; trial: seeded from it
    STUDY_EXPERIMENT = "mlflow_experiment_id"
    STUDY_TARGET = "mltune_target_trials"  # workers run until the study has this many
    STUDY_GRID_QUEUE = "mltune_grid_queue"  # the grid was enqueued whole
    # The study file as validated, for workers and `mltune register`: a study *system* attr,
    # as a whole study file among the user attrs makes `optuna studies` unreadable.
    STUDY_CONFIG = "mltune_config"
    RUN_ID = "mlflow_run_id"
    MODEL_URI = "mlflow_model_uri"
    WORKER = "mltune_worker"  # host:pid
    ERROR = "mltune_error"  # why a trial failed by itself (not lost with its worker)
    EPOCHS = "epochs_run"  # epochs trained, pruned trials included
    # several objectives: {"<epochs trained>": [value of each objective]}, what Optuna's
    # intermediate values hold for one objective (the pareto pruner compares them)
    INTERMEDIATE_VALUES = "mltune_intermediate_values"
