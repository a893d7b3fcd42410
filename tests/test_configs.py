"""Config composition: every group and option composes and resolves; bad keys and values fail
with messages that name what is wrong (before any model is loaded)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

import experiments.config  # noqa: F401  (registers the run schema and resolvers)
from experiments.config import ConfigError, build
from experiments.session import Session

CONF = Path(__file__).resolve().parent.parent / "conf"
RUN_GROUPS = ["denoiser", "ar", "judge", "strategy", "guide", "schedule", "data", "corpus",
              "oracle", "logger", "experiment", "method"]
REQUIRED = {
    "guide": {"none", "edlm", "dcd", "dcd_is", "speculative", "apd", "smc", "greedy"},
    "strategy": {"ancestral", "confidence", "margin", "entropy", "left_to_right", "remdm",
                 "blocks", "threshold"},
    "denoiser": {"tiny", "hmm", "sedd_small", "sedd_medium", "mdlm_owt"},
    "ar": {"tiny", "hmm", "gpt2"},
    "judge": {"tiny", "hmm", "gpt2", "gpt2_large"},
    "data": {"unconditional", "prefix", "infill", "chat"},
    "logger": {"jsonl", "wandb"},
    "experiment": {"hmm_oracle", "shakespeare_sweep", "owt_sedd_medium"},
    "method": {"none_ancestral", "edlm_ancestral", "dcd_left_to_right"},
}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_run(overrides=(), hydra_config=False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("run", overrides=list(overrides), return_hydra_config=hydra_config)


def test_required_option_names_exist():
    for group, names in REQUIRED.items():
        assert names <= set(options(group)), (group, names - set(options(group)))


def test_top_level_keys_and_defaults():
    cfg = compose_run()
    assert list(cfg.steps) == [2, 4, 8, 16, 32, 64, 128] and cfg.length == 128
    for key in ("num_samples", "batch_size", "seed"):
        assert isinstance(cfg[key], int)
    assert cfg.guide._target_.endswith("Independent")


@pytest.mark.parametrize("group,option", [(g, o) for g in RUN_GROUPS for o in options(g)])
def test_every_option_composes_and_resolves(group, option):
    extra = ["corpus.path=/tmp/x.txt"] if option == "text_file" else []
    cfg = compose_run([f"{group}={option}", *extra])
    data = OmegaConf.to_container(cfg, resolve=True)
    node = data.get(group)
    if group in ("experiment", "method"):
        return
    if option == "none" and group != "guide":
        assert node is None
    else:
        assert isinstance(node, dict) and "_target_" in node, node


@pytest.mark.parametrize("method,guide,strategy", [
    ("none_ancestral", "Independent", "Ancestral"), ("edlm_ancestral", "EnergyGuide", "Ancestral"),
    ("dcd_left_to_right", "CopulaGuide", "LeftToRight")])
def test_a_method_is_a_guide_with_its_strategy(method, guide, strategy):
    cfg = compose_run([f"method={method}"])
    assert cfg.guide._target_.endswith(guide) and cfg.strategy._target_.endswith(strategy)
    named = compose_run([f"method={method}", "strategy=margin", "steps=[3]"])
    assert named.strategy._target_.endswith("Confidence") and list(named.steps) == [3]


def test_a_presets_steps_win_over_a_methods():
    main = compose_run(["experiment=shakespeare_sweep", "method=dcd_left_to_right"])
    assert list(main.steps) == [2, 4, 8, 16] and main.num_samples == 128
    assert list(compose_run(["experiment=shakespeare_sweep", "method=none_ancestral"]).steps) \
        == [2, 4, 8, 16, 32, 64, 128]
    assert list(compose_run(["experiment=hmm_oracle", "method=edlm_ancestral"]).steps) \
        == [1, 2, 4, 8]
    assert list(compose_run(["experiment=shakespeare_sweep", "guide=edlm"]).steps) \
        == [2, 4, 8, 16, 32, 64, 128]


@pytest.mark.parametrize("launcher,target", [("local", "joblib"), ("slurm", "submitit"),
                                             ("joblib", "joblib"),
                                             ("submitit_slurm", "submitit")])
def test_launchers_compose(launcher, target):
    pytest.importorskip(f"hydra_plugins.hydra_{target}_launcher")  # the `launchers` extra
    cfg = compose_run([f"hydra/launcher={launcher}"], hydra_config=True)
    assert target in cfg.hydra.launcher._target_
    assert any(c._target_.endswith("SweepResults") for c in cfg.hydra.callbacks.values())


def test_slurm_launcher_settings_resolve():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = compose_run(["hydra/launcher=slurm", "hydra.launcher.partition=gpu"], True)
    assert cfg.hydra.launcher.partition == "gpu" and cfg.hydra.launcher.gpus_per_node == 1


def test_evaluate_config_composes():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("evaluate", overrides=["run_dir=/tmp/x", "judge=gpt2_large"])
    assert cfg.judge.name_or_path == "gpt2-large"


def test_oracle_experiment_shares_one_hmm():
    cfg = compose_run(["experiment=hmm_oracle"])
    s = Session(cfg)
    assert s.denoiser.hmm is s.ar.hmm is s.judge.hmm is s.oracle
    assert cfg.length == s.oracle.length


def test_unknown_top_level_key_is_refused():
    with pytest.raises(ConfigCompositionException):
        compose_run(["num_sampels=3"])
    cfg = compose_run(["experiment=hmm_oracle", "+num_sampels=3"])  # `+` forces a new key
    with pytest.raises(ConfigError, match="unknown top-level key 'num_sampels'.*num_samples"):
        Session(cfg)


def test_wrong_type_is_refused():
    with pytest.raises(ConfigCompositionException):
        compose_run(["steps=[2,x]"])


def test_unknown_option_lists_available():
    with pytest.raises(ConfigCompositionException, match="edlm"):
        compose_run(["guide=edlmm"])


def test_unknown_group_key_names_group_option_and_key():
    cfg = compose_run(["experiment=hmm_oracle", "guide=edlm", "+guide.num_candidate=3"])
    with pytest.raises(ConfigError, match=r"guide=edlm: unknown key 'num_candidate'.*"
                                          r"did you mean 'num_candidates'"):
        _ = Session(cfg, {"guide": "edlm"}).guide


@pytest.mark.parametrize("override,match", [
    ("steps=[0,2]", "steps"), ("steps=[]", "steps"), ("steps=[2,2]", "repeated"),
    ("num_samples=0", "num_samples"), ("batch_size=-1", "batch_size"),
    ("top_p=1.5", "top_p"), ("temperature=0", "temperature"),
])
def test_bad_values_fail_before_models(override, match):
    cfg = compose_run(["experiment=hmm_oracle", override])
    with pytest.raises(ConfigError, match=match):
        Session(cfg)


def test_bad_constructor_value_names_the_option():
    cfg = compose_run(["experiment=hmm_oracle", "guide=edlm", "guide.num_candidates=0"])
    with pytest.raises(ConfigError, match="guide=edlm: ValueError: num_candidates"):
        _ = Session(cfg, {"guide": "edlm"}).guide


def test_steps_checked_against_strategy():
    cfg = compose_run(["experiment=hmm_oracle", "strategy=blocks", "strategy.block_length=2",
                       "steps=[1,4]"])
    with pytest.raises(ConfigError, match="steps=1 with strategy=blocks"):
        Session(cfg, {"strategy": "blocks"}).check_steps()


def test_mauve_missing_is_explained(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_mauve(name, *args, **kwargs):
        if name == "mauve":
            raise ImportError("no mauve")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mauve)
    cfg = compose_run(["experiment=hmm_oracle", "mauve=true"])
    with pytest.raises(ConfigError, match="pip install mauve-text"):
        Session(cfg)


def test_guide_without_ar_is_explained():
    cfg = compose_run(["experiment=hmm_oracle", "guide=dcd", "ar=none"])
    with pytest.raises(ConfigError, match="guide=dcd needs an AR model"):
        _ = Session(cfg, {"guide": "dcd"}).guide


def test_missing_target_key_and_bad_target():
    with pytest.raises(ConfigError, match="missing required key 'block_length'"):
        build(OmegaConf.create({"_target_": "decoding.strategies.blocks.Blocks"}), "strategy")
    with pytest.raises(ConfigError, match="cannot import"):
        build(OmegaConf.create({"_target_": "nowhere.Thing"}), "guide", {"guide": "x"})


# Guides that commit left to right, and SMC (values-independent choices, no remasking).
REFUSED = ({(g, s) for g in ("speculative", "apd") for s in options("strategy")
            if s != "left_to_right"}
           | {("smc", s) for s in ("confidence", "entropy", "margin", "remdm", "threshold")})


@pytest.mark.parametrize("strategy", options("strategy"))
@pytest.mark.parametrize("guide", options("guide"))
def test_every_strategy_and_guide_generate_on_the_oracle(strategy, guide):
    cfg = compose_run(["experiment=hmm_oracle", f"strategy={strategy}", f"guide={guide}",
                       "strategy.block_length=3" if strategy == "blocks" else "seed=0",
                       "steps=[2,4]"])
    s = Session(cfg, {"strategy": strategy, "guide": guide})
    s.check_steps()
    if (guide, strategy) in REFUSED:  # refused when the Coordinator is built, before any call
        with pytest.raises(ConfigError, match=f"strategy={strategy}, guide={guide} with "
                                              ".*(left_to_right|ancestral)"):
            _ = s.coordinator
        return
    gen = torch.Generator().manual_seed(0)
    out = s.coordinator.generate(4, cfg.length, 4, generator=gen)
    assert out.tokens.shape == (4, cfg.length) and (out.tokens < s.denoiser.vocab_size).all()


@pytest.mark.parametrize("data", options("data"))
def test_every_task_builds_prompts(data):
    overrides = ["experiment=hmm_oracle", f"data={data}", "num_samples=5"]
    if data == "chat":  # needs a tokenizer: the tiny models, a raw-text prompt
        overrides = ["data=chat", "data.chat_template=false", "data.prompt_text=ROMEO.",
                     "length=16", "num_samples=5", "reference_samples=0", "threads=1"]
    cfg = compose_run(overrides)
    s = Session(cfg, {"data": data})
    prompts = s.prompts
    if data == "unconditional":
        assert prompts is None
        return
    assert prompts.shape == (5, cfg.length)
    given = prompts != s.mask_id
    assert given.any() and not given.all()
    out = s.coordinator.generate(5, cfg.length, 2, prompt=prompts,
                                 generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.tokens[given], prompts[given])


def test_dtype_reaches_every_model_group():
    cfg = compose_run(["dtype=bfloat16"])
    den = build(cfg.denoiser, "denoiser")
    ar, judge = build(cfg.ar, "ar"), build(cfg.judge, "judge")
    assert den.backbone.output_layer.linear.weight.dtype == torch.bfloat16
    for model in (ar, judge):
        assert next(model.parameters()).dtype == torch.bfloat16
    assert ar.cache_kind == "dynamic" and not ar.compile_step
    for group in ("denoiser", "ar", "judge"):
        for option in options(group):
            node = compose_run([f"{group}={option}", "dtype=float16"])[group]
            if node is not None and str(node._target_).startswith("models.load_"):
                assert node.dtype == "float16", (group, option)
    with pytest.raises(ConfigError, match="dtype must be one of"):
        experiments.config.validate(compose_run(["dtype=float64"]))


def test_run_checks_the_ar_speaks_the_denoisers_tokens():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same tokenizer: nothing to warn about
        s = Session(compose_run(["guide=dcd", "steps=[2]"]), {"ar": "tiny", "denoiser": "tiny"})
        assert s.ar.vocab_size == s.denoiser.vocab_size
    s = Session(compose_run(["guide=dcd", "steps=[2]", "ar=hmm"]),
                {"ar": "hmm", "denoiser": "tiny"})
    with pytest.raises(ConfigError, match="ar=hmm with denoiser=tiny: vocabulary sizes differ"):
        _ = s.ar


@pytest.mark.parametrize("guide", ["speculative", "apd"])
def test_a_guide_that_commits_left_to_right_brings_its_strategy(guide):
    """``guide=speculative`` runs as typed; a strategy named explicitly still meets the
    guide's refusal (the guide's defaults never override the command line)."""
    cfg = compose_run(["experiment=hmm_oracle", f"guide={guide}", "steps=[2]"],
                      hydra_config=True)
    choices = dict(cfg.hydra.runtime.choices)
    assert choices["strategy"] == "left_to_right"
    assert cfg.strategy._target_.endswith("LeftToRight") and "defaults" not in cfg.guide
    out = Session(cfg, choices).coordinator.generate(
        2, cfg.length, 2, generator=torch.Generator().manual_seed(0))
    assert out.tokens.shape == (2, cfg.length)
    for strategy in ("ancestral", "blocks"):
        cfg = compose_run(["experiment=hmm_oracle", f"guide={guide}", f"strategy={strategy}",
                           "steps=[2]", "strategy.block_length=3" if strategy == "blocks"
                           else "seed=0"], hydra_config=True)
        choices = dict(cfg.hydra.runtime.choices)
        assert choices["strategy"] == strategy
        with pytest.raises(ConfigError, match=f"strategy={strategy}, guide={guide} .*needs "
                                              "strategy=left_to_right"):
            _ = Session(cfg, choices).coordinator
    # A sweep over guides gives each its own strategy; a named one applies to all.
    for other in ("none", "edlm"):
        assert compose_run([f"guide={other}"]).strategy._target_.endswith("Ancestral")
