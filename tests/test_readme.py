"""The README's Python examples run as written, each on its own."""

import re
from pathlib import Path

import pytest

BLOCKS = re.findall(r"```python\n(.*?)```",
                    (Path(__file__).resolve().parents[1] / "README.md").read_text(), re.S)


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs_alone(index, capsys):
    exec(compile(BLOCKS[index], f"README.md python block {index + 1}", "exec"), {})
    out = capsys.readouterr().out
    assert out.strip()
    if "TV to the truth" in BLOCKS[index]:
        tv = float(out.split("TV to the truth:")[1].split()[0])
        assert tv < 0.1  # EDLM with K=64 at one step sits at the noise floor (0.065-0.079)
    if "CopulaISGuide" in BLOCKS[index]:
        assert "CopulaISGuide" in out
