"""The Examples sections of the docstrings run and print what they show.

``--doctest-modules`` only collects the files under ``tests/`` (testpaths), so the package's
own docstrings are collected here: one test per docstring that has examples, compared with
NORMALIZE_WHITESPACE and ELLIPSIS (pyproject.toml's NUMBER is pytest's own flag; none of the
examples needs it)."""

import doctest
import importlib

import pytest

MODULES = [
    "fastsoftmax",
    "fastsoftmax.activations",
    "fastsoftmax.losses",
    "fastsoftmax.optim",
    "fastsoftmax.reference",
    "fastsoftmax.reference.activations",
    "fastsoftmax.reference.losses",
    "fastsoftmax.reference.optim",
    "fastsoftmax._memory_floor",
]
FLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


def _examples():
    finder = doctest.DocTestFinder(exclude_empty=True)
    out = []
    for name in MODULES:
        module = importlib.import_module(name)
        for test in finder.find(module, name):
            # not objects re-exported from another module, nor the copies Cython puts in __test__
            if test.examples and test.name.startswith(name) and ".__test__." not in test.name:
                out.append(pytest.param(test, id=test.name))
    return out


EXAMPLES = _examples()


def test_every_public_function_has_examples():
    names = {p.id for p in EXAMPLES}
    for fn in ("softmax", "log_softmax", "logsumexp", "softmax_backward", "log_softmax_backward"):
        assert f"fastsoftmax.activations.{fn}" in names
    assert "fastsoftmax.losses.cross_entropy_with_grad" in names
    assert "fastsoftmax._memory_floor.stream_copy" in names


@pytest.mark.parametrize("test", EXAMPLES)
def test_docstring_examples(test):
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    test.globs = dict(test.globs)
    result = runner.run(test, out=lambda text: print(text, end=""))
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {test.name} failed (output above)"
