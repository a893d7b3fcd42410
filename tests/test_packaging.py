"""Installation concerns: where the configs are found, what the wheel ships, the command-line
help, user config directories, and clear messages for shadowed packages and missing extras."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import launchers, paths

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _setup_value(name: str):
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == name:
            return ast.literal_eval(node.value)
    raise KeyError(name)


def test_checkout_uses_the_repository_conf():
    assert Path(paths.CONF_DIR) == ROOT / "conf"


def test_every_top_level_package_ships():
    found = {p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name != "tests"}
    assert found <= set(_setup_value("TOP_LEVEL")), found - set(_setup_value("TOP_LEVEL"))


def test_help_lists_groups_options_and_keys(tmp_path):
    out = subprocess.run([sys.executable, "-m", "experiments.run", "--help"], cwd=tmp_path,
                         env=ENV, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "duet-run" in out.stdout
    for group in ("denoiser", "ar", "judge", "strategy", "guide", "schedule", "data"):
        options = sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))
        assert f"{group}: {', '.join(options)}" in out.stdout
    assert "num_samples=16" in out.stdout and "--config-dir" in out.stdout
    assert "strategy.mode=posterior" in out.stdout and "duet-run guide=" in out.stdout


def test_user_config_dir_adds_an_option(tmp_path):
    """A guide of one's own, in a folder outside the project, picked like a built-in one."""
    (tmp_path / "mine" / "guide").mkdir(parents=True)
    (tmp_path / "mine" / "guide" / "edlm16.yaml").write_text(
        "defaults:\n  - edlm\n  - _self_\nnum_candidates: 16\n")
    out = subprocess.run(
        [sys.executable, "-m", "experiments.run", "--config-dir", str(tmp_path / "mine"),
         "guide=edlm16", "--cfg", "job", "--package", "guide"],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "EnergyGuide" in out.stdout and "num_candidates: 16" in out.stdout


def test_a_shadowing_package_is_named(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("")
    out = subprocess.run([sys.executable, "-c", "import experiments"], cwd=tmp_path, env=ENV,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "'models' is imported from" in out.stderr and "shadows it" in out.stderr


def test_missing_launcher_plugin_says_what_to_install(tmp_path, monkeypatch):
    """A config that picks a launcher whose plugin (and so its config) is absent."""
    conf = tmp_path / "conf"
    (conf / "hydra" / "launcher").mkdir(parents=True)
    (conf / "hydra" / "launcher" / "far.yaml").write_text("defaults:\n  - faraway\n")
    (conf / "run.yaml").write_text("defaults:\n  - _self_\nsteps: 1\n")
    monkeypatch.setattr(launchers, "CONF_DIR", str(conf))
    far = {"faraway": ("hydra_plugins.faraway", "far-launcher")}
    monkeypatch.setattr(launchers, "LAUNCHERS", far)
    launchers.check_launchers("run", ["steps=2"])  # the default launcher needs nothing
    with pytest.raises(SystemExit, match=r"needs far-launcher: pip install \"duet-dlm\[launchers"):
        launchers.check_launchers("run", ["-m", "hydra/launcher=far", "steps=1,2"])
    mine = tmp_path / "mine" / "experiment"  # a preset of one's own that picks it
    mine.mkdir(parents=True)
    (mine / "far.yaml").write_text("# @package _global_\ndefaults:\n"
                                   "  - override /hydra/launcher: far\n")
    with pytest.raises(SystemExit, match="needs far-launcher"):
        launchers.check_launchers("run", ["-m", "--config-dir", str(mine.parent),
                                          "+experiment=far"])


def test_missing_wandb_says_what_to_install(monkeypatch):
    from experiments.loggers import WandbLogger

    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ImportError, match=r"pip install \"duet-dlm\[wandb\]\""):
        WandbLogger()
