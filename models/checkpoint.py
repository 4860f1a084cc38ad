"""Training checkpoints as plain files: safetensors for tensors, JSON for the rest, never pickle.

A checkpoint is one folder, written whole or not at all:

    model.safetensors       the model's state_dict (tied weights stored once, see meta.json)
    optimizer.safetensors   every tensor of optimizer.state_dict() (moments, step counts), keyed
                            "state/<param index>/<name>" and "param_groups/<group>/<name>"
    rng.safetensors         torch.Generator states (uint8 tensors), keyed by the caller's names
    tensors.safetensors     (instead of the above, `save_tensors`) named tensors of state that
                            is not a module, e.g. a federated server's flat weights
    meta.json               format, kbsim version, the caller's state (config, step, epoch,
                            position in the epoch, metrics), the optimizer's non-tensor parts
                            (param_groups, python-number state), numpy Generator states, and
                            each file's size and sha256

The folder is written under a temporary name beside its final one, every file is fsynced, and
the folder is renamed into place, so a crash leaves either the previous checkpoints or the new
one in full, never half of one. Loading reads each file's bytes once, checks them against
meta.json, parses them with safetensors (which holds only tensors: no code runs) and checks
every name, shape and dtype against the model and optimizer before changing anything; any
mismatch is a `CheckpointError` naming the file and the reason.

The safetensors format: https://github.com/huggingface/safetensors (a JSON header of names,
dtypes, shapes and offsets, then raw little-endian tensor bytes).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

FORMAT = "kbsim-checkpoint"
FORMAT_VERSION = 1
META = "meta.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
RNG_FILE = "rng.safetensors"
TENSORS_FILE = "tensors.safetensors"
STEP_DIR = re.compile(r"^step-(\d{8,})$")

# torch optimizers whose per-parameter state tensors (moments, momentum buffers) all have the
# parameter's shape, so a loaded one of another shape is a mismatch to report, not a crash later.
_ELEMENTWISE = ("SGD", "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "RMSprop", "Adagrad",
                "Adadelta", "ASGD", "Rprop")


class CheckpointError(ValueError):
    """A checkpoint that cannot be written or used: the message names the file and the reason."""


# --------------------------------------------------------------------------- saving


def save_checkpoint(
    directory: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    state: Mapping[str, Any] | None = None,
    *,
    generators: Mapping[str, torch.Generator | np.random.Generator] | None = None,
) -> Path:
    """Writes a checkpoint folder atomically (replacing one already there); returns its path.

    Args:
        directory: The checkpoint's folder; its parent is created if missing.
        model: Its `state_dict()` is saved (parameters and persistent buffers).
        optimizer: Its full `state_dict()` is saved (e.g. Adam's moments and step counts).
        state: JSON-able training state the caller needs to resume (config, step, epoch,
            position in the epoch, metrics so far); returned as is by `load_checkpoint`.
        generators: RNGs to save by name: `torch.Generator`s (including
            `torch.default_generator`) and numpy `Generator`s.

    Raises:
        CheckpointError: `state` or an optimizer setting is not JSON-able, or a generator is of
            another type.
    """
    directory = Path(directory)
    where = str(directory)
    files: dict[str, bytes] = {}

    tensors, aliases = _model_tensors(model)
    files[MODEL_FILE] = st_save(tensors, metadata={"format": "pt"})
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kbsim_version": _kbsim_version(),
        "torch_version": torch.__version__,
        "state": _json_checked(dict(state or {}), f"{where}: state"),
        "model": {"class": type(model).__name__, "aliases": aliases},
        "optimizer": None,
        "rng": {"torch": [], "numpy": {}},
    }
    if optimizer is not None:
        opt_tensors, opt_json = _flatten_optimizer(optimizer, where)
        files[OPTIMIZER_FILE] = st_save(opt_tensors, metadata={"format": "pt"})
        meta["optimizer"] = opt_json
    torch_states = {}
    for name, g in (generators or {}).items():
        if isinstance(g, torch.Generator):
            torch_states[name] = g.get_state().clone()
        elif isinstance(g, np.random.Generator):
            meta["rng"]["numpy"][name] = _json_checked(
                g.bit_generator.state, f"{where}: numpy generator {name!r}")
        else:
            raise CheckpointError(f"{where}: generator {name!r} is a {type(g).__name__}, not a "
                                  "torch.Generator or numpy.random.Generator")
    if torch_states:
        files[RNG_FILE] = st_save(torch_states, metadata={"format": "pt"})
        meta["rng"]["torch"] = sorted(torch_states)
    meta["files"] = {name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                     for name, data in files.items()}
    files[META] = (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode("utf-8")
    _write_dir_atomically(directory, files)
    return directory


def save_tensors(
    directory: str | os.PathLike,
    tensors: Mapping[str, torch.Tensor],
    state: Mapping[str, Any] | None = None,
) -> Path:
    """Writes named tensors and a JSON state as a checkpoint folder, atomically.

    For state that is not an `nn.Module` (a federated server's flat weights and optimizer
    moments). Same folder format, checks and atomicity as `save_checkpoint`; the tensors go to
    tensors.safetensors. Read back with `load_tensors`.

    Raises:
        CheckpointError: `state` is not JSON-able, or a value is not a tensor.
    """
    directory = Path(directory)
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"{directory}: {name!r} is a {type(t).__name__}, not a tensor")
    data = st_save({k: t.detach().contiguous() for k, t in tensors.items()},
                   metadata={"format": "pt"})
    meta: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "kbsim_version": _kbsim_version(),
        "torch_version": torch.__version__,
        "state": _json_checked(dict(state or {}), f"{directory}: state"),
        "model": {"class": None, "aliases": {}}, "optimizer": None,
        "rng": {"torch": [], "numpy": {}},
        "files": {TENSORS_FILE: {"bytes": len(data),
                                 "sha256": hashlib.sha256(data).hexdigest()}},
    }
    files = {TENSORS_FILE: data,
             META: (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode("utf-8")}
    _write_dir_atomically(directory, files)
    return directory


def load_tensors(directory: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, state) of a folder written by `save_tensors`, every file checked first.

    Raises:
        CheckpointError: A file is missing, truncated or corrupt (named).
    """
    directory = Path(directory)
    meta = read_meta(directory)
    return _read_tensors(directory, TENSORS_FILE, meta), meta["state"]


def _kbsim_version() -> str:
    from kbsim import __version__

    return __version__


def _model_tensors(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The state_dict as contiguous CPU copies, each tied tensor once; alias -> stored name."""
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, t in model.state_dict().items():
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"model state {name!r} is a {type(t).__name__}, not a tensor")
        # The same view of the same memory (a tied embedding/output weight) is stored once.
        key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape),
               t.stride(), t.dtype)
        if t.numel() and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        tensors[name] = t.detach().to("cpu").contiguous().clone()
    return tensors, aliases


def _flatten_optimizer(optimizer: torch.optim.Optimizer,
                       where: str) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    state_json: dict[str, dict] = {}
    for pid, entry in sd["state"].items():
        for name, v in entry.items():
            if isinstance(v, torch.Tensor):
                tensors[f"state/{pid}/{name}"] = v.detach().to("cpu").contiguous().clone()
            else:
                state_json.setdefault(str(pid), {})[name] = _encode(
                    v, f"{where}: optimizer state {pid}/{name}")
    groups = []
    for i, group in enumerate(sd["param_groups"]):
        g = {}
        for name, v in group.items():
            if isinstance(v, torch.Tensor):  # e.g. a tensor lr
                tensors[f"param_groups/{i}/{name}"] = v.detach().to("cpu").contiguous().clone()
            else:
                g[name] = _encode(v, f"{where}: optimizer param_groups[{i}][{name!r}]")
        groups.append(g)
    return tensors, {"class": type(optimizer).__name__, "param_groups": groups,
                     "state": state_json}


def _encode(v: Any, where: str) -> Any:
    """JSON form of an optimizer setting; tuples (Adam's betas) are tagged to come back as such."""
    if isinstance(v, tuple):
        return {"tuple": [_encode(x, where) for x in v]}
    if isinstance(v, list):
        return [_encode(x, where) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise CheckpointError(f"{where} is a {type(v).__name__}, which a checkpoint cannot hold "
                          "(numbers, strings, bools, None, lists and tuples only)")


def _decode(v: Any) -> Any:
    if isinstance(v, dict) and set(v) == {"tuple"}:
        return tuple(_decode(x) for x in v["tuple"])
    if isinstance(v, list):
        return [_decode(x) for x in v]
    return v


def _json_checked(obj: Any, where: str) -> Any:
    """`obj` itself, after checking it survives a JSON round trip unchanged."""
    try:
        text = json.dumps(obj, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where} is not JSON-able ({e})") from None
    if not _same(json.loads(text), obj):
        raise CheckpointError(f"{where} does not survive JSON unchanged (tuples, non-str keys "
                              "or other types): use lists, str keys, numbers, strings, None")
    return obj


def _same(a: Any, b: Any) -> bool:
    if isinstance(b, float) and isinstance(a, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in b)
    if isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a folder
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_dir_atomically(directory: Path, files: Mapping[str, bytes]) -> None:
    parent = directory.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{directory.name}-", dir=parent))
    try:
        for name, data in files.items():
            with open(tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        _fsync_dir(tmp)
        if directory.exists():
            # Move the old one aside first: a folder cannot be renamed onto a non-empty one.
            old = Path(tempfile.mkdtemp(prefix=f".old-{directory.name}-", dir=parent))
            os.rename(directory, old / "x")
            os.rename(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, directory)
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --------------------------------------------------------------------------- loading


def read_meta(directory: str | os.PathLike) -> dict:
    """A checkpoint's meta.json, checked for format (no tensor is read).

    Raises:
        CheckpointError: No checkpoint there, or meta.json is unreadable or of another format.
    """
    path = Path(directory) / META
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing (not a checkpoint folder)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable, corrupt or truncated ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a kbsim checkpoint (format is not {FORMAT!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format_version {meta.get('format_version')!r}"
                              f", this kbsim reads {FORMAT_VERSION}")
    for key, kind in (("state", dict), ("model", dict), ("rng", dict), ("files", dict)):
        if not isinstance(meta.get(key), kind):
            raise CheckpointError(f"{path}: corrupt ({key!r} missing or not a {kind.__name__})")
    return meta


def _read_tensors(directory: Path, name: str, meta: dict) -> dict[str, torch.Tensor]:
    path = directory / name
    entry = meta["files"].get(name)
    if not isinstance(entry, dict):
        raise CheckpointError(f"{path}: not listed in {META} (corrupt checkpoint)")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except OSError as e:
        raise CheckpointError(f"{path}: unreadable ({e.strerror})") from None
    if len(data) != entry.get("bytes"):
        raise CheckpointError(f"{path}: truncated or altered ({len(data)} bytes, "
                              f"{META} lists {entry.get('bytes')})")
    if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
        raise CheckpointError(f"{path}: corrupt (sha256 differs from the one in {META})")
    try:
        return st_load(data)
    except SafetensorError as e:
        raise CheckpointError(f"{path}: not a valid safetensors file ({e})") from None


def load_checkpoint(
    directory: str | os.PathLike,
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    generators: Mapping[str, torch.Generator | np.random.Generator] | None = None,
) -> dict:
    """Restores a checkpoint into `model`, `optimizer` and `generators`; returns its state.

    Everything is read and checked first (checksums, names, shapes, dtypes, optimizer type and
    parameter groups, generator names and kinds), then applied, so a failed load changes
    nothing. Each argument left as None is skipped (e.g. weights only for evaluation).

    Args:
        directory: A folder written by `save_checkpoint`.
        model: Receives the weights (strict: same names, shapes and dtypes).
        optimizer: Receives the optimizer state; must be of the saved class, over parameters
            of the same shapes in the same groups.
        generators: Each named generator gets its saved state; every name must be saved.

    Returns:
        The `state` mapping given to `save_checkpoint`.

    Raises:
        CheckpointError: A file is missing, truncated, corrupt or does not match (the message
            names the file and the reason).
    """
    directory = Path(directory)
    meta = read_meta(directory)
    apply = []

    if model is not None:
        tensors = _read_tensors(directory, MODEL_FILE, meta)
        weights = _model_state(directory / MODEL_FILE, tensors,
                               meta["model"].get("aliases", {}), model)
        apply.append(lambda: model.load_state_dict(weights, strict=True))

    if optimizer is not None:
        if not isinstance(meta.get("optimizer"), dict):
            raise CheckpointError(f"{directory / META}: the checkpoint holds no optimizer state")
        opt_tensors = _read_tensors(directory, OPTIMIZER_FILE, meta)
        sd = _optimizer_state(directory / OPTIMIZER_FILE, opt_tensors, meta["optimizer"],
                              optimizer)
        apply.append(lambda: optimizer.load_state_dict(sd))

    if generators:
        torch_states = (_read_tensors(directory, RNG_FILE, meta) if meta["rng"].get("torch")
                        else {})
        numpy_states = meta["rng"].get("numpy", {})
        for name, g in generators.items():
            apply.append(_generator_setter(directory, name, g, torch_states, numpy_states))

    for fn in apply:
        fn()
    return meta["state"]


def _model_state(path: Path, tensors: dict[str, torch.Tensor], aliases: dict[str, str],
                 model: torch.nn.Module) -> dict[str, torch.Tensor]:
    expected = model.state_dict()
    if not isinstance(aliases, dict) or any(v not in tensors for v in aliases.values()):
        raise CheckpointError(f"{path}: corrupt (tied-weight aliases in {META} name tensors "
                              "the file lacks)")
    full = dict(tensors)
    full.update({alias: tensors[name] for alias, name in aliases.items()})
    missing = sorted(set(expected) - set(full))
    extra = sorted(set(full) - set(expected))
    if missing or extra:
        raise CheckpointError(f"{path}: does not match the model ({type(model).__name__}): "
                              f"missing {missing[:5]}, unexpected {extra[:5]}")
    for name, want in expected.items():
        got = full[name]
        if got.shape != want.shape:
            raise CheckpointError(f"{path}: tensor {name!r} has shape {tuple(got.shape)}, the "
                                  f"model expects {tuple(want.shape)}")
        if got.dtype != want.dtype:
            raise CheckpointError(f"{path}: tensor {name!r} has dtype {got.dtype}, the model "
                                  f"expects {want.dtype}")
    return full


def _optimizer_state(path: Path, tensors: dict[str, torch.Tensor], saved: dict,
                     optimizer: torch.optim.Optimizer) -> dict:
    if saved.get("class") != type(optimizer).__name__:
        raise CheckpointError(f"{path}: holds {saved.get('class')} state, the optimizer is "
                              f"{type(optimizer).__name__}")
    current = optimizer.state_dict()["param_groups"]
    groups = saved.get("param_groups")
    if not isinstance(groups, list) or len(groups) != len(current):
        raise CheckpointError(f"{path}: {len(groups) if isinstance(groups, list) else '?'} "
                              f"parameter groups, the optimizer has {len(current)}")
    groups = [{k: _decode(v) for k, v in g.items()} for g in groups]
    for i, (g, c) in enumerate(zip(groups, current, strict=True)):
        if g.get("params") != c["params"]:
            raise CheckpointError(f"{path}: parameter group {i} holds "
                                  f"{len(g.get('params') or [])} parameters, the optimizer's "
                                  f"has {len(c['params'])}")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state: dict[int, dict] = {}
    for pid, entry in saved.get("state", {}).items():
        state.setdefault(int(pid), {}).update({k: _decode(v) for k, v in entry.items()})
    for key, t in tensors.items():
        kind, index, name = (key.split("/", 2) + ["", ""])[:3]
        if kind == "state" and index.isdigit():
            state.setdefault(int(index), {})[name] = t
        elif kind == "param_groups" and index.isdigit() and int(index) < len(groups):
            groups[int(index)][name] = t
        else:
            raise CheckpointError(f"{path}: unexpected tensor {key!r}")
    elementwise = type(optimizer).__name__ in _ELEMENTWISE
    for pid, entry in sorted(state.items()):
        if not 0 <= pid < len(params):
            raise CheckpointError(f"{path}: state for parameter {pid}, the optimizer has "
                                  f"{len(params)}")
        for name, t in sorted(entry.items()):
            if (elementwise and isinstance(t, torch.Tensor) and t.dim() > 0
                    and t.shape != params[pid].shape):
                raise CheckpointError(f"{path}: state {pid}/{name} has shape {tuple(t.shape)}, "
                                      f"parameter {pid} has {tuple(params[pid].shape)}")
    return {"state": state, "param_groups": groups}


def _generator_setter(directory: Path, name: str, g: object, torch_states: dict,
                      numpy_states: dict):
    if isinstance(g, torch.Generator):
        path = directory / RNG_FILE
        if name not in torch_states:
            raise CheckpointError(f"{path}: no torch generator {name!r} saved "
                                  f"(has {sorted(torch_states)})")
        s = torch_states[name]
        want = g.get_state()
        if s.dtype != torch.uint8 or s.shape != want.shape:
            raise CheckpointError(f"{path}: generator {name!r} state has dtype {s.dtype} and "
                                  f"shape {tuple(s.shape)}, a {g.device} generator needs "
                                  f"{want.dtype} {tuple(want.shape)}")
        return lambda: g.set_state(s)
    if isinstance(g, np.random.Generator):
        path = directory / META
        s = numpy_states.get(name)
        kind = type(g.bit_generator).__name__
        if not isinstance(s, dict) or s.get("bit_generator") != kind:
            raise CheckpointError(f"{path}: no numpy {kind} generator {name!r} saved")

        def set_numpy() -> None:
            g.bit_generator.state = s

        return set_numpy
    raise CheckpointError(f"generator {name!r} is a {type(g).__name__}, not a torch.Generator "
                          "or numpy.random.Generator")


# --------------------------------------------------------------------------- a run's folder


def step_dir(root: str | os.PathLike, step: int) -> Path:
    """The folder of the checkpoint at `step` under a run's checkpoint root."""
    return Path(root) / f"step-{step:08d}"


def list_checkpoints(root: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, folder) of every finished checkpoint under `root`, oldest first.

    Temporary folders of an interrupted save (".tmp-...", ".old-...") are not checkpoints.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = STEP_DIR.match(p.name)
        if m and p.is_dir():
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    """The newest finished checkpoint under `root`, or None."""
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def save_step_checkpoint(
    root: str | os.PathLike,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    state: Mapping[str, Any] | None = None,
    *,
    generators: Mapping[str, torch.Generator | np.random.Generator] | None = None,
    keep: int | None = None,
) -> Path:
    """`save_checkpoint` into `root/step-NNNNNNNN`, then keeps only the newest `keep` ones.

    Also removes what interrupted saves left behind under `root` (their temporary folders):
    one run writes to a checkpoint root at a time.
    """
    path = save_checkpoint(step_dir(root, step), model, optimizer, state, generators=generators)
    prune_checkpoints(root, keep)
    return path


def prune_checkpoints(root: str | os.PathLike, keep: int | None = None) -> None:
    """Removes what interrupted saves left under `root` (their temporary folders) and, with
    `keep`, all but the newest `keep` checkpoints. One run writes to a root at a time."""
    root = Path(root)
    for p in root.iterdir():
        if p.is_dir() and (p.name.startswith(".tmp-step-") or p.name.startswith(".old-step-")):
            shutil.rmtree(p, ignore_errors=True)
    if keep is not None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        for _, old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
