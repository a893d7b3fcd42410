"""The layers import one way: entry points never import the commands, training never imports
experiments, and the engine never imports a concrete model."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at top level or inside functions (relative ones resolved)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            name = ".".join(p for p in (base, node.module or "") if p)
            out.add(name)
            out |= {f"{name}.{a.name}" for a in node.names}
    return out


def _graph(package: str) -> dict[str, set[str]]:
    files = {".".join(p.relative_to(ROOT).with_suffix("").parts): p
             for p in (ROOT / package).rglob("*.py")}
    files = {k.removesuffix(".__init__"): v for k, v in files.items()}
    return {mod: {m for m in _imports(path) if m in files and m != mod}
            for mod, path in files.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt]
            if nxt not in state and (found := visit(nxt, trail + [nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_experiments_has_no_import_cycle():
    assert _cycle(_graph("experiments")) is None, _cycle(_graph("experiments"))


def test_models_has_no_import_cycle():
    assert _cycle(_graph("models")) is None, _cycle(_graph("models"))


def test_nothing_imports_the_commands():
    for path in ROOT.glob("*/**/*.py"):
        if ".venv" in path.parts or path.name == "test_imports.py":
            continue
        assert "experiments.commands" not in _imports(path), path


def test_lower_layers_never_import_upper_ones():
    banned = {"training": ("experiments",), "decoding": ("models", "copula", "edlm",
              "experiments", "training"), "models": ("experiments", "training", "copula", "edlm")}
    for package, upper in banned.items():
        for path in (ROOT / package).rglob("*.py"):
            bad = [m for m in _imports(path) if m.split(".")[0] in upper]
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_importing_training_loads_no_entry_point():
    code = ("import sys, training, training.loop, training.recipes, training.losses; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'experiments'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
