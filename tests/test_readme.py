"""The README's Python examples run as written."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(code):
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - the README's own code


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


def test_training_step_example_learns():
    namespace = {}
    exec(compile(BLOCKS[1], str(README), "exec"), namespace)
    # 5 balanced random classes: chance level is ln 5 = 1.609; 100 steps on 256 samples fit some noise.
    assert namespace["loss"] < 1.5
