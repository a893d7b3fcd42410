"""The README's Python example and those of docs/engine.md run as written, each on its own."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("README.md", "docs/engine.md")
BLOCKS = [(page, block) for page in PAGES
          for block in re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(), re.S)]


def test_pages_have_python_blocks():
    assert {page for page, _ in BLOCKS} == set(PAGES)
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_python_block_runs_alone(index, capsys):
    page, block = BLOCKS[index]
    exec(compile(block, f"{page} python block {index + 1}", "exec"), {})
    out = capsys.readouterr().out
    assert out.strip()
    if "TV to the truth" in block:
        tv = float(out.split("TV to the truth:")[1].split()[0])
        assert tv < 0.1  # EDLM with K=64 at one step sits at the noise floor (0.065-0.079)
    if "CopulaISGuide" in block:
        assert "CopulaISGuide" in out
