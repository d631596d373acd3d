"""Config options checked before anything is built, each problem reported as one line that names
the full key and the fix.

Two places let a wrong option through silently or with a traceback, so both are checked here:

* **the command line**: Hydra refuses ``arch.num_expert=4`` (no such key) or ``arch=mmo`` (no such
  file) with a multi-line message that does not say what was meant. :func:`check_command_line`
  composes the config once before the run (the first value of each sweep) and turns those errors
  into one line with the closest valid key or option.
* **the composed config**: a key added with ``+`` (or written in a user's config file) reaches the
  constructor, where it is an unexpected keyword (a traceback) or, behind ``**kwargs``, ignored.
  :func:`check_config` compares every ``_target_`` node with its target's parameters, and checks
  the values a run cannot mean: sizes (experts, units, dimensions, batch sizes, epochs) that are
  not positive, and learning rates that are not above 0.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

# groups whose nodes are constructor calls (``_target_``) checked against the target's parameters
TARGET_GROUPS = ("arch", "weighting", "optimizer", "trainer", "backbone", "encoder", "logger", "adapt")
# a key is a size when its name says so; each must be a positive integer (a list: each element)
SIZE_SUFFIXES = ("_units", "_experts", "_dim", "batch_size", "_levels", "_layers", "_size")
SIZE_PREFIXES = ("num_",)
SIZE_KEYS = ("max_epochs",)
NOT_SIZES = ("num_workers", "num_sanity_val_steps")  # counts where 0 is meaningful
RATE_KEYS = ("lr",)  # learning rates: above 0 (null = inherit, where the target allows it)


class OptionError(ValueError):
    """A config option that cannot be meant; the message is the one line the user sees."""


def closest(word: str, options: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the nearest option, or nothing when none is near."""
    match = difflib.get_close_matches(word, sorted(options), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def accepted_options(target: Any) -> set[str] | None:
    """The keyword arguments ``target`` accepts; ``None`` when it takes any. A class whose
    ``__init__`` forwards ``**kwargs`` accepts its parents' parameters too (CGC passes its options
    on to PLE)."""
    if not inspect.isclass(target):
        parameters = inspect.signature(target).parameters.values()
        if any(p.kind == p.VAR_KEYWORD for p in parameters):
            return None
        return {p.name for p in parameters if p.kind != p.VAR_POSITIONAL}
    names: set[str] = set()
    for cls in target.__mro__:
        if "__init__" not in vars(cls) or cls is object:
            continue
        parameters = list(inspect.signature(vars(cls)["__init__"]).parameters.values())[1:]
        names |= {p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            return names
    return None


def check_target(node: Mapping[str, Any], key: str) -> None:
    """Every key of a ``_target_`` node (and of the nodes inside it) is a parameter of its target."""
    target_path = node.get("_target_")
    if target_path is None:
        return
    try:
        target = get_object(target_path)
    except Exception:  # Hydra reports a target that does not import, naming it, when it builds it
        return
    accepted = accepted_options(target)
    given = [k for k in node if not str(k).startswith("_")]
    if accepted is not None:
        for name in given:
            if name not in accepted:
                label = target_path.rsplit(".", 1)[-1]
                raise OptionError(
                    f"{key}.{name}: {label} has no option {name!r}{closest(name, accepted)}; its options are "
                    f"{', '.join(sorted(accepted))}"
                )
    for name in given:
        if isinstance(node[name], Mapping):
            check_target(node[name], f"{key}.{name}")


def _is_size(name: str) -> bool:
    if name in NOT_SIZES:
        return False
    return name in SIZE_KEYS or name.startswith(SIZE_PREFIXES) or name.endswith(SIZE_SUFFIXES)


def _check_rate(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise OptionError(f"{key}={value}: a learning rate must be a number above 0, e.g. {key}=0.001")


def check_values(node: Any, key: str) -> None:
    """Sizes positive integers, learning rates above 0, anywhere under ``node``."""
    if isinstance(node, Mapping):
        for name, value in node.items():
            name = str(name)
            full = f"{key}.{name}" if key else name
            if _is_size(name) and value is not None:
                values = value if isinstance(value, Sequence) and not isinstance(value, str) else [value]
                bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or v < 1]
                if name == "max_epochs" and values == [-1]:
                    bad = []  # Lightning's "until early stopping says so"
                if bad:
                    raise OptionError(f"{full}={value}: a size must be a positive whole number (>= 1)"
                                      + (" or -1 (no limit)" if name == "max_epochs" else ""))
            elif name in RATE_KEYS and isinstance(value, Mapping):  # one per part (finetune.lr)
                for part, rate in value.items():
                    _check_rate(f"{full}.{part}", rate)
            elif name in RATE_KEYS and value is not None:
                _check_rate(full, value)
            else:
                check_values(value, full)
    elif isinstance(node, Sequence) and not isinstance(node, str):
        for i, value in enumerate(node):
            check_values(value, f"{key}[{i}]")


def check_config(cfg: DictConfig) -> None:
    """The composed run config (see the module); raises :class:`OptionError` on the first problem."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for group in TARGET_GROUPS:
        node = resolved.get(group)
        if isinstance(node, Mapping):
            check_target(node, group)
    for name, node in (resolved.get("callbacks") or {}).items():
        if isinstance(node, Mapping):
            check_target(node, f"callbacks.{name}")
    for group in ("arch", "weighting", "optimizer", "trainer", "backbone", "encoder", "data", "finetune", "adapt"):
        check_values(resolved.get(group), group)


# -- the command line ---------------------------------------------------------------------------
def first_of_each_sweep(overrides: Sequence[str]) -> list[str]:
    """The overrides of a sweep's first job (choices and ranges: their first value); a sweep over
    an interval (Optuna's) is left to the sweeper."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    first = []
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if not override.is_sweep_override():
            first.append(override.input_line)
            continue
        try:
            value = next(override.sweep_string_iterator())
        except Exception:  # an interval: no first value
            continue
        first.append(f"{override.get_key_element()}={value}")
    return first


def check_command_line(argv: Sequence[str], config_dir: str, config_name: str = "config") -> None:
    """Compose the config the command line asks for, as Hydra will; its composition errors come out
    as one :class:`OptionError` line naming the key or option, the closest valid one and the list."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.utils import get_args_parser
    from hydra.errors import ConfigCompositionException, MissingConfigException

    args, _ = get_args_parser().parse_known_args(list(argv))
    if args.help or args.hydra_help or args.info or args.cfg or args.shell_completion or args.config_path:
        return
    overrides = first_of_each_sweep(args.overrides)
    if args.config_dir:
        overrides.append(f"hydra.searchpath=[file://{args.config_dir}]")
    try:
        with initialize_config_dir(config_dir, version_base="1.3", job_name="check"):
            cfg = compose(args.config_name or config_name, overrides=overrides, return_hydra_config=True)
    except MissingConfigException as err:
        raise OptionError(_missing_option(err, overrides)) from None
    except ConfigCompositionException as err:
        raise OptionError(_unknown_key(err, overrides, config_dir, args.config_name or config_name)) from None
    multirun = args.multirun or str(OmegaConf.select(cfg, "hydra.mode", default="")).endswith("MULTIRUN")
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    try:
        folder = OmegaConf.select(cfg, key)
    except Exception:  # an interpolation only a running Hydra resolves: Hydra checks it itself
        return
    check_output_folder(str(folder), key)


def check_output_folder(folder: str, key: str) -> None:
    """The run folder can be created and written: its nearest existing parent is a folder we may write."""
    import os
    from pathlib import Path

    path = Path(folder).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise OptionError(f"{key}={folder}: {existing} is not a folder, so the run folder cannot be made there; "
                          f"choose another {key}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OptionError(f"{key}={folder}: {existing} is not writable; choose another {key} or fix its permissions")


def _missing_option(err: Exception, overrides: list[str]) -> str:
    options = list(getattr(err, "options", None) or [])
    missing = str(getattr(err, "missing_cfg_file", "") or "")
    group, _, name = missing.rpartition("/")
    if not group or not options:
        return " ".join(str(err).split())
    return (f"{group}={name}: no such {group} config{closest(name, options)}; the options are {', '.join(options)} "
            f"(or a file of your own in <dir>/{group}/ with --config-dir <dir>)")


def _unknown_key(err: Exception, overrides: list[str], config_dir: str, config_name: str) -> str:
    """``Could not override 'a.b'`` (a key that is not in the config): name the closest key of its
    parent node, found by composing the config without that override."""
    from hydra import compose, initialize_config_dir

    text = str(err)
    start = text.find("Could not override '")
    if start < 0:
        return " ".join(text.split())
    overridden = text[start + len("Could not override '"):].split("'", 1)[0]
    key, parent, leaf = overridden, *overridden.rpartition(".")[::2]
    cause = err.__cause__  # OmegaConf's error names the missing key inside a merged value
    full, missing = getattr(cause, "full_key", None), getattr(cause, "key", None)
    if full and missing is not None and str(full).endswith(str(missing)) and str(full) != overridden:
        key, leaf = str(full), str(missing)
        parent = key[: -len(leaf)].rstrip(".")
    rest = [o for o in overrides if not o.split("=", 1)[0].lstrip("+~") == overridden]
    try:
        with initialize_config_dir(config_dir, version_base="1.3", job_name="check"):
            cfg = compose(config_name, overrides=rest, return_hydra_config=parent.startswith("hydra"))
        node = OmegaConf.select(cfg, parent) if parent else cfg
        options = [str(k) for k in node.keys() if not str(k).startswith("_")] if isinstance(node, DictConfig) else []
    except Exception:
        options = []
    listed = f"; the keys of {parent or 'the config'} are {', '.join(options)}" if options else ""
    value = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == overridden), "...")
    return (f"{key}: no such key{closest(leaf, options)}{listed}; to add a key on purpose, write "
            f"+{overridden}={value}")
