"""The body of ``--help`` (``conf/hydra/help/duet.yaml``): each group, its options, and the
chosen option's keys under it; then the other keys.

The help template calls the ``duet.help`` resolver, which reads the composed config (the
``_root_`` of the template) and Hydra's choices. Under each group it shows the option that
the command line picks and that option's keys as ``group.key=value`` (what one types to change
them), so a key is never read as another group's. Another option's keys show when it is named
(``duet-run guide=edlm --help``). Values are as written in the configs (interpolations kept);
``--resolve`` resolves them. Nothing is built or imported beyond Hydra and OmegaConf.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from experiments.paths import CONF_DIR

SPECIAL_KEYS = ("_target_", "_partial_")


def _text(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _value(node, key, resolve: bool) -> object:
    """A child of ``node``: its value as written (or resolved), lists and dicts kept as nodes."""
    child = node._get_node(key)
    if isinstance(child, (DictConfig, ListConfig)) and not child._is_none() \
            and not child._is_interpolation():
        return child
    if resolve:
        try:
            return node[key]
        except Exception:  # a value that resolves only inside a job (${hydra:runtime...})
            pass
    return child._value()


def _flat(node, prefix: str, resolve: bool, skip=()) -> list[str]:
    """``prefix.key=value`` lines for every leaf of ``node`` but ``skip`` (lists inline)."""
    out = []
    for key in [k for k in node if k not in skip]:
        value = _value(node, key, resolve)
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, DictConfig):
            out += _flat(value, name, resolve) or [f"{name}={{}}"]
        elif isinstance(value, ListConfig):
            items = [_text(_value(value, i, resolve)) for i in range(len(value))]
            out.append(f"{name}=[{', '.join(items)}]")
        else:
            out.append(f"{name}={_text(value)}")
    return out


def _options(group: str) -> list[str]:
    """The options of ``group`` on Hydra's search path (configs of one's own included)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.object_type import ObjectType

    gh = GlobalHydra.instance()
    if gh.is_initialized():
        return sorted(gh.config_loader().get_group_options(group, ObjectType.CONFIG))
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def _example(app: str, group: str, choice) -> str:
    """``duet-run guide=apd --help``: the command that shows another option's keys."""
    others = [o for o in _options(group) if o != choice]
    return f"{app} {group}={others[0]} --help" if others else f"{app} --help"


def _group_lines(cfg: DictConfig, group: str, choice, app: str, resolve: bool) -> list[str]:
    lines = [f"{group}: {', '.join(_options(group))}"]
    chosen = f"{group}={_text(choice)}"
    node = cfg._get_node(group) if group in cfg.keys() else None
    if node is None:  # a preset (@package _global_): it sets other groups and keys
        lines.append(f"  {chosen}: " + (f"none chosen; to see one: {_example(app, group, choice)}"
                                         if choice is None else "its values are shown above"))
        return lines
    if not isinstance(node, DictConfig) or node._is_none():
        lines.append(f"  {chosen}: no {group}")
        return lines
    target = node.get("_target_") if "_target_" in node else None
    keys = [k for k in node if k not in SPECIAL_KEYS]
    head = f"  {chosen}" + (f" ({target})" if target else "")
    if not keys:
        lines.append(f"{head}: no keys; another option's: {_example(app, group, choice)}")
        return lines
    lines.append(f"{head}:")
    lines += [f"    {line}" for line in _flat(node, group, resolve, SPECIAL_KEYS)]
    return lines


def render(root: DictConfig, resolve: bool | None = None) -> str:
    """The help's groups and keys for the composed config ``root`` (with its ``hydra`` node)."""
    resolve = "--resolve" in sys.argv if resolve is None else resolve
    choices = dict(root.hydra.runtime.choices)
    app = str(root.hydra.help.app_name)
    groups = [g for g in choices if not g.startswith("hydra")]
    order = {key: i for i, key in enumerate(root)}
    groups.sort(key=lambda g: (order.get(g, len(order)), g))
    first = "guide" if "guide" in groups else (groups[0] if groups else None)
    example = _example(app, first, choices[first]) if first else f"{app} --help"
    out = ["== Configuration groups ==",
           "Pick one option per group (group=option). Under each group: the option chosen now",
           "and its keys, each set as group.key=value. To see another option's keys, name it",
           f"with --help, e.g. {example}", ""]
    for group in groups:
        out += _group_lines(root, group, choices[group], app, resolve)
    out += ["", "== Other keys ==", "Every other key and its default (key=value)", ""]
    out += _flat(root, "", resolve, skip={"hydra", *groups})
    return "\n".join(out)


def _resolver(*, _root_) -> str:
    # The template is a string.Template after this: a literal $ must be written $$.
    return render(_root_).replace("$", "$$")


if not OmegaConf.has_resolver("duet.help"):
    OmegaConf.register_new_resolver("duet.help", _resolver)
