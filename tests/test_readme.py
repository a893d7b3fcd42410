"""The README's Python examples run as written."""

import re
from pathlib import Path


def test_readme_python_blocks_run(capsys):
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    exec(compile("\n".join(blocks), "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "TV to the truth" in out and "CopulaISGuide" in out
