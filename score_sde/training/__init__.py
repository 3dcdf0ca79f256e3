"""Training: the loop (:func:`train`), EMA, checkpoints, logs, torch.distributed helpers.

Library functions take explicit arguments; turning an experiment config into a model, a loss
and data happens at the edge (the command line). See ``docs/training.md``.
"""
from .batches import derive_seed
from .checkpoint import (CheckpointError, ConfigMismatchError, check_config_compatible, check_state_dict,
                         latest_checkpoint, list_checkpoints, load_checkpoint, load_model, payload_digest,
                         save_checkpoint)
from .distributed import DistInfo, get_rank, get_world_size, init_distributed, is_distributed
from .ema import EMA, unwrap_model
from .errors import RunLockedError, TrainingDivergedError, WorkdirWriteError
from .lock import RunLock, read_lock_holder
from .logs import JSONLogger, read_log
from .loop import TrainResult, lr_at, train

__all__ = [
    "train", "TrainResult", "lr_at",
    "EMA", "unwrap_model",
    "CheckpointError", "save_checkpoint", "load_checkpoint", "load_model", "latest_checkpoint",
    "list_checkpoints", "check_state_dict", "payload_digest",
    "ConfigMismatchError", "check_config_compatible",
    "RunLock", "RunLockedError", "read_lock_holder",
    "TrainingDivergedError", "WorkdirWriteError",
    "JSONLogger", "read_log",
    "DistInfo", "init_distributed", "is_distributed", "get_rank", "get_world_size",
    "derive_seed",
]
