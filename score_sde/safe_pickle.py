"""Loading untrusted files without running code from them.

Two helpers, for the two kinds of pickle-based files score_sde reads from users:

* :func:`load_array_pickle` - a restricted unpickler for data files that are pickles of plain
  data plus numpy arrays (CIFAR-10's python batches). It admits only numpy's array and scalar
  reconstruction (``numpy.core.multiarray._reconstruct`` in numpy 1 files,
  ``numpy._core.multiarray._reconstruct`` in numpy 2 files, ``_frombuffer`` of protocol 5),
  ``numpy.ndarray``, ``numpy.dtype`` (object dtypes refused) and the pickle opcodes for lists,
  dicts, tuples, bytes (with ``_codecs.encode`` to latin-1, as Python 3 writes bytes in protocol 2),
  strings and numbers. Any other global (``os.system``, ``builtins.eval``,
  any class) raises :class:`UnsafePickleError` *before* anything is called.
* :func:`load_weights_file` - ``torch.load(weights_only=True)`` with one-sentence errors that
  name the file and what was expected (a text file, a file that carries pickled code, a
  truncated file), instead of torch's multi-paragraph message.

This module imports nothing from the rest of the package.
"""
from __future__ import annotations

import importlib
import io
import os
import pickle
from typing import BinaryIO, Union

__all__ = ["UnsafePickleError", "WeightsFileError", "load_array_pickle", "loads_array_pickle",
           "load_weights_file", "describe_load_failure"]


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asks for a global (function or class) outside the admitted set; nothing was run."""


class WeightsFileError(ValueError):
    """A weights file cannot be read as tensors and plain data (text, truncated, or carrying code)."""


def _numpy_attr(module_tail: str, name: str):
    """``numpy._core.<tail>.<name>`` (numpy 2) or ``numpy.core.<tail>.<name>`` (numpy 1)."""
    for base in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{base}.{module_tail}"), name)
        except (ImportError, AttributeError):
            continue
    raise UnsafePickleError(f"this numpy has no {module_tail}.{name}")


def _safe_dtype(*args, **kwargs):
    import numpy as np

    dt = np.dtype(*args, **kwargs)
    if dt.hasobject:
        raise UnsafePickleError(f"refusing numpy dtype {dt!r}: object arrays can carry arbitrary Python objects")
    return dt


def _latin1_encode(text, encoding="latin1", errors="strict"):
    """``_codecs.encode`` as protocol-2 pickles written by Python 3 use it for ``bytes`` (latin-1 only)."""
    if encoding.replace("-", "").replace("_", "").lower() not in ("latin1", "iso88591") or not isinstance(text, str):
        raise UnsafePickleError(f"refusing _codecs.encode with encoding {encoding!r} (only latin-1 text -> bytes)")
    return text.encode("latin1", errors)


# (module, name) -> resolver; both numpy 1 and numpy 2 module paths map to this numpy's function.
_NUMPY_FUNCS = {"multiarray": ("_reconstruct", "scalar"), "numeric": ("_frombuffer",)}


def _allowed(module: str, name: str):
    import numpy as np

    if module == "numpy" and name == "ndarray":
        return np.ndarray
    if module == "numpy" and name == "dtype":
        return _safe_dtype
    if module == "_codecs" and name == "encode":
        return _latin1_encode
    for base in ("numpy.core.", "numpy._core."):
        if module.startswith(base):
            tail = module[len(base):]
            if name in _NUMPY_FUNCS.get(tail, ()):
                return _numpy_attr(tail, name)
    return None


class _ArrayUnpickler(pickle.Unpickler):
    def __init__(self, file, *, source: str, encoding: str):
        super().__init__(file, encoding=encoding)
        self._source = source

    def find_class(self, module, name):
        obj = _allowed(module, name)
        if obj is None:
            raise UnsafePickleError(
                f"{self._source} asks to load {module}.{name}, which a data file of numpy arrays never needs: "
                "refused without running it (the file may be crafted to run code); only numpy arrays, dtypes, "
                "lists, dicts, bytes, strings and numbers are admitted")
        return obj

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self._source} uses persistent ids, which a data file of numpy arrays never needs")


def load_array_pickle(file: Union[str, os.PathLike, BinaryIO], encoding: str = "bytes"):
    """Unpickle ``file`` (a path or a binary file object) admitting only plain data and numpy arrays.

    ``encoding`` is passed to :class:`pickle.Unpickler` (``"bytes"`` keeps Python 2 ``str`` as
    ``bytes``, as CIFAR-10's batches need). Raises :class:`UnsafePickleError` (a subclass of
    ``pickle.UnpicklingError``) naming the file and the refused global; nothing from the file is
    called before that check.
    """
    if isinstance(file, (str, os.PathLike)):
        with open(file, "rb") as fh:
            return _ArrayUnpickler(fh, source=os.fspath(file), encoding=encoding).load()
    source = getattr(file, "name", "the pickle")
    return _ArrayUnpickler(file, source=str(source), encoding=encoding).load()


def loads_array_pickle(data: bytes, encoding: str = "bytes"):
    """:func:`load_array_pickle` on a bytes object."""
    return _ArrayUnpickler(io.BytesIO(data), source="the pickle", encoding=encoding).load()


def load_weights_file(path: Union[str, os.PathLike], what: str, expected: str, map_location="cpu"):
    """``torch.load(path, weights_only=True)`` with a one-sentence :class:`WeightsFileError` on failure.

    Args:
        path: the file.
        what: what the file should be, for the message (e.g. ``"FID Inception weights file"``).
        expected: what it should hold (e.g. ``"a state_dict saved with torch.save"``).
    Raises FileNotFoundError if ``path`` is not a file. The message names the file, says what
    was found (text, pickled code, a truncated or corrupt file) and what is expected; the
    original exception is not chained, so no traceback from inside torch is printed.
    """
    import torch

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path} ({expected} is expected there)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read means a bad file
        reason = describe_load_failure(path, e)
    raise WeightsFileError(f"{path} is not a {what}: {reason}; expected {expected}")


def describe_load_failure(path, e: Exception) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed with ``e``, as a short clause
    ("it is a text file", "it carries pickled code ...", "it is truncated or corrupt (...)")."""
    path = os.fspath(path)
    text = str(e)
    with open(path, "rb") as fh:
        head = fh.read(512)
    plain = head[:2] != b"PK" and head[:1] != b"\x80"     # neither a zip archive nor a protocol-2+ pickle
    if "Unsupported operand" in text and plain and "GLOBAL" not in text:
        text = ""                                         # a text file read as a protocol-0 pickle: below
    if "Unsupported global" in text or "Unsupported operand" in text or "weights_only" in text and "GLOBAL" in text:
        name = ""
        for line in text.splitlines():
            if "Unsupported global: GLOBAL" in line:
                name = " (" + line.split("GLOBAL", 1)[1].strip().split()[0] + ")"
                break
        return f"it carries pickled code or Python objects{name}, which a weights file never needs, so it was " \
               "refused without running it"
    if plain:
        try:
            head.decode("utf-8")
            return "it is a text file"
        except UnicodeDecodeError:
            pass
        return "it is neither a torch.save zip archive nor a pickle"
    first = (text.splitlines()[0] if text else "").split(". ")[0]
    return f"it is truncated or corrupt ({type(e).__name__}: {first[:160]})"
