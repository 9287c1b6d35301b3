"""Run one evaluation task into an output folder: the library side of ``pcm3 eval``.

:func:`evaluate` loads the task's protocol (packaged YAML + overrides), builds the encoder row
(pretrained, random init, raw input, supervised), runs the task inside
:func:`pcm3.outputs.output_dir` and writes ``metrics.json`` and ``results.md``.

Under ``torchrun`` (``WORLD_SIZE > 1``) the tasks of :data:`DISTRIBUTED_TASKS` (the ones that
train a network: ``linear``, ``semi``) run on every process (:mod:`pcm3.distributed`): rank 0
checks the output folder (every rank stops with its error), the encoder is rank 0's on every
rank, rank 0 alone writes the output folder (with ``processes`` in ``metrics.json``). The
``--supervised`` row's own training runs whole in each process. Other tasks refuse torchrun.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import torch

from pcm3 import distributed
from pcm3.errors import ConfigError, Pcm3Error, rank_specific_from_here
from pcm3.evaluation.common import (ENCODER_KINDS, EvalContext, assemble_metrics, config_hash, load_protocol,
                                    seed_everything, write_results)
from pcm3.evaluation.features import INPUT_ATTRIBUTES, input_attribute, kept_mode_and_device
from pcm3.io import atomic_path, file_sha256
from pcm3.rng import preserved_rng

TASK_MODULES: Dict[str, str] = {
    "linear": "pcm3.evaluation.linear",
    "semi": "pcm3.evaluation.semi",
    "knn": "pcm3.evaluation.knn",
    "occlusion": "pcm3.evaluation.occlusion",
    "fusion": "pcm3.evaluation.fusion",
    "detection": "pcm3.evaluation.detection",
    "motion": "pcm3.evaluation.motion",
}
NO_ENCODER_TASKS = ("fusion",)
#: the tasks that run under ``torchrun`` (several processes, DistributedDataParallel)
DISTRIBUTED_TASKS = ("linear", "semi")


def task_module(task: str):
    """The module of ``task``; ConfigError for an unknown or not yet available task."""
    if task not in TASK_MODULES:
        raise ConfigError(f"task {task!r}: unknown (known: {', '.join(available_tasks())})")
    try:
        return importlib.import_module(TASK_MODULES[task])
    except ModuleNotFoundError as e:
        if e.name == TASK_MODULES[task]:
            raise ConfigError(f"task {task!r}: not available in this version of pcm3") from None
        raise


def available_tasks() -> list:
    """Tasks whose module exists in this checkout."""
    import importlib.util

    return [task for task, name in TASK_MODULES.items() if importlib.util.find_spec(name) is not None]


# --------------------------------------------------------------------------- encoders

def _file_hash(path: Path) -> str:
    """The first 16 hex digits of the file's SHA-256 (how metrics.json names an encoder file)."""
    return file_sha256(path)[:16]


