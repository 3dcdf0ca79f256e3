"""Training logs: JSON lines (always), TensorBoard (when ``torch.utils.tensorboard`` imports).

Each line of ``workdir/log.jsonl`` is one JSON object. Metric lines carry ``step``, ``loss``
(mean over the steps since the previous line and over all ranks), ``lr``, ``grad_norm`` (before
clipping, at the logged step), ``images_per_s`` (all ranks together), ``time`` (seconds since the
run started) and ``wall`` (Unix time); event lines carry ``event`` (``"start"``, ``"resume"``,
``"checkpoint"``, ``"snapshot"``, ``"end"``) and their details. Read them back with
:func:`read_log`.
"""
from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional

from .errors import reraise_write_error

__all__ = ["JSONLogger", "read_log"]


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/inf; keep them readable
    return v


class JSONLogger:
    """Append JSON lines to ``path``; mirror numeric metrics to TensorBoard if wanted and available.

    Args:
        path: the ``.jsonl`` file (appended to, so a resumed run continues the same log).
        tensorboard: ``True`` (warn if unavailable), ``False``, or ``None`` (use it silently
            when ``torch.utils.tensorboard`` imports). Event files go to ``path.parent / "tb"``.
        enabled: False on ranks other than 0 (then nothing is written).
    """

    def __init__(self, path, tensorboard: Optional[bool] = None, enabled: bool = True):
        self.enabled = enabled
        self.path = Path(path)
        self._tb = None
        self._f = None
        if not enabled:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "a", buffering=1, encoding="utf-8")
        except OSError as e:
            reraise_write_error(e, self.path)   # full / read-only disk: a one-line WorkdirWriteError
            raise
        if tensorboard or tensorboard is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(str(self.path.parent / "tb"))
            except Exception as e:  # noqa: BLE001 - tensorboard is optional
                if tensorboard:
                    warnings.warn(f"TensorBoard logging unavailable ({e}); install `tensorboard` to enable it")

    def log(self, record: Dict):
        """Write one record (adds ``wall``); numbers with a ``step`` also go to TensorBoard."""
        if not self.enabled:
            return
        record = {k: _clean(v) for k, v in record.items()}
        record.setdefault("wall", time.time())
        try:
            self._f.write(json.dumps(record) + "\n")
        except OSError as e:
            reraise_write_error(e, self.path)
            raise
        if self._tb is not None and "step" in record and "event" not in record:
            for k, v in record.items():
                if k not in ("step", "wall") and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(f"train/{k}", v, record["step"])

    def close(self):
        if self._f is not None:
            self._f.close()
            self._f = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_log(path) -> List[Dict]:
    """All records of a ``log.jsonl`` file (a trailing partial line from a killed run is skipped)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out
