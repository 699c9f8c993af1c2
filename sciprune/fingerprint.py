"""Content hashes of a case's input data: what every stored result of ``run`` and ``sweep`` is keyed on.

A result computed from one data file must never be returned for another, even when the file is
replaced in place under the same name. :func:`data_fingerprint` hashes what a case reads:

* ``pdebench`` and classification ``.h5``/``.hdf5``: sha256 of the file's bytes;
* a directory of IDX files: sha256 over the name and sha256 of every file present under a name the
  loader reads (train and t10k images and labels, plain or ``.gz``): a superset of what it reads;
* the built-in ``"digits"``: sha256 of the arrays themselves (images as float64, labels as int64,
  with their shapes), as scikit-learn returns them; the scikit-learn version is recorded beside the
  hash (in :attr:`Fingerprint.detail`), not hashed: the numbers depend on the arrays, not the version.

Hashing a large file is slow, so file hashes are cached in a small JSON file (normally in the study's
output folder, written atomically under the study lock) keyed by the file's real path, size,
modification and change times (ns) and inode (the change time cannot be set back, so even a copy that
keeps the old modification time is noticed). A file modified or changed less than :data:`RACY_SECONDS`
before it was hashed is not cached: its time stamps could not tell a second change within the file system's
clock resolution apart (git's "racy" rule). A damaged or unreadable cache is ignored and rewritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import DataSpec
from .errors import DataFormatError, SciPruneError

__all__ = ["Fingerprint", "data_fingerprint", "changed_files", "check_unchanged", "file_signature", "HashCache", "RACY_SECONDS"]

#: Files modified this recently are hashed but their hash is not cached.
RACY_SECONDS = 2.0


@dataclass(frozen=True)
class Fingerprint:
    """The content hash of a case's input data.

    ``sha256``: one hex digest for all of it; ``label``: what was hashed, for messages (a path or
    ``'digits'``); ``files``: real path -> stat signature of each hashed file (to notice a change while
    a study runs); ``detail``: JSON-able facts stored with results (files and their hashes, versions).
    """

    sha256: str
    label: str
    files: dict[str, tuple] = field(default_factory=dict)
    detail: dict = field(default_factory=dict)

    def short(self) -> str:
        return self.sha256[:12]


def file_signature(path: str | os.PathLike) -> tuple:
    """(size, mtime_ns, ctime_ns, inode) of ``path``: changes whenever its contents may have."""
    st = os.stat(path)
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _sha256_file(path: str, *, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class HashCache:
    """sha256 of files by (real path, size, mtime_ns, ctime_ns, inode), kept in a JSON file.

    ``path=None`` keeps nothing between calls. :meth:`save` writes the file atomically; it is called by
    the process holding the study lock, the only writer of that folder.
    """

    def __init__(self, path: str | os.PathLike | None) -> None:
        self.path = Path(path) if path is not None else None
        self.entries: dict[str, dict] = {}
        self.dirty = False
        if self.path is not None:
            try:
                raw = json.loads(self.path.read_text(encoding="utf-8"))
                if isinstance(raw, dict):
                    self.entries = {k: v for k, v in raw.items() if isinstance(k, str) and _valid_entry(v)}
            except (OSError, ValueError, UnicodeDecodeError):
                self.entries = {}  # damaged or absent: ignored, rewritten on save

    def sha256(self, path: str | os.PathLike) -> tuple[str, str, tuple]:
        """(real path, sha256, signature) of ``path``, hashed only when the cache has no fresh entry."""
        real = os.path.realpath(path)
        sig = file_signature(real)
        hit = self.entries.get(real)
        if hit is not None and tuple(hit["signature"]) == sig:
            return real, hit["sha256"], sig
        digest = _sha256_file(real)
        if file_signature(real) == sig and time.time() - max(sig[1], sig[2]) / 1e9 >= RACY_SECONDS:
            self.entries[real] = {"signature": list(sig), "sha256": digest}
            self.dirty = True
        return real, digest, sig

    def save(self) -> None:
        """Write the cache atomically if it changed; a failure to write it is not an error."""
        if self.path is None or not self.dirty:
            return
        from .outputs import write_bytes_atomic

        try:
            write_bytes_atomic(self.path, json.dumps(self.entries, sort_keys=True).encode())
            self.dirty = False
        except OSError:
            pass  # only a cache: the next start hashes again


def _valid_entry(v: object) -> bool:
    return (isinstance(v, dict) and isinstance(v.get("sha256"), str) and len(v["sha256"]) == 64
            and isinstance(v.get("signature"), list) and len(v["signature"]) == 4
            and all(isinstance(x, int) for x in v["signature"]))


def _combine(parts: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _files_fingerprint(label: str, paths: dict[str, str], cache: HashCache, kind: str) -> Fingerprint:
    """One file (``paths`` = {name: path}): its own sha256; several: a hash over name -> sha256."""
    hashes, sigs, detail = {}, {}, {}
    for name, p in paths.items():
        real, digest, sig = cache.sha256(p)
        hashes[name], sigs[real], detail[name] = digest, sig, {"path": real, "sha256": digest}
    sha = next(iter(hashes.values())) if len(hashes) == 1 else _combine(hashes)
    return Fingerprint(sha, label, sigs, {"kind": kind, "files": detail})


#: The IDX file names a classification directory is read from (:func:`sciprune.data.load_mnist_idx`).
IDX_NAMES = tuple(
    f"{prefix}-{kind}{sep}idx{dims}-ubyte{gz}"
    for prefix in ("train", "t10k") for kind, dims in (("images", 3), ("labels", 1))
    for sep in ("-", ".") for gz in ("", ".gz")
)


def _idx_files(directory: Path) -> dict[str, str]:
    """Every IDX file of ``directory`` the loader may read (all candidate names present: a superset
    of those it picks, so any change to what it reads changes the hash)."""
    files = {name: str(directory / name) for name in IDX_NAMES if (directory / name).is_file()}
    if not any(name.startswith("train-") for name in files):
        raise DataFormatError(f"data.source: {directory}: no file '{IDX_NAMES[0]}' or '{IDX_NAMES[1]}'; "
                              "expected the standard MNIST / Fashion-MNIST IDX file names")
    return files


def _digits_fingerprint() -> Fingerprint:
    import sklearn

    from .data.classification import load_digits_default

    images, labels = load_digits_default()
    h = hashlib.sha256()
    for a in (np.ascontiguousarray(images, dtype=np.float64), np.ascontiguousarray(labels, dtype=np.int64)):
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return Fingerprint(h.hexdigest(), "digits", {},
                       {"kind": "arrays", "source": "sklearn.datasets.load_digits", "sklearn": sklearn.__version__})


def data_fingerprint(spec: DataSpec, *, cache: HashCache | None = None) -> Fingerprint:
    """The content hash of the data ``spec`` reads (the file must exist: generate it first)."""
    cache = cache or HashCache(None)
    if spec.kind == "pdebench":
        path = Path(spec.file)
        if not path.is_file():
            raise DataFormatError(f"data.file: {path} is not a file" if path.exists() else f"data.file: {path}: no such file")
        return _files_fingerprint(str(path), {"file": str(path)}, cache, "file")
    source = spec.source
    if source is None or str(source) == "digits":
        return _digits_fingerprint()
    path = Path(source)
    if path.is_dir():
        return _files_fingerprint(str(path), _idx_files(path), cache, "idx")
    if path.is_file():
        return _files_fingerprint(str(path), {"file": str(path)}, cache, "file")
    if path.exists():
        raise DataFormatError(f"data.source: {path} is neither a regular file nor a folder")
    raise DataFormatError(f"data.source: {path}: no such file or directory")


def check_unchanged(fp: Fingerprint) -> None:
    """Raise :class:`SciPruneError` if a file of ``fp`` changed since it was hashed: a study that read it
    meanwhile may mix old and new contents, so its results are not combined (the results stored
    during it are keyed on the old hash and are recomputed by the next start)."""
    changed = changed_files(fp)
    if changed:
        raise SciPruneError(f"data file {changed[0]} changed while the study ran (it was hashed as sha256 "
                            f"{fp.short()}..); results.nc was not written; run the study again to recompute")


def changed_files(fp: Fingerprint) -> list[str]:
    """The files of ``fp`` whose signature is no longer the one they were hashed with."""
    out = []
    for real, sig in fp.files.items():
        try:
            now = file_signature(real)
        except OSError:
            now = None
        if now != sig:
            out.append(real)
    return out