def _metadata(path: str | os.PathLike):
    """An encoder file's payload with its tensors memory-mapped (``torch.load(mmap=True)``): its
    metadata without reading the weights again (a file of torch's legacy format cannot be mapped:
    read whole)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except RuntimeError:
        return torch.load(path, map_location="cpu", weights_only=False)


def load_encoder_with_info(path: str | os.PathLike) -> Tuple[torch.nn.Module, dict]:
    """An exported encoder (``pcm3 export``) and what is known of its pretraining."""
    from pcm3.config import read_yaml
    from pcm3.export import load_encoder

    path = Path(path)
    encoder = load_encoder(path)
    payload = _metadata(path)  # the weights were read by load_encoder; mapped, not read again
    info = {"path": str(path), "file_hash": _file_hash(path), "pretrain_epochs": payload.get("pretrain_epochs"),
            "source": payload.get("source"), "encoder_config": payload.get("encoder_config"),
            "layout": encoder.layout, "stream": encoder.stream, "clip_len": encoder.clip_len,
            "test_crop": encoder.test_crop}
    if payload.get("pretrained_on"):
        info["pretrained_on"] = payload["pretrained_on"]
    if payload.get("pretrain_epochs_planned") is not None:
        info["pretrain_epochs_planned"] = payload["pretrain_epochs_planned"]
    encoder.file = str(path)  # named by an error about its features (pcm3.evaluation.features)
    if payload.get("pretrain_config_hash"):
        info["config_hash"] = payload["pretrain_config_hash"]
        info["config_hash_of"] = "pretraining config"
        return encoder, info
    run_cfg = Path(str(payload.get("source") or "")) / "config.yaml"
    if payload.get("source") and run_cfg.is_file():
        try:
            info["config_hash"] = config_hash(read_yaml(run_cfg))
            info["config_hash_of"] = f"pretraining config {run_cfg}"
        except Exception:  # an unreadable run config only loses the hash
            pass
    if "config_hash" not in info:
        info["config_hash"] = config_hash({k: info[k] for k in ("encoder_config", "layout", "stream", "clip_len",
                                                                   "test_crop", "pretrain_epochs")})
        info["config_hash_of"] = "encoder file metadata (run config not found)"
    return encoder, info


def load_run_encoder(run: str | os.PathLike) -> Tuple[torch.nn.Module, dict]:
    """The query encoder of a pretraining run folder (as ``pcm3 export`` would write it)."""
    from pcm3.export import export_encoder
    from pcm3.pretrain import load_checkpoint
    from pcm3.export import _find_checkpoint

    run = Path(run)
    ckpt_path = _find_checkpoint(run)
    with tempfile.TemporaryDirectory() as tmp:
        export_encoder(run, Path(tmp) / "encoder.pt")
        encoder, info = load_encoder_with_info(Path(tmp) / "encoder.pt")
    ckpt = load_checkpoint(ckpt_path)
    info.update({"path": str(run), "checkpoint": str(ckpt_path), "config_hash": config_hash(ckpt["config"]),
                 "config_hash_of": "pretraining config (checkpoint)"})
    info.pop("file_hash", None)
    encoder.file = str(run)
    return encoder, info


def architecture_from_pretrain_config(config: str, data: str | os.PathLike) -> Tuple[Any, dict]:
    """Encoder config and input attributes from a pretraining config (NAME or FILE) for ``data``."""
    from pcm3.config import load_config, to_dict
    from pcm3.data.prepared import Prepared
    from pcm3.pretrain import data_shape_into_config

    cfg = load_config(config)
    prepared = Prepared(data)
    data_shape_into_config(cfg, prepared)
    attrs = {"layout": prepared.layout, "stream": cfg.data.stream, "clip_len": cfg.views.out_len,
             "test_crop": cfg.views.test_crop_ratio}
    return cfg.model.encoder, {"config_hash": config_hash(to_dict(cfg)), "config_hash_of": f"pretraining config {config}",
                               "pretrain_config": str(config), **attrs}


def architecture_of(encoder: torch.nn.Module, kind: str):
    """The :class:`pcm3.models.EncoderConfig` that ``kind`` (``random_init``, ``supervised``)
    rebuilds ``encoder`` from; a one-line ConfigError for a module that is no pcm3 Encoder."""
    from pcm3.models import EncoderConfig

    arch = getattr(encoder, "config", None)
    if not isinstance(arch, EncoderConfig):
        raise ConfigError(f"{kind} needs a pcm3 Encoder (it rebuilds the architecture from its config, a "
                          f"pcm3.models.EncoderConfig); got {type(encoder).__name__}")
    return arch


def build_encoder(kind: str, *, data, benchmark: Optional[str], protocol, encoder: Optional[torch.nn.Module] = None,
                  encoder_path=None, run=None, pretrain_config=None, device: torch.device, seed: int,
                  progress: bool, out: Optional[Path] = None) -> Tuple[Optional[torch.nn.Module], dict]:
    """The encoder row ``kind`` and its info.

    - ``pretrained``: ``encoder`` (a module), ``encoder_path`` (exported file) or ``run``.
    - ``random_init``: the same architecture as the given encoder / run / ``pretrain_config``,
      fresh weights from ``seed``.
    - ``raw_input``: None (no network; the task uses :class:`pcm3.evaluation.baselines.RawInput`).
    - ``supervised``: the same architecture as the given encoder / run / ``pretrain_config``
      trained with labels on the training split (``protocol.supervised``; less the validation
      part the protocol carves, with ``val_fraction > 0``, so that choices made on that part are
      not made on data the encoder was trained on); an ``encoder``
      returned by :func:`pcm3.evaluation.baselines.train_supervised` (attribute
      ``supervised_trained``) is used as given.

    ``random_init`` and ``supervised`` from a module need a pcm3 :class:`~pcm3.models.Encoder`
    (its ``config``; :func:`architecture_of`); the input attributes it lacks are taken from
    :data:`INPUT_ATTRIBUTES` (the layout: the data's).
    """
    from pcm3.evaluation.baselines import random_init_encoder, train_supervised

    if kind not in ENCODER_KINDS:
        raise ConfigError(f"encoder kind {kind!r}: must be one of {', '.join(ENCODER_KINDS)}")
    if kind == "raw_input":
        return None, {}
    if kind == "supervised" and encoder is not None and getattr(encoder, "supervised_trained", False):
        return encoder, dict(getattr(encoder, "supervised_info", None) or {"weights": "supervised, trained by the caller"})
    info: dict = {}
    if encoder is None and encoder_path is not None:
        encoder, info = load_encoder_with_info(encoder_path)
    elif encoder is None and run is not None:
        encoder, info = load_run_encoder(run)
    if kind == "pretrained":
        if encoder is None:
            raise ConfigError("pretrained evaluation needs --encoder FILE or --run RUN")
        return encoder, info
    if encoder is not None:
        arch = architecture_of(encoder, kind)
        attrs = {k: input_attribute(encoder, k) for k in INPUT_ATTRIBUTES}
        attrs["layout"] = attrs["layout"] or _data_layout(data)
        info = {**info, "architecture_of": info.get("path", "given encoder")}
    elif pretrain_config is not None:
        arch, arch_info = architecture_from_pretrain_config(pretrain_config, data)
        attrs = {k: arch_info[k] for k in ("layout", "stream", "clip_len", "test_crop")}
        info = arch_info
    else:
        raise ConfigError(f"--{kind.replace('_', '-')} needs the encoder architecture: --encoder FILE, --run RUN "
                          "or --pretrain-config NAME|FILE")
    if kind == "random_init":
        return random_init_encoder(arch, seed, **attrs), {**info, "weights": f"random init, seed {seed}"}
    from pcm3.evaluation.common import carve_validation, check_recognition_data, open_split

    sup = protocol.supervised
    stream = getattr(protocol, "stream", None) or attrs["stream"]
    clip_len = getattr(protocol, "clip_len", None) or attrs["clip_len"]
    check_recognition_data(data, benchmark, ("train",))  # trained on its labels: 0..C-1, finite clips
    train = open_split(data, benchmark, "train")
    where = "training split"
    carve = getattr(protocol, "val_fraction", 0) or 0
    if carve > 0:  # the protocol chooses on validation subjects: the supervised bound must not have seen them
        train_idx, _ = carve_validation(train, carve, seed, getattr(protocol, "val_by", "subject"))
        train = open_split(data, benchmark, "train", indices=train_idx)
        where = f"training split less the validation {getattr(protocol, 'val_by', 'subject')}s (val_fraction {carve})"
    t0 = time.perf_counter()
    trained = train_supervised(arch, train, epochs=sup.epochs, batch_size=sup.batch_size, lr=sup.lr,
                               weight_decay=sup.weight_decay, clip_len=clip_len, stream=stream, layout=attrs["layout"],
                               crop_range=sup.crop_range, min_len=sup.min_len or clip_len, test_crop=attrs["test_crop"],
                               device=device, seed=seed, progress=progress)
    info = {**info, "weights": f"supervised on the {benchmark} {where}, {sup.epochs} epochs, seed {seed}",
            "supervised_seconds": time.perf_counter() - t0, "stream": stream}  # the stream it was trained on
    if out is not None:
        save_encoder(trained, Path(out) / "supervised_encoder.pt", info)
    return trained, info


def _data_layout(data) -> str:
    from pcm3.data.prepared import Prepared

    return Prepared(data).layout


def save_encoder(encoder: torch.nn.Module, path: str | os.PathLike, info: Optional[dict] = None) -> None:
    """Write a pcm3 :class:`~pcm3.models.Encoder` (with its input attributes, as
    :func:`pcm3.evaluation.baselines.random_init_encoder` and ``train_supervised`` return it) in the
    ``pcm3 export`` format, loadable with ``pcm3.load_encoder``; ``info["weights"]`` (optional)
    is recorded as its ``source``. The file appears whole or not at all."""
    import dataclasses

    from pcm3.export import ENCODER_FORMAT, ENCODER_VERSION

    info = info or {}
    with atomic_path(path) as tmp:
        torch.save({"format": ENCODER_FORMAT, "version": ENCODER_VERSION, "encoder_config": dataclasses.asdict(encoder.config),
                    "state_dict": {k: v.detach().cpu() for k, v in encoder.state_dict().items()},
                    "layout": encoder.layout, "stream": encoder.stream, "clip_len": encoder.clip_len,
                    "test_crop": encoder.test_crop, "pretrain_epochs": 0, "source": info.get("weights", "")}, tmp)


def check_stream(kind: str, info: dict, protocol) -> None:
    """Refuse (one-line ConfigError) a protocol ``stream`` override that contradicts the stream a
    pretrained encoder records (``info["stream"]``: ``pcm3 export`` files and runs record the
    stream they were pretrained on): an encoder pretrained on bone, fed joint clips, is no
    joint-stream result.

    The other rows choose their stream: ``raw_input`` has no network, ``random_init`` weights
    know no stream (the encoder given lends its architecture), ``supervised`` is trained on the
    override's stream. A module given as ``encoder=`` records nothing in ``info``: its
    ``stream`` attribute yields to the override, as documented.
    """
    wanted, recorded = getattr(protocol, "stream", None), (info or {}).get("stream")
    if kind != "pretrained" or wanted is None or recorded is None or wanted == recorded:
        return
    source = f" ({info['path']})" if info.get("path") else ""
    raise ConfigError(f"stream={wanted}: the encoder{source} was pretrained on the {recorded} stream; fed {wanted} "
                      f"clips it gives no {wanted}-stream result: drop --set stream={wanted}, or evaluate an encoder "
                      f"pretrained on the {wanted} stream (--random-init, --supervised and --raw-input rows take "
                      "any stream)")


# --------------------------------------------------------------------------- one task

ROW_FLAGS = {"random_init": "--random-init", "raw_input": "--raw-input", "supervised": "--supervised"}


def check_row(task: str, kind: str, *, encoder: Optional[torch.nn.Module] = None, encoder_path=None, run=None,
              pretrain_config=None) -> None:
    """Refuse row options that contradict each other (one-line ConfigError) instead of ignoring one.

    - ``fusion`` reads saved scores: no encoder, architecture or baseline row applies.
    - ``--raw-input`` has no network: ``--encoder``, ``--run``, ``--pretrain-config`` would be
      ignored (its input is set by the protocol's ``stream`` and ``clip_len``).
    - ``--encoder`` and ``--run`` are two encoders; ``--pretrain-config`` is the architecture of
      ``--random-init``/``--supervised`` *without* an encoder, so beside ``--encoder``/``--run`` it
      would be ignored, and a pretrained row has no use for it.

    ``--random-init`` and ``--supervised`` with ``--encoder``/``--run`` are the documented rows:
    that encoder's architecture, fresh or trained with labels.
    """
    given = [flag for flag, value in (("--encoder", encoder_path), ("--run", run),
                                      ("--pretrain-config", pretrain_config)) if value is not None]
    if task == "detection" and kind == "supervised":
        raise ConfigError("--supervised: detection has no supervised row (the bound is trained on trimmed, labelled "
                          "clips; detection reads untrimmed videos): compare --random-init with the pretrained row")
    if (task not in NO_ENCODER_TASKS and kind in ("random_init", "supervised") and encoder is not None
            and not (kind == "supervised" and getattr(encoder, "supervised_trained", False))):
        architecture_of(encoder, kind)  # a module that is no pcm3 Encoder: refused before anything is written
    if task in NO_ENCODER_TASKS:
        extra = given + ([ROW_FLAGS[kind]] if kind in ROW_FLAGS else [])
        extra += ["an encoder"] if encoder is not None else []
        if extra:
            raise ConfigError(f"{extra[0]}: eval {task} reads the saved scores of other eval folders (--scores); "
                              f"it takes no encoder or baseline row")
        return
    if kind == "raw_input":
        if given or encoder is not None:
            what = given[0] if given else "an encoder"
            raise ConfigError(f"--raw-input: no network reads the clips, so {what} would be ignored; give one of "
                              "them (the raw input's frames and stream are set with --set clip_len=N --set "
                              "stream=joint|bone|motion)")
        return
    if encoder_path is not None and run is not None:
        raise ConfigError("--encoder and --run: give one of them")
    if pretrain_config is not None:
        if encoder_path is not None or run is not None or encoder is not None:
            source = "--encoder" if encoder_path is not None else "--run" if run is not None else "the given encoder"
            raise ConfigError(f"--pretrain-config: the architecture already comes from {source}; give one of them")
        if kind == "pretrained":
            raise ConfigError("--pretrain-config: gives the architecture of --random-init or --supervised; a "
                              "pretrained evaluation needs --encoder FILE or --run RUN")
    if encoder is None and not given:  # what build_encoder would say, before the output folder is touched
        if kind == "pretrained":
            raise ConfigError("pretrained evaluation needs --encoder FILE or --run RUN")
        if kind in ROW_FLAGS:
            raise ConfigError(f"{ROW_FLAGS[kind]} needs the encoder architecture: --encoder FILE, --run RUN "
                              "or --pretrain-config NAME|FILE")


def _recorded_input(encoder_path, run) -> dict:
    """``{"stream", "path"}`` that an encoder file or a run folder records, read cheaply before any
    output is written (empty when neither is given or it cannot be read: the later checks say why)."""
    try:
        if encoder_path is not None:
            payload = _metadata(encoder_path)
            return {"stream": payload.get("stream"), "path": str(encoder_path)} if isinstance(payload, dict) else {}
        if run is not None:
            from pcm3.config import read_yaml

            tree = read_yaml(Path(run) / "config.yaml")
            return {"stream": ((tree or {}).get("data") or {}).get("stream", "joint"), "path": str(run)}
    except Exception:  # unreadable: build_encoder names the problem
        return {}
    return {}


def check_inputs(task: str, module, *, data, benchmark: Optional[str], protocol, kind: str):
    """The data a task reads, checked before anything is written: the task module's
    ``check_inputs(data, benchmark, protocol, kind)`` where it has one (parts present and not
    empty, labels, lengths, NaN/inf; task settings that depend on the data, such as k-NN's k)."""
    check = getattr(module, "check_inputs", None)
    if check is not None and data is not None:
        return check(Path(data), benchmark, protocol, kind)
    return None


def evaluate(task: str, *, data, benchmark: Optional[str], out, kind: str = "pretrained",
             encoder: Optional[torch.nn.Module] = None, encoder_path=None, run=None, pretrain_config=None,
             config: Optional[str] = None, overrides: Sequence[str] = (), device: str | torch.device = "cpu",
             seed: int = 0, progress: bool = False, overwrite: bool = False) -> dict:
    """Run evaluation ``task`` for one encoder row and write ``out`` (metrics.json, results.md, task files).

    Args:
        task: ``linear``, ``semi``, ``knn``, ``occlusion``, ``fusion`` (``detection``, ``motion``
            when present).
        data: prepared data folder; benchmark: its split (``xsub``...).
        out: output folder (refused when it holds anything ``pcm3`` did not write; replaced only
            with ``overwrite``).
        kind: ``pretrained``, ``random_init``, ``raw_input`` or ``supervised``.
        encoder / encoder_path / run / pretrain_config: where the encoder (or its architecture)
            comes from, see :func:`build_encoder`.
        config: protocol YAML (NAME or FILE; default the task's packaged ``eval_<task>``).
        overrides: ``key=value`` protocol overrides.

    Before the output folder is touched, the row options are checked against each other
    (:func:`check_row`) and the data the task reads against the task (:func:`check_inputs`). A
    ``stream`` override that contradicts the stream a pretrained encoder file or run records is
    refused once the encoder is loaded, before the task runs (:func:`check_stream`).

    A given ``encoder`` module maps clips ``(N, C, T, V, M)`` to features ``(N, D)`` (anything
    else is a one-line ConfigError); its attributes ``layout``, ``stream``, ``clip_len``,
    ``test_crop`` say how clips are made (missing ones: :data:`INPUT_ATTRIBUTES`, the layout of
    ``data``; ``metrics.json`` names them under ``encoder.missing_attributes`` and, for the
    recognition tasks, records the values used under ``input``), ``feature_dim`` its D (else one
    forward pass measures it). Its train/eval modes and device, and the global random states
    (Python, NumPy, torch CPU and CUDA), are as they were when this returns or raises; the
    ``seed`` alone sets the run's draws.

    Returns:
        the metrics dict written to ``out/metrics.json``.
    """
    from pcm3.outputs import output_dir

    module = task_module(task)
    check_row(task, kind, encoder=encoder, encoder_path=encoder_path, run=run, pretrain_config=pretrain_config)
    protocol = load_protocol(module.PROTOCOL, config or module.DEFAULT_CONFIG, overrides)
    device = torch.device(device)
    data = Path(data) if data is not None else None
    # the folders the run reads are never its output (--out fA --overwrite with --scores fA: fA was replaced)
    protect = [p for p in (data, encoder_path, run, getattr(protocol, "linear_run", None),
                           *(getattr(protocol, "runs", None) or ())) if p is not None]
    if task in NO_ENCODER_TASKS and (data is not None or benchmark is not None):
        given = "--data" if data is not None else "--benchmark"
        raise ConfigError(f"{given}: eval {task} takes the data and benchmark of its --scores folders (their "
                          f"metrics.json); give neither")
    t0 = time.perf_counter()  # the checks of the data are part of the run's time
    if task not in NO_ENCODER_TASKS:
        if data is None:
            raise ConfigError(f"eval {task}: --data is required")
        checked = check_inputs(task, module, data=data, benchmark=benchmark, protocol=protocol, kind=kind)
        if benchmark is None and task in ("motion", "detection") and isinstance(checked, tuple):
            benchmark = checked[1]  # the task's default split (xsub): the supervised row trains on its part
        if kind == "pretrained":  # before the output folder is made: what the file or run records
            check_stream(kind, _recorded_input(encoder_path, run), protocol)
    world = 1
    if distributed.launched():
        if task not in DISTRIBUTED_TASKS:
            raise ConfigError(f"eval {task}: runs in one process; under torchrun: {', '.join(DISTRIBUTED_TASKS)}")
        dist_info, device = distributed.init_from_env(device)
        world, progress = dist_info.world_size, progress and dist_info.is_main
    folder = (output_dir(out, "eval", overwrite=overwrite, protect=protect) if world == 1
              else _rank_output(out, overwrite, protect))
    # the caller's module (modes, device) and random states are put back, however the run ends
    with kept_mode_and_device(encoder), preserved_rng(), folder as tmp:
        seed_everything(seed)
        if task in NO_ENCODER_TASKS:
            enc, info, kind = None, {}, "none"
        else:
            enc, info = build_encoder(kind, data=data, benchmark=benchmark, protocol=protocol, encoder=encoder,
                                      encoder_path=encoder_path, run=run, pretrain_config=pretrain_config,
                                      device=device, seed=seed, progress=progress, out=tmp)
            check_stream(kind, info, protocol)
            if enc is not None:
                enc = enc.to(device).eval()
                if world > 1:  # every rank evaluates rank 0's encoder
                    distributed.broadcast_module(enc)
        ctx = EvalContext(task=task, data=data, benchmark=benchmark, encoder=enc, encoder_kind=kind,
                          encoder_info=info, protocol=protocol, out=tmp, device=device, seed=seed, progress=progress)
        seed_everything(seed)
        rank_specific_from_here()  # the checks are done; each rank now reads and trains on its own share
        result = module.run(ctx)
        metrics = assemble_metrics(ctx, result, wall_seconds=time.perf_counter() - t0)
        _note_missing_attributes(metrics, task, encoder, protocol)
        _warn_pretraining_overlap(metrics, kind, info, getattr(enc, "pretrained_on", None), data, benchmark)
        _note_unfinished_run(metrics, kind, info)
        if world > 1:
            metrics["processes"] = world
        if distributed.is_main():
            write_results(tmp, metrics)
    return metrics


def _warn_pretraining_overlap(metrics: dict, kind: str, info: dict, pretrained_on: Optional[dict], data,
                              benchmark: Optional[str]) -> None:
    """A warning (``metrics["warnings"]`` and a note) when the pretrained encoder's pretraining
    clips include clips of the evaluated test part (:func:`pcm3.evaluation.common.pretraining_overlap`)."""
    from pcm3.evaluation.common import pretraining_overlap

    if kind != "pretrained":
        return
    text = pretraining_overlap(info.get("pretrained_on") or pretrained_on, data, metrics.get("benchmark") or benchmark)
    if text:
        notes = metrics.get("notes") or []
        metrics["notes"] = [*(notes if isinstance(notes, list) else [notes]), text]
        metrics["warnings"] = [*(metrics.get("warnings") or []), text]


def _note_unfinished_run(metrics: dict, kind: str, info: dict) -> None:
    """A note (``metrics["notes"]``) when the pretrained encoder comes from a run that had not
    done its planned epochs (evaluated while it trains, or after an interrupt)."""
    done, planned = info.get("pretrain_epochs"), info.get("pretrain_epochs_planned")
    if kind != "pretrained" or not isinstance(done, int) or not isinstance(planned, int) or done >= planned:
        return
    notes = metrics.get("notes") or []
    metrics["notes"] = [*(notes if isinstance(notes, list) else [notes]),
                        f"the encoder's pretraining run had done {done} of its {planned} planned epochs (an unfinished "
                        "run: `pcm3 pretrain --resume` finishes it)"]


def _note_missing_attributes(metrics: dict, task: str, encoder: Optional[torch.nn.Module], protocol) -> None:
    """Where the caller's module lacks input attributes that the task reads (and the protocol
    does not set), ``metrics["encoder"]["missing_attributes"]`` names them and a note says what
    was used instead: never a silent default (a clip length of 64 frames...)."""
    if encoder is None or task in NO_ENCODER_TASKS:
        return
    read = ("layout", "stream") if task in ("motion", "detection") else tuple(INPUT_ATTRIBUTES)
    missing = [k for k in read if getattr(encoder, k, None) is None and getattr(protocol, k, None) is None]
    if not missing:
        return
    used = ", ".join(f"{k} {'of the data' if k == 'layout' else INPUT_ATTRIBUTES[k]}" for k in missing)
    where = " (metrics.json: `input`)" if "input" in metrics else ""
    metrics["encoder"]["missing_attributes"] = missing
    notes = metrics.get("notes") or []
    metrics["notes"] = [*(notes if isinstance(notes, list) else [notes]),
                        f"the encoder module {type(encoder).__name__} has no {', '.join(missing)} attribute: "
                        f"used {used}{where}"]


@contextlib.contextmanager
def _rank_output(out, overwrite: bool, protect):
    """Under ``torchrun``: rank 0's :func:`~pcm3.outputs.output_dir`; the other ranks get a
    private temporary folder that is removed. Rank 0's refusal of ``out`` stops every rank."""
    from pcm3.outputs import output_dir

    with contextlib.ExitStack() as stack:
        error = tmp = None
        if distributed.is_main():
            try:  # the refusals and the temporary folder's creation
                tmp = stack.enter_context(output_dir(out, "eval", overwrite=overwrite, protect=protect))
            except Pcm3Error as e:
                error = e
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pcm3-eval-rank")))
        distributed.raise_from_main(error)
        yield tmp


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1``...; ConfigError when unusable."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r}: not a device name (auto, cpu, cuda, cuda:0...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    return device
