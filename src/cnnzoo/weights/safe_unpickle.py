"""Read whole-module PyTorch pickles (`torch.save(model)`) without running their code.

Published weights are sometimes a pickled `nn.Module` instead of a state dict, and the
module's class lives in the author's script (`__main__.DnCNN`). `torch.load` would import and
call whatever the pickle names; `torch.load(weights_only=True)` refuses such files. This
reader sits in between: a restricted unpickler that resolves only
- the functions that rebuild tensors and parameters (`torch._utils._rebuild_tensor_v2`, ...),
  the storage type markers (`torch.FloatStorage`, ...) and `collections.OrderedDict`;
- an allow-list of plain `torch.nn` layer classes and every `__main__` class, each replaced
  by a `ModuleStub` that only records the attributes the pickle sets (no method of the
  real class ever runs, and `__main__` code is never looked up);
and refuses any other global with `UnsafePickleError`, naming the file and the global.

Both container formats are read: the zip format of torch >= 1.6 (`data.pkl` plus one file
per storage) and the legacy format (magic number, protocol, system info, the pickle, the
storage keys, then each storage's raw bytes). `module_state_dict` turns a stub tree back
into the state dict the module would have had.
"""

from __future__ import annotations

import _compat_pickle
import io
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch

from .._limits import LimitError, check_torch_file
from ..errors import CnnzooError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "UntypedStorage": torch.uint8,
}

# torch.nn classes a pickled model may contain: layers whose state is tensors and numbers.
ALLOWED_NN_CLASSES = frozenset({
    "torch.nn.modules.container.Sequential", "torch.nn.modules.container.ModuleList",
    "torch.nn.modules.container.ModuleDict",
    "torch.nn.modules.conv.Conv1d", "torch.nn.modules.conv.Conv2d", "torch.nn.modules.conv.Conv3d",
    "torch.nn.modules.conv.ConvTranspose2d",
    "torch.nn.modules.batchnorm.BatchNorm1d", "torch.nn.modules.batchnorm.BatchNorm2d",
    "torch.nn.modules.normalization.GroupNorm", "torch.nn.modules.normalization.LayerNorm",
    "torch.nn.modules.linear.Linear", "torch.nn.modules.linear.Identity",
    "torch.nn.modules.activation.ReLU", "torch.nn.modules.activation.ReLU6",
    "torch.nn.modules.activation.LeakyReLU", "torch.nn.modules.activation.PReLU",
    "torch.nn.modules.activation.Tanh", "torch.nn.modules.activation.Sigmoid",
    "torch.nn.modules.activation.Hardswish", "torch.nn.modules.activation.Hardsigmoid",
    "torch.nn.modules.pooling.MaxPool2d", "torch.nn.modules.pooling.AvgPool2d",
    "torch.nn.modules.pooling.AdaptiveAvgPool2d", "torch.nn.modules.dropout.Dropout",
    "torch.nn.modules.flatten.Flatten",
})


class UnsafePickleError(CnnzooError):
    """A pickle that needs something outside the allow-list, or is not a torch file at all."""


class ModuleStub:
    """Stand-in for a pickled object of an allowed class: its name and the state it had."""

    qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "ModuleStub":
        obj = super().__new__(cls)
        obj.__dict__["_stub_args"] = args
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        self.__dict__.update(state if isinstance(state, dict) else {"_state": state})

    def __repr__(self) -> str:
        return f"<stub of {self.qualname}>"


_STUB_CLASSES: dict[str, type] = {}


def _stub_class(qualname: str) -> type:
    if qualname not in _STUB_CLASSES:
        _STUB_CLASSES[qualname] = type(qualname.rsplit(".", 1)[-1], (ModuleStub,), {"qualname": qualname})
    return _STUB_CLASSES[qualname]


