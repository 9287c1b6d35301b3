"""Typed configuration: dataclasses loaded from YAML, with ``--set a.b=value`` overrides.

Every section is a dataclass whose defaults are the paper's / release's values, defined
next to the code that uses it (``ViewConfig`` in :mod:`pcm3.augment`, ``MaskConfig`` in
:mod:`pcm3.masking`, ``ModelConfig``/``LossConfig`` in :mod:`pcm3.models`). Unknown keys,
wrong types and unparsable values raise :class:`pcm3.errors.ConfigError` naming the file
and the key. The resolved config is saved into every run folder (``config.yaml``).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union, Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import yaml

from pcm3.args import MAX_SEED
from pcm3.augment import ViewConfig
from pcm3.errors import ConfigError
from pcm3.masking import MaskConfig
from pcm3.models import LossConfig, ModelConfig


@dataclass
class DataConfig:
    """What to train on.

    Attributes:
        path: prepared data folder (``pcm3 prepare``); usually given by ``--data``.
        benchmark: split to pretrain on (``xsub``, ``xview``, ``xset``...); None = all samples.
        part: which part of the benchmark (pretraining uses ``train``).
        stream: ``joint``, ``bone`` or ``motion`` (computed on the batch after augmentation).
        num_workers: DataLoader worker processes.
    """

    path: str = ""
    benchmark: Optional[str] = "xsub"
    part: str = "train"
    stream: str = "joint"
    num_workers: int = 2

    def __post_init__(self):
        from pcm3.skeleton import STREAMS

        if self.stream not in STREAMS:
            raise ConfigError(f"data.stream: unknown stream {self.stream!r}; choose one of {', '.join(STREAMS)}")
        if not self.part:
            raise ConfigError("data.part: empty (train or test)")
        _at_least("data.num_workers", self.num_workers, 0)
        _at_most("data.num_workers", self.num_workers, MAX_PROCESSES)


@dataclass
class OptimConfig:
    """SGD with the paper's schedule: lr 0.02, x0.1 at epoch 350 (of 450); cosine optional.

    ``name``: ``sgd`` (the paper; ``momentum`` is SGD's) or ``adamw`` (not in the paper;
    ``weight_decay`` decoupled, betas (0.9, 0.999), ``momentum`` unused).
    ``clip_grad_norm``: not in the paper (0 = off): the global gradient norm is clipped to
    this value before each step (the masked branch's GRU decoder can blow up at high lr).
    """

    name: str = "sgd"
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "step"  # "step" (milestones x gamma) or "cosine"
    milestones: List[int] = field(default_factory=lambda: [350])
    gamma: float = 0.1
    warmup_epochs: int = 0
    clip_grad_norm: float = 0.0

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise ConfigError(f"optim.name: unknown optimizer {self.name!r}; choose one of {', '.join(OPTIMIZERS)}")
        _at_least("optim.lr", self.lr, 0)
        _at_least("optim.weight_decay", self.weight_decay, 0)
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"optim.momentum: must be in [0, 1), got {self.momentum!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"optim.schedule: unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        for i, m in enumerate(self.milestones):
            _at_least(f"optim.milestones[{i}]", m, 0)
        if not self.gamma > 0:
            raise ConfigError(f"optim.gamma: must be positive, got {self.gamma!r}")
        _at_least("optim.warmup_epochs", self.warmup_epochs, 0)
        _at_least("optim.clip_grad_norm", self.clip_grad_norm, 0)


@dataclass
class TrainConfig:
    """Run length, batch, seed and bookkeeping.

    Attributes:
        epochs: pretraining epochs (paper: 450).
        batch_size: per step (paper: 128; the last incomplete batch is dropped); at least 2
            (the in-batch statistics, the collapse monitor's and the optional regulariser's,
            need two clips).
        seed: seeds data order, augmentation, masks and initialisation.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:1``...
        save_every: also keep ``checkpoint_epochNNN.pt`` every N epochs (0: never);
            ``checkpoint_last.pt`` is rewritten after every epoch.
        amp: bfloat16 autocast (the release trains in float32): ``true`` or ``bf16``;
            ``false``, ``fp32`` or ``off`` for float32 (default). Stored as true/false. On CUDA,
            and on a CPU with bfloat16 support in torch (otherwise a warning and float32; see
            :func:`pcm3.pretrain.amp_mode`). The similarities stay float32.
        max_steps_per_epoch: cap steps per epoch (0: no cap), for quick runs.
        divergence_factor: a loss term (other than the distillation terms) whose epoch mean
            exceeds this multiple of its first-epoch mean counts as diverged (0: off).
        on_divergence: ``stop`` (raise, keeping the last good checkpoint) or ``warn``.
        collapse_patience: epochs of instance top-1 at chance before the collapse warning.
        threads: CPU intra-op threads for torch; 0 (default) chooses: see
            :func:`pcm3.config.auto_threads` (1 thread for small recurrent models, else the
            physical cores), measured in ``benchmarks/RESULTS-threads.md``.
    """

    epochs: int = 450
    batch_size: int = 128
    seed: int = 0
    device: str = "auto"
    save_every: int = 50
    amp: Union[bool, str] = False
    max_steps_per_epoch: int = 0
    threads: int = 0
    progress: bool = True
    divergence_factor: float = 100.0
    on_divergence: str = "stop"
    collapse_patience: int = 5

    def __post_init__(self):
        _check_train(self)


SCHEDULES = ("step", "cosine")
OPTIMIZERS = ("sgd", "adamw")


def _at_least(key: str, value, low) -> None:
    if value < low:
        raise ConfigError(f"{key}: must be at least {low}, got {value!r}")


#: the most CPU threads or worker processes a setting may ask for (beyond any machine's cores:
#: 100000 threads crash the OpenMP runtime, a billion workers never start)
MAX_PROCESSES = 1024


def _at_most(key: str, value, high) -> None:
    if value > high:
        raise ConfigError(f"{key}: must be at most {high}, got {value!r}")


AMP_SPELLINGS = {"bf16": True, "bfloat16": True, "fp32": False, "float32": False, "off": False, "none": False}


def _check_train(t: "TrainConfig") -> None:
    if isinstance(t.amp, str):
        if t.amp.lower() not in AMP_SPELLINGS:
            raise ConfigError(f"train.amp: expected true/false, bf16 or fp32, got {t.amp!r}")
        t.amp = AMP_SPELLINGS[t.amp.lower()]
    _at_least("train.epochs", t.epochs, 1)
    _at_least("train.batch_size", t.batch_size, 2)  # one clip: no negatives in the batch, no batch statistics
    for key in ("save_every", "max_steps_per_epoch", "threads"):
        _at_least(f"train.{key}", getattr(t, key), 0)
    _at_most("train.threads", t.threads, MAX_PROCESSES)
    _at_least("train.seed", t.seed, 0)
    _at_most("train.seed", t.seed, MAX_SEED)
    if not t.device or not str(t.device).strip():
        raise ConfigError("train.device: empty (auto, cpu, cuda, cuda:1...)")
    if hasattr(t, "divergence_factor"):
        _at_least("train.divergence_factor", t.divergence_factor, 0)
    if hasattr(t, "on_divergence") and t.on_divergence not in ("stop", "warn"):
        raise ConfigError(f"train.on_divergence: must be stop or warn, got {t.on_divergence!r}")
    if hasattr(t, "collapse_patience"):
        _at_least("train.collapse_patience", t.collapse_patience, 1)


@dataclass
class Config:
    """The whole pretraining configuration (one YAML file)."""

    data: DataConfig = field(default_factory=DataConfig)
    views: ViewConfig = field(default_factory=ViewConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> "Config":
        """Check every section again (values may have been assigned after loading).

        Each field is checked against its type as a file's value is, and normalised in place:
        a ``pathlib.Path`` becomes its string, numpy numbers Python numbers, a mapping its
        section's dataclass. Raises :class:`ConfigError` naming the key; returns ``self``.
        """
        _revalidate(self, "")
        return self


def _revalidate(obj, where: str) -> None:
    """Check ``obj`` as :func:`from_dict` checks a file: each field against its annotated type
    (a mapping assigned in Python becomes its section's dataclass, ``optim.lr = "fast"`` or a
    non-finite number is a :class:`ConfigError` naming the key), then ``__post_init__`` of the
    dataclasses inside it and of ``obj`` (their checks)."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = _join(where, f.name) if where else f.name
        if f.init and f.name in hints:
            coerced = _coerce(value, hints[f.name], key)
            if coerced is not value and not _same(coerced, value):
                setattr(obj, f.name, coerced)
            value = coerced
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            _revalidate(value, key)
    check = getattr(obj, "__post_init__", None)
    if check is not None:
        try:
            check()
        except ConfigError as e:
            raise ConfigError(str(e)) from None
        except (TypeError, ValueError, IndexError) as e:
            raise ConfigError(f"{where}: {e}" if where else str(e)) from None


def _same(a: Any, b: Any) -> bool:
    """``a == b`` of the same type (a coerced value equal to the one held: keep the held one)."""
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # e.g. arrays: not worth keeping
        return False


# --------------------------------------------------------------------------- building

def _hints(cls) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type ``tp`` or raise ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, List, tuple, Tuple, Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin in (tuple, Tuple) and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        out = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin in (tuple, Tuple) or tp is tuple else out
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):  # numpy integers
            return int(value)
        number = _number(value)
        if number is not None and math.isfinite(number) and number.is_integer():
            return int(number)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        number = _number(value)
        if number is None:
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(number):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, os.PathLike):  # a pathlib.Path assigned in Python
            return os.fspath(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if typing.get_origin(tp) is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    return value


def _number(value: Any) -> Optional[float]:
    """A float from a YAML number or from a string a user would write as one.

    YAML 1.1 (PyYAML) reads ``1e-3``, ``5E-2`` and ``1e3`` as strings, not numbers: every
    spelling that Python's ``float`` accepts (``1e-3``, ``1E-4``, ``.5``, ``2.``, ``1_000``)
    is accepted here. Booleans are not numbers.
    """
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, numbers.Real):  # also numpy scalars (np.float32, np.int64)
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def from_dict(cls, data: Dict[str, Any], where: str = "config"):
    """Build dataclass ``cls`` from a nested dict; unknown keys are an error."""
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names, key=str)  # YAML keys may be numbers too
    if unknown:
        raise ConfigError(f"{where.rstrip(':')}: unknown key {unknown[0]!r} (known: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], _join(where, k)) for k, v in data.items()}
    try:
        obj = cls(**kwargs)
    except ConfigError as e:  # the sections' checks name their key themselves
        raise ConfigError(f"{_source(where)}: {e}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where.rstrip(':')}: {e}") from None
    return obj


def _join(where: str, key: str) -> str:
    """``file.yaml:`` + ``train`` -> ``file.yaml: train``; ``a: train`` + ``lr`` -> ``a: train.lr``."""
    return f"{where} {key}" if where.endswith(":") else f"{where}.{key}"


def _source(where: str) -> str:
    """The source part (a file, ``--set ...``) of a ``where`` built by :func:`_join`."""
    if where.endswith(":"):
        return where[:-1]
    return where.split(": ", 1)[0]


def to_dict(cfg) -> Dict[str, Any]:
    """Nested plain dict (tuples as lists), ready for YAML/JSON."""
    def conv(v):
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v
    return conv(cfg)


def _set_path(tree: Dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        nxt = node.get(k)
        if not isinstance(nxt, dict):
            nxt = {}
            node[k] = nxt
        node = nxt
    node[keys[-1]] = value


def parse_override(item: str) -> Tuple[str, Any]:
    """``"a.b=value"`` -> ``("a.b", parsed value)`` (YAML scalar/list syntax)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"--set {item}: cannot parse the value as YAML ({problem.strip()}; "
                          "quote lists and mappings in the shell, e.g. --set 'a.b=[1, 2]')") from None
    return key, value



def _merge(base: Dict[str, Any], over: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


CONFIG_DIR = Path(__file__).parent / "configs"


def resolve_config_path(path: str | os.PathLike) -> Path:
    """A config file path, or the name of a packaged config (``demo``, ``ntu60_xsub_joint``...)."""
    p = Path(path)
    if p.is_file():
        return p
    packaged = CONFIG_DIR / (p.name if p.suffix == ".yaml" else f"{p.name}.yaml")
    if str(path) == p.name and packaged.exists():
        return packaged
    return p


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key set twice in one mapping (PyYAML keeps the last
    one silently: an edit of the first would do nothing)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            try:
                key = self.construct_object(key_node, deep=True)
                hash(key)
            except (TypeError, yaml.YAMLError):
                continue  # the base class reports unhashable keys
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} set twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _yaml_error(path: Path, text: str, e: "yaml.YAMLError") -> str:
    """One line for a YAML error in the file ``path``: ``path:LINE: not valid YAML: <problem>``
    (``LINE`` 1-based, where the parser found the problem; a problem found at the end of the file
    is put on its last line), with the construct it was in and where that started (``(while
    parsing a flow sequence from line 3)``): an unclosed ``[`` is found only on a later line."""
    mark = getattr(e, "problem_mark", None)
    problem = (getattr(e, "problem", None) or "").strip()
    if mark is not None and "set twice" in problem:  # _UniqueKeyLoader's own error: lines said
        return f"{path}:{mark.line + 1}: {problem}"
    line = None
    if mark is not None:
        line = mark.line + 1
    elif isinstance(getattr(e, "position", None), int):  # ReaderError (a control character): no mark
        line = text.count("\n", 0, e.position) + 1
    if line is not None:
        line = max(1, min(line, len(text.splitlines()) or 1))
    if not problem:
        problem = str(e).splitlines()[0].strip()
    if "'\\t'" in problem:
        problem += " (YAML is indented with spaces, not tabs)"
    context, cmark = (getattr(e, "context", None) or "").strip(), getattr(e, "context_mark", None)
    if context and cmark is not None:  # without a mark ("while scanning for the next token") it says nothing
        start = max(1, min(cmark.line + 1, len(text.splitlines()) or 1))  # clamped like the problem's line
        if line is None or start < line:
            context += f" from line {start}"
        problem += f" ({context})"
    where = f"{path}:{line}" if line is not None else f"{path}"
    return f"{where}: not valid YAML: {problem}"


def read_yaml(path: str | os.PathLike, _chain: Tuple[Path, ...] = ()) -> Dict[str, Any]:
    """Read a YAML mapping; supports ``base: other.yaml`` for inheritance (a path relative to
    this file, or the name of a packaged config such as ``demo``)."""
    path = resolve_config_path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a config file")
    if not path.exists():
        raise ConfigError(f"{path}: no such config file (nor a packaged config of that name; "
                          f"see {CONFIG_DIR})")
    try:
        text = path.read_text(encoding="utf-8")
        tree = yaml.load(text, Loader=_UniqueKeyLoader)
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (not UTF-8): expected a YAML config") from None
    except yaml.YAMLError as e:
        raise ConfigError(_yaml_error(path, text, e)) from None
    if tree is None:  # an empty file (or only comments): no settings; a 0 or [] is no mapping
        tree = {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    base = tree.pop("base", None)
    if base is not None:  # beside this file, else a packaged config of that name
        if not isinstance(base, str) or not base.strip():
            raise ConfigError(f"{path}: base: expected the name or path of a config, got {base!r}")
        chain = (*_chain, path.resolve())
        beside = path.parent / str(base)
        parent = resolve_config_path(beside if beside.exists() else str(base))
        if parent.resolve() in chain:
            raise ConfigError(f"{path}: base: {base} is this config or one it is based on (a cycle)")
        if not parent.is_file():  # named by the config that asked for it (it named the base alone)
            raise ConfigError(f"{path}: base: {base}: no such config file beside it, nor a packaged config of "
                              f"that name (see {CONFIG_DIR})")
        tree = _merge(read_yaml(parent, chain), tree)
    return tree


def load_config(path: Optional[str | os.PathLike] = None, overrides: Sequence[str] = ()) -> Config:
    """Load a :class:`Config` from YAML (or defaults) and apply ``key=value`` overrides.

    Errors name their source: the file (``configs/x.yaml: train.batch_size: ...``) or the
    override (``--set train.batch_size=0: ...``). The whole config is validated here.
    """
    tree = read_yaml(path) if path else {}
    where = f"{resolve_config_path(path)}:" if path else "defaults:"
    cfg = from_dict(Config, tree, where)  # the file alone: its own errors name the file
    if not overrides:
        return cfg
    for item in overrides:  # then the overrides, together (one may need another, e.g. two switches)
        key, value = parse_override(item)
        _set_path(tree, key, value)
    try:
        return from_dict(Config, tree, "--set:")
    except ConfigError as final:
        # Name the override at fault: the last one whose key (or a section above it) the message
        # names (the last one of a key repeated is the value in force), else the first one after
        # which the config no longer builds.
        message = str(final)[len("--set:"):].strip()
        for item in reversed(overrides):
            key = item.split("=", 1)[0].strip()
            parts = key.split(".")
            above = [".".join(parts[:i]) for i in range(len(parts) - 1, 1, -1)]  # train.epochs of train.epochs.x
            if key and (_names_key(message, key) or any(_names_key(message, a) for a in above)):
                raise ConfigError(f"--set {item}: {message}") from None
        partial = read_yaml(path) if path else {}
        for item in overrides:
            key, value = parse_override(item)
            _set_path(partial, key, value)
            try:
                from_dict(Config, partial, f"--set {item}:")
            except ConfigError as e:
                raise e from None
        raise final from None



def _names_key(message: str, key: str) -> bool:
    """Whether ``message`` names the dotted ``key`` or a key below it, as a whole word:
    ``model.momentum`` is named by ``model.momentum: ...`` and ``model.momentum.x``, not by
    ``model.momentum_schedule`` nor ``xmodel.momentum``."""
    return re.search(rf"(?<![\w.]){re.escape(key)}(?!\w)", message) is not None


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically."""
    from pcm3.io import write_text

    write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


# --------------------------------------------------------------------------- threads

# Up to this GRU width one intra-op thread is as fast as two on an idle 2-core CPU (within 6%)
# and 3-11x faster when the other core is busy (benchmarks/RESULTS-threads.md).
SMALL_RECURRENT_HIDDEN = 256


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (hyper-threads counted once).

    Linux: the ``(package, core)`` pairs of the CPUs in the affinity mask; elsewhere (or when
    the topology is unreadable) the number of usable logical CPUs.
    """
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover (not Linux)
        return max(1, os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add((topo.joinpath("physical_package_id").read_text().strip(),
                       topo.joinpath("core_id").read_text().strip()))
        except OSError:
            return max(1, len(cpus))
    return max(1, len(cores))


def cores_per_process() -> int:
    """:func:`physical_cores` shared among the processes torchrun started on this machine
    (``LOCAL_WORLD_SIZE``; 1 outside torchrun), at least 1: two processes of all cores each
    oversubscribe the CPU (measured 6.5x slower for a 2-process linear evaluation on 2 cores)."""
    try:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    except ValueError:
        local = 1
    return max(1, physical_cores() // max(1, local))


def auto_threads(hidden: int) -> int:
    """The intra-op thread count for a GRU encoder of width ``hidden`` (``train.threads: 0``).

    Small recurrent models (``hidden <= 256``) run one thread: their per-step kernels are too
    small to share, and a second thread competing with other work slowed them 3-11x in the
    measurement. Larger models use the physical cores (shared among torchrun's processes on
    this machine: :func:`cores_per_process`).
    """
    return 1 if hidden <= SMALL_RECURRENT_HIDDEN else cores_per_process()


def resolve_threads(threads: int, hidden: int) -> int:
    """``threads`` when positive, else :func:`auto_threads` of the encoder width."""
    return int(threads) if threads and threads > 0 else auto_threads(hidden)
