"""The model folder: its layout, the checks before a run writes there, and its records.

One package owns what a training run leaves in a folder, so training,
evaluation, export, the CLI and the demo agree on it without importing each
other (:mod:`~siamkit.model_folder.layout`: the file names and the checks;
:mod:`~siamkit.model_folder.records`: the typed records read back). Nothing
here imports torch.

Examples:
    >>> from siamkit.model_folder import ENCODER_FILE, evaluation_folder
    >>> ENCODER_FILE, evaluation_folder("runs/faces").as_posix()
    ('encoder.json', 'runs/faces/evaluation')
"""

from siamkit.model_folder.layout import (
    CANDIDATES_FOLDER,
    CHECKPOINT_FILE,
    ENCODER_FILE,
    EVAL_FOLDER,
    HISTORY_FILE,
    PLOT_FILE,
    RUN_FILES,
    SPLIT_FILE,
    STARTED_FILES,
    TRAINING_KEY,
    WEIGHTS_FILE,
    WEIGHTS_STAGING_FILE,
    check_out_folder,
    check_resume_split,
    evaluation_folder,
    is_run_file,
    read_model_manifest,
    write_split,
)
from siamkit.model_folder.records import (
    EpochRecord,
    TrainingRecord,
    ValidationMetrics,
    read_training_record,
    trained_threshold,
)

__all__ = [
    "CANDIDATES_FOLDER",
    "CHECKPOINT_FILE",
    "ENCODER_FILE",
    "EVAL_FOLDER",
    "HISTORY_FILE",
    "PLOT_FILE",
    "RUN_FILES",
    "SPLIT_FILE",
    "STARTED_FILES",
    "TRAINING_KEY",
    "WEIGHTS_FILE",
    "WEIGHTS_STAGING_FILE",
    "EpochRecord",
    "TrainingRecord",
    "ValidationMetrics",
    "check_out_folder",
    "check_resume_split",
    "evaluation_folder",
    "is_run_file",
    "read_model_manifest",
    "read_training_record",
    "trained_threshold",
    "write_split",
]