class _StorageMarker:
    """What `torch.FloatStorage` etc. resolve to: just the element type."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: tuple, stride: tuple, *_ignored: Any) -> torch.Tensor:
    # `storage` is a flat tensor (filled in later for the legacy format), possibly a slice of
    # a bigger one: as_strided counts the offset from the start of the underlying memory.
    return storage.as_strided(tuple(size), tuple(stride), storage.storage_offset() + offset)


def _rebuild_parameter(data: torch.Tensor, requires_grad: bool = True, *_ignored: Any) -> torch.Tensor:
    return data


def _rebuild_tensor_legacy(storage: torch.Tensor, offset: int, size: tuple, stride: tuple) -> torch.Tensor:
    return _rebuild_tensor(storage, offset, size, stride)


def _no_backend() -> None:
    """Old modules pickled their THNN backend object; it has no state worth keeping."""
    return None


_ALLOWED_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_tensor": _rebuild_tensor_legacy,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch.nn.parameter.Parameter": _rebuild_parameter,
    "torch.nn.backends.thnn._get_thnn_function_backend": _no_backend,
    "collections.OrderedDict": OrderedDict,
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    "torch.Size": tuple,
    "torch.device": str,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only allow-listed globals; storages come from `load_storage(pid)`."""

    def __init__(self, file: BinaryIO, *, source: str, load_storage: Callable[[tuple], torch.Tensor] | None = None):
        super().__init__(file, encoding="utf-8")
        self.source = source
        self._load_storage = load_storage

    def find_class(self, module: str, name: str) -> Any:
        # Protocol-2 pickles name Python 2 modules (`__builtin__.set`): map them as pickle does.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        qualname = f"{module}.{name}"
        if qualname in _ALLOWED_FUNCTIONS:
            return _ALLOWED_FUNCTIONS[qualname]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageMarker(_STORAGE_DTYPES[name])
        if qualname in ALLOWED_NN_CLASSES or module == "__main__":
            return _stub_class(qualname)
        raise UnsafePickleError(
            f"{self.source}: refusing to unpickle {qualname}: only tensors, OrderedDict, plain "
            "torch.nn layers and __main__ placeholders are allowed (anything else could run code)"
        )

    def persistent_load(self, pid: Any) -> Any:
        if isinstance(pid, tuple) and pid and pid[0] == "module":
            # Legacy files record (class, source file, source code) of each module class;
            # the class was already replaced by a stub, the source is never looked at.
            return pid[1]
        if isinstance(pid, tuple) and pid and pid[0] == "storage" and self._load_storage is not None:
            return self._load_storage(pid)
        raise UnsafePickleError(f"{self.source}: unexpected persistent id {str(pid)[:80]!r}")


def _dtype_of(storage_type: Any, source: str) -> torch.dtype:
    if isinstance(storage_type, _StorageMarker):
        return storage_type.dtype
    if isinstance(storage_type, torch.dtype):
        return storage_type
    raise UnsafePickleError(f"{source}: unknown storage type {storage_type!r}")


def safe_load(path: str | os.PathLike) -> Any:
    """Unpickle a torch file (zip or legacy format) through the restricted unpickler."""
    path = Path(path)
    if not path.is_file():
        raise UnsafePickleError(f"{path} does not exist")
    try:
        if zipfile.is_zipfile(path):
            return _load_zip(path)
        with open(path, "rb") as f:
            return _load_legacy(f, str(path))
    except UnsafePickleError:
        raise
    except Exception as err:  # a damaged record or stream, a malformed persistent id, a missing storage
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise UnsafePickleError(f"{path} is not a readable PyTorch checkpoint ({type(err).__name__}: {first})") from None


def _load_zip(path: Path) -> Any:
    try:
        check_torch_file(path)  # no record inflates past the file's size
    except LimitError as err:
        raise UnsafePickleError(str(err)) from None
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise UnsafePickleError(f"{path} is a zip file but not a PyTorch checkpoint (no data.pkl)")
        prefix = pkl[: -len("data.pkl")]
        byteorder = archive.read(f"{prefix}byteorder").decode() if f"{prefix}byteorder" in names else "little"
        if byteorder != "little":
            raise UnsafePickleError(f"{path}: big-endian checkpoints are not supported")
        cache: dict[str, torch.Tensor] = {}

        def load_storage(pid: tuple) -> torch.Tensor:
            _, storage_type, key, _location, numel = pid[:5]
            if key not in cache:
                dtype = _dtype_of(storage_type, str(path))
                raw = bytearray(archive.read(f"{prefix}data/{key}"))
                cache[key] = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
                found = cache[key].numel()
                if found != numel and dtype is not torch.uint8:
                    raise UnsafePickleError(f"{path}: storage {key} has {found} elements, expected {numel}")
            return cache[key]

        with archive.open(pkl) as f:
            return RestrictedUnpickler(io.BytesIO(f.read()), source=str(path), load_storage=load_storage).load()


def _load_legacy(f: BinaryIO, source: str) -> Any:
    def header() -> Any:
        try:
            return RestrictedUnpickler(f, source=source).load()
        except UnsafePickleError:
            raise
        except Exception as err:
            raise UnsafePickleError(f"{source} is not a PyTorch checkpoint ({type(err).__name__}: {err})") from None

    magic = header()
    if magic != LEGACY_MAGIC:
        raise UnsafePickleError(f"{source} is not a PyTorch checkpoint (no legacy magic number)")
    protocol = header()
    if protocol != LEGACY_PROTOCOL:
        raise UnsafePickleError(f"{source}: unsupported legacy protocol version {protocol}")
    sys_info = header()
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", True):
        raise UnsafePickleError(f"{source}: big-endian checkpoints are not supported")

    # The pickle is read twice: first with storages on the meta device (no memory) to learn
    # their declared sizes, which must fit in the bytes left in the file; then for real.
    start = f.tell()
    storages = _unpickle_body(f, source, device="meta")[1]
    _check_declared(f, storages, source)
    f.seek(start)
    obj, storages, keys = _unpickle_body(f, source, device="cpu")
    for key in keys:
        _read_legacy_storage(f, storages[key], storages[key].dtype, source=source, key=key)
    return obj


