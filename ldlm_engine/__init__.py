"""ldlm_engine: diffusion language models in plain PyTorch.

The public API used by every front end (CLI, TUI, notebooks). Nothing here imports a UI
library; front ends consume the same events and the same run directories.
"""

from .config import (
    PRESETS,
    DataConfig,
    ModelConfig,
    ProcessConfig,
    RunConfig,
    SampleConfig,
    TrainConfig,
    adapt_process,
    apply_overrides,
    get_preset,
    load_config_file,
)
from .corpora import Corpus, list_corpora, load_corpus
from .errors import CheckpointError, ConfigError, DataError, LdlmError, RunError
from .evaluation import BoundEstimate, estimate_nll
from .events import (
    CheckpointEvent,
    EvalEvent,
    Event,
    SampleEvent,
    StatusEvent,
    StepEvent,
    event_from_dict,
)
from .inference import LoadedRun, evaluate_run, load_run
from .model import DiffusionTransformer
from .processes import make_process
from .runs import MetricsFollower, RunDir, RunInfo, delete_run, ldlm_home, list_runs, resolve_run
from .sampling import MASK_MARKER, Frame, final_frame, generate, sample_text
from .tokenizers import Tokenizer, build_tokenizer, load_tokenizer
from .training import Trainer, prepare_data, resolve_device

__version__ = "0.1.0"

__all__ = [
    "MASK_MARKER",
    "PRESETS",
    "BoundEstimate",
    "CheckpointError",
    "CheckpointEvent",
    "ConfigError",
    "Corpus",
    "DataConfig",
    "DataError",
    "DiffusionTransformer",
    "EvalEvent",
    "Event",
    "Frame",
    "LdlmError",
    "LoadedRun",
    "MetricsFollower",
    "ModelConfig",
    "ProcessConfig",
    "RunConfig",
    "RunDir",
    "RunError",
    "RunInfo",
    "SampleConfig",
    "SampleEvent",
    "StatusEvent",
    "StepEvent",
    "Tokenizer",
    "TrainConfig",
    "Trainer",
    "__version__",
    "adapt_process",
    "apply_overrides",
    "build_tokenizer",
    "delete_run",
    "estimate_nll",
    "evaluate_run",
    "event_from_dict",
    "final_frame",
    "generate",
    "get_preset",
    "ldlm_home",
    "list_corpora",
    "list_runs",
    "load_config_file",
    "load_corpus",
    "load_run",
    "load_tokenizer",
    "make_process",
    "prepare_data",
    "resolve_device",
    "resolve_run",
    "sample_text",
]
