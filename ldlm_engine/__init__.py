"""ldlm_engine: diffusion language models in plain PyTorch.

The public API used by every front end (CLI, TUI, notebooks). Nothing here imports a UI
library; front ends consume the same events and the same run directories. Names load lazily
(PEP 562), so `ldlm runs list` and other light commands never pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "BoundEstimate": "evaluation",
    "CheckpointError": "errors",
    "CheckpointEvent": "events",
    "ConfigError": "errors",
    "Corpus": "corpora",
    "DataConfig": "config",
    "DataError": "errors",
    "DiffusionTransformer": "model",
    "EvalEvent": "events",
    "Event": "events",
    "Frame": "sampling",
    "LdlmError": "errors",
    "LoadedRun": "inference",
    "MASK_MARKER": "prompts",
    "MetricsFollower": "metrics_log",
    "ModelConfig": "config",
    "PRESETS": "presets",
    "ProcessConfig": "config",
    "ResumePlan": "plans",
    "RunChoices": "plans",
    "RunPlan": "plans",
    "GenerationResult": "session",
    "GenerationSession": "session",
    "TimedFrame": "session",
    "RunConfig": "config",
    "SAMPLERS": "sampling",
    "RunDir": "runs",
    "RunError": "errors",
    "RunInfo": "runs",
    "SampleConfig": "config",
    "SampleEvent": "events",
    "StatusEvent": "events",
    "StepEvent": "events",
    "Tokenizer": "tokenizers",
    "TrainConfig": "config",
    "Transcript": "sampling",
    "Trainer": "training",
    "adapt_process": "config",
    "apply_overrides": "config",
    "build_tokenizer": "tokenizers",
    "ddp_rank": "plans",
    "ddp_world_size": "plans",
    "delete_run": "runs",
    "discard_unstarted_run": "plans",
    "describe_unknown": "prompts",
    "estimate_nll": "evaluation",
    "exact_bound": "config",
    "evaluate_run": "inference",
    "check_eval_request": "inference",
    "check_range": "config",
    "event_from_dict": "events",
    "final_frame": "sampling",
    "find_trainer": "run_admin",
    "generate": "sampling",
    "get_preset": "presets",
    "ldlm_home": "runs",
    "list_corpora": "corpora",
    "list_runs": "runs",
    "load_config_file": "config",
    "load_corpus": "corpora",
    "load_run": "inference",
    "layered_config": "plans",
    "load_tokenizer": "tokenizers",
    "make_process": "processes",
    "plan_resume": "plans",
    "plan_run": "plans",
    "prepare_data": "runtime",
    "resolve_device": "runtime",
    "resolve_run": "runs",
    "close_run_names": "runs",
    "parse_template": "prompts",
    "PromptTemplate": "prompts",
    "render_text": "prompts",
    "sample_text": "sampling",
    "signal_trainer": "run_admin",
    "unknown_pieces": "prompts",
    "user_config_path": "plans",
    "visible": "safe_text",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ldlm_engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