def _unpickle_body(f: BinaryIO, source: str, device: str) -> tuple[Any, dict[str, torch.Tensor], list]:
    """(object, {key: flat storage tensor}, storage keys in file order) of a legacy file's pickles."""
    storages: dict[str, torch.Tensor] = {}

    def load_storage(pid: tuple) -> torch.Tensor:
        _, storage_type, root_key, _location, numel, view_metadata = pid
        dtype = _dtype_of(storage_type, source)
        if root_key not in storages:
            storages[root_key] = torch.empty(numel, dtype=dtype, device=device)
        root = storages[root_key]
        if view_metadata is None:
            return root
        _view_key, offset, view_size = view_metadata
        return root.narrow(0, offset, view_size)

    obj = RestrictedUnpickler(f, source=source, load_storage=load_storage).load()
    keys = RestrictedUnpickler(f, source=source).load()
    if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(storages):
        raise UnsafePickleError(f"{source}: its storage list does not match the tensors it holds")
    return obj, storages, keys


def _check_declared(f: BinaryIO, storages: dict[str, torch.Tensor], source: str) -> None:
    here = f.tell()
    left = f.seek(0, os.SEEK_END) - here
    f.seek(here)
    declared = sum(8 + t.numel() * t.element_size() for t in storages.values())
    if declared > left:
        raise UnsafePickleError(f"{source}: its tensors declare {declared:,} bytes, but only {left:,} are left in the file")


def _read_legacy_storage(f: BinaryIO, target: torch.Tensor, dtype: torch.dtype, *, source: str, key: str) -> None:
    raw_count = f.read(8)
    if len(raw_count) != 8:
        raise UnsafePickleError(f"{source} is truncated (storage {key} is missing)")
    (count,) = struct.unpack("<q", raw_count)
    nbytes = count * target.element_size()
    if count != target.numel():
        raise UnsafePickleError(f"{source}: storage {key} has {count} elements, expected {target.numel()}")
    data = bytearray(f.read(nbytes))
    if len(data) != nbytes:
        raise UnsafePickleError(f"{source} is truncated (storage {key} is incomplete)")
    if nbytes:
        target.copy_(torch.frombuffer(data, dtype=dtype))


MAX_MODULE_DEPTH = 64  # nesting of a pickled module tree; a cycle or a deeper tree is refused
MAX_MODULES = 100_000  # modules in a pickled tree (shared sub-trees counted each time they appear)


def module_state_dict(obj: Any, prefix: str = "") -> "OrderedDict[str, torch.Tensor]":
    """The state dict of a stub tree, with the keys `nn.Module.state_dict()` would give."""
    if not isinstance(obj, ModuleStub):
        raise TypeError(f"expected a pickled module, got {type(obj).__name__}")
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    for name, stub in iter_modules(obj, prefix.rstrip(".") + "." if prefix else ""):
        attrs = stub.__dict__
        skip = set(attrs.get("_non_persistent_buffers_set") or ())
        for group in ("_parameters", "_buffers"):
            for key, tensor in (attrs.get(group) or {}).items():
                if tensor is not None and key not in skip:
                    state[f"{name}.{key}" if name else f"{key}"] = tensor
    return state


def iter_modules(obj: ModuleStub, prefix: str = "") -> list[tuple[str, ModuleStub]]:
    """(dotted name, stub) of a stub tree in definition order, the root first (named "").
    A module that contains itself, a tree deeper than MAX_MODULE_DEPTH or larger than MAX_MODULES is refused."""
    found: list[tuple[str, ModuleStub]] = []

    def visit(stub: ModuleStub, name: str, parents: tuple[int, ...]) -> None:
        if id(stub) in parents or len(parents) > MAX_MODULE_DEPTH or len(found) >= MAX_MODULES:
            raise UnsafePickleError(f"module {name or 'root'} contains itself, is nested more than "
                                    f"{MAX_MODULE_DEPTH} levels deep or is one module too many ({MAX_MODULES:,})")
        found.append((name, stub))
        children = stub.__dict__.get("_modules") or {}
        if not isinstance(children, dict):
            raise UnsafePickleError(f"module {name or 'root'} has {type(children).__name__} sub-modules")
        for key, child in children.items():
            if isinstance(child, ModuleStub):
                visit(child, f"{name}.{key}" if name else str(key), (*parents, id(stub)))

    visit(obj, prefix.rstrip("."), ())
    return found
