"""Every tsfnet exception survives pickling: errors raised in worker processes reach the
parent that way, and one that cannot be unpickled breaks the whole process pool."""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil

import pytest

import tsfnet
from tsfnet.errors import InputError, TrainingInterrupted, TsfnetError
from tsfnet.parallel import parallel_map


def tsfnet_exception_classes() -> list[type[BaseException]]:
    found = set()
    for module_info in pkgutil.walk_packages(tsfnet.__path__, "tsfnet."):
        if module_info.name.endswith("__main__"):
            continue
        module = importlib.import_module(module_info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__.startswith("tsfnet"):
                found.add(obj)
    return sorted(found, key=lambda c: c.__qualname__)


def example(cls: type[BaseException]) -> BaseException:
    """An instance built from the constructor's required parameters, each given a string."""
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = [p for p in parameters if p.default is p.empty and p.kind in positional]
    return cls(*[f"{p.name}-value" for p in required])


def test_every_exception_class_round_trips_through_pickle():
    classes = tsfnet_exception_classes()
    assert {TsfnetError, InputError, TrainingInterrupted} <= set(classes)
    for cls in classes:
        error = example(cls)
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is cls and str(copy) == str(error), cls
        assert vars(copy) == vars(error), cls


def test_interrupted_training_exits_with_the_signal_convention():
    import signal

    assert TrainingInterrupted("x", signal.SIGINT).exit_code == 130
    assert TrainingInterrupted("x", signal.SIGTERM).exit_code == 143
    assert pickle.loads(pickle.dumps(TrainingInterrupted("x", signal.SIGTERM))).exit_code == 143


def raise_input_error(item: int) -> int:
    if item == 2:
        raise InputError(f"/data/case_{item}.nii.gz", "volume is all zeros")
    return item


class Unpicklable(Exception):
    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a} and {b}")


def raise_unpicklable(item: int) -> int:
    raise Unpicklable("first", "second")


def test_worker_errors_reach_the_parent_whole():
    with pytest.raises(InputError) as raised:
        parallel_map(raise_input_error, [0, 1, 2, 3], "test", workers=2, progress=False)
    assert str(raised.value) == "/data/case_2.nii.gz: volume is all zeros"


def test_an_unpicklable_worker_error_does_not_break_the_pool():
    with pytest.raises(RuntimeError, match=r"^Unpicklable: first and second$"):
        parallel_map(raise_unpicklable, [0, 1], "test", workers=2, progress=False)
