"""Reliability and security (issue 12): loaders run no code from files, one trainer per run
directory, checkpoint digests, checkpoint-vs-config checks, shape/value checks, seeded init,
dedicated errors for divergence and unwritable/full disks."""
import errno
import os
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from score_sde.safe_pickle import WeightsFileError


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bad_weight_files(tmp_path):
    """(text file, training checkpoint, code-carrying file, marker the last would create)."""
    from score_sde.training.checkpoint import save_checkpoint
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    ckpt = save_checkpoint(tmp_path / "checkpoint_00000001.pt", model=nn.Linear(2, 2), step=1)
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": _Evil(marker)}}, evil)
    return text, ckpt, evil, marker


def _assert_one_sentence(excinfo, path):
    msg = str(excinfo.value)
    assert str(path) in msg and "\n" not in msg and "expected" in msg
    assert excinfo.value.__cause__ is None and excinfo.value.__context__ is None  # no torch traceback chained


def test_inception_loader_refuses_text_checkpoint_and_code(tmp_path):
    from score_sde.evaluation import load_inception
    text, ckpt, evil, marker = _bad_weight_files(tmp_path)
    for p, why in ((text, "text file"), (ckpt, "training checkpoint"), (evil, "pickled code")):
        with pytest.raises(WeightsFileError, match=why) as e:
            load_inception(p)
        _assert_one_sentence(e, p)
    assert not marker.exists()


def test_digits_classifier_loader_refuses_text_checkpoint_and_code(tmp_path):
    from score_sde.evaluation.digits_features import load_digits_classifier
    text, ckpt, evil, marker = _bad_weight_files(tmp_path)
    for p, why in ((text, "text file"), (ckpt, "training checkpoint"), (evil, "pickled code")):
        with pytest.raises(WeightsFileError, match=why) as e:
            load_digits_classifier(p)
        _assert_one_sentence(e, p)
    assert not marker.exists()


def test_reference_converter_refuses_text_and_code(tmp_path):
    from score_sde.models.convert import load_reference_checkpoint
    text, _, evil, marker = _bad_weight_files(tmp_path)
    for p, why in ((text, "text file"), (evil, "pickled code")):
        with pytest.raises(ValueError, match=why) as e:
            load_reference_checkpoint(p, "ddpmpp_cifar10")
        _assert_one_sentence(e, p)
    assert not marker.exists()
