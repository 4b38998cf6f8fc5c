"""Saving an index's columns as segments, and loading them back (see :mod:`imageprism._index_files`).

Items are numbered on disk by *row*: the segments' rows end to end, removed rows
included. The items of an index in memory are its saved items (in row order,
:attr:`Saved.rows` gives each one's row), then the items added since. A save writes

* the items added since as one new segment, merged with the trailing segments
  that are not at least twice its size (so segment sizes grow geometrically: a row
  is rewritten about log2(n) times over its life, a save costs the new rows, and
  there are at most about log2(n) segments);
* the rows removed since as a small ``deleted`` file (rewritten whole only when a
  merge drops rows or there are many such files);
* everything as one segment when more than a quarter of the rows are removed, when
  the target directory holds another index, or for the first save.

Column data goes through :meth:`Column.arrays() <imageprism._search.columns.Column.arrays>`
and :meth:`Column.restore`, so whatever arrays a column keeps are saved per segment.
A searcher's trained state (:meth:`Searcher.state <imageprism._search.topk.Searcher.state>`,
the approximate index's cells and codebook) is written by the first save that has it and
named by later manifests while it is unchanged (a digest of it is in the file names); a
state trained anew is written again.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imageprism._index_files import (
    MANIFEST,
    Manifest,
    Segment,
    Writer,
    load_array,
    read_deleted,
    read_ids,
    read_manifest,
    segment_arrays,
)
from imageprism._search.columns import Column, plugin_column
from imageprism._search.topk import Searcher
from imageprism.dimensions import DimensionPlugin
from imageprism.errors import IndexConflictError, IndexFormatError, InputError

__all__ = ["Saved", "load_columns", "load_states", "save_columns"]

#: more ``deleted`` files than this are merged into one
MAX_DELETED_FILES = 16
_NONE = np.empty(0, np.int64)


@dataclass
class Saved:
    """What an index in memory holds of its directory's committed generation."""

    folder: Path
    manifest: Manifest
    rows: np.ndarray  # row of each saved item still in the index, increasing (int64)
    deleted: np.ndarray  # every removed row, committed or not, sorted (int64)
    pending: np.ndarray  # rows removed since the commit (int64)

    def remove(self, keep: np.ndarray) -> None:
        """Forget the saved items where ``keep`` (over all items in memory) is false."""
        saved = keep[: len(self.rows)]
        gone = self.rows[~saved]
        if len(gone):
            self.deleted = np.union1d(self.deleted, gone)
            self.pending = np.concatenate([self.pending, gone])
            self.rows = self.rows[saved]


def _file_stem(generation: int, dimension: str) -> str:
    return f"g{generation:06d}.{re.sub(r'[^A-Za-z0-9_-]', '_', dimension)}"


def _merge_start(manifest: Manifest, added: int) -> int:
    """How many leading segments a save keeps (the rest merge into its new segment)."""
    segments, tail = manifest.segments, added
    j = len(segments)
    while j > 0 and segments[j - 1].rows < 2 * tail:
        tail += segments[j - 1].rows
        j -= 1
    return j


def save_columns(
    folder: Path,
    columns: Mapping[str, Column],
    plugins: Mapping[str, DimensionPlugin],
    ids: Sequence[str],
    header: Manifest,
    saved: Saved | None,
    states: Mapping[str, Mapping[str, np.ndarray]],
) -> Saved:
    """Commit the index's state to ``folder``; ``header`` gives the settings (its segments are ignored).

    ``states``: each dimension's searcher state (empty: none), saved beside the segments.
    """
    n = len(ids)
    with Writer(folder) as writer:
        current = _current(folder)
        ours = saved is not None and current is not None and _same(saved.folder, folder)
        if ours and saved is not None and current is not None and current.generation != saved.manifest.generation:
            raise IndexConflictError(
                f"index {str(folder)!r} was saved by another writer (generation {current.generation}) after this one "
                f"was loaded (generation {saved.manifest.generation}); load it again and repeat the changes"
            )
        if not ours or saved is None or current is None or current.version != header.version:
            generation = (current.generation if current else 0) + 1
            return _write(writer, header, columns, plugins, ids, start=0, keep=[], deleted=np.empty(0, np.int64),
                          rows=np.empty(0, np.int64), generation=generation,
                          previous=current.names() if current else set(), ann=_ann(writer, generation, states, {}))
        base, n_saved = saved.manifest, len(saved.rows)
        ann = _ann(writer, base.generation + 1, states, base.ann)
        if n == n_saved and not len(saved.pending) and ann == base.ann:
            return saved
        j = _merge_start(base, n - n_saved)
        if len(saved.deleted) * 4 > base.rows + n - n_saved:
            j = 0  # compaction: more than a quarter of the rows are gone
        kept = base.segments[:j]
        first = sum(s.rows for s in kept)  # the first row the new segment holds
        p0 = int(np.searchsorted(saved.rows, first))
        deleted = saved.deleted[saved.deleted < first]
        return _write(writer, header, columns, plugins, ids, start=p0, keep=kept, deleted=deleted,
                      rows=saved.rows[:p0], generation=base.generation + 1, previous=base.names(), ann=ann, saved=saved)


def _ann(
    writer: Writer, generation: int, states: Mapping[str, Mapping[str, np.ndarray]], committed: Mapping[str, dict[str, str]]
) -> dict[str, dict[str, str]]:
    """The state files of each dimension: the committed ones while the state is the same, else written now.

    A state's files carry a digest of its arrays in their names, so an unchanged state
    (the usual case: it is trained once) is recognised without reading the files back.
    """
    files = {}
    for name, state in states.items():
        if not state:
            continue
        digest = hashlib.blake2b(digest_size=8)
        for key in sorted(state):
            digest.update(key.encode() + b"\0" + np.ascontiguousarray(state[key]).tobytes())
        tag = digest.hexdigest()
        old = committed.get(name, {})
        if set(old) == set(state) and all(f".ann-{tag}-" in file for file in old.values()):
            files[name] = dict(old)
        else:
            files[name] = {
                key: writer.array(f"{_file_stem(generation, name)}.ann-{tag}-{key}.npy", array) for key, array in state.items()
            }
    return files


def _write(
    writer: Writer,
    header: Manifest,
    columns: Mapping[str, Column],
    plugins: Mapping[str, DimensionPlugin],
    ids: Sequence[str],
    *,
    start: int,
    keep: list[Segment],
    deleted: np.ndarray,
    rows: np.ndarray,
    generation: int,
    previous: set[str],
    ann: dict[str, dict[str, str]],
    saved: Saved | None = None,
) -> Saved:
    """Write items ``start..`` as one new segment after ``keep``, with ``deleted`` rows, and commit."""
    n, stem = len(ids), f"g{generation:06d}"
    segments = list(keep)
    if n > start:
        files = {}
        for name, column in columns.items():
            tail = column if start == 0 else plugin_column(
                plugins[name], column.take(np.arange(start, n)), unit_vectors=True
            )
            files[name] = {
                key: writer.array(f"{_file_stem(generation, name)}.{key}.npy", array)
                for key, array in tail.arrays().items()
            }
        segments.append(Segment(n - start, writer.json(f"{stem}.ids.json", list(ids[start:])), files))
    deleted_files: list[str] = []
    if len(deleted):
        committed = [] if saved is None else saved.manifest.deleted
        if saved is not None and len(keep) == len(saved.manifest.segments) and len(committed) < MAX_DELETED_FILES:
            pending = saved.pending  # no segment rewritten: the committed files stay, plus the rows removed since
            deleted_files = [*committed, writer.array(f"{stem}.deleted.npy", pending)] if len(pending) else committed
        else:
            deleted_files = [writer.array(f"{stem}.deleted.npy", deleted)]
    first = sum(s.rows for s in keep)
    manifest = Manifest(
        generation, n, header.dimensions, header.weights, header.missing, header.profile, segments, deleted_files,
        exact=header.exact, ann=ann,
    )
    writer.commit(manifest, previous)
    new_rows = np.arange(first, first + n - start, dtype=np.int64)
    return Saved(writer.folder, manifest, np.concatenate([rows, new_rows]), deleted.astype(np.int64), _NONE)


def _current(folder: Path) -> Manifest | None:
    """The committed manifest in ``folder`` (``None``: none, or too damaged to build on)."""
    if not (folder / MANIFEST).exists():
        return None
    try:
        return read_manifest(folder)
    except IndexFormatError:
        return None


def _same(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def load_columns(folder: Path, manifest: Manifest, columns: Mapping[str, Column]) -> tuple[list[str], Saved]:
    """Restore the committed items into empty ``columns``; returns their ids and the saved state."""
    ids: list[str] = []
    for i, segment in enumerate(manifest.segments):
        ids.extend(read_ids(folder, segment))
        for name, column in columns.items():
            try:
                column.restore(segment_arrays(folder, segment, name))
            except (KeyError, InputError) as exc:
                if isinstance(exc, IndexFormatError):
                    raise
                raise IndexFormatError(
                    f"index {str(folder)!r} is damaged: segment {i} has unusable {name!r} arrays ({exc})"
                ) from None
            if len(column) != len(ids):
                raise IndexFormatError(
                    f"index {str(folder)!r} is damaged: {name!r} holds {len(column)} items after segment {i}, "
                    f"expected {len(ids)}"
                )
    keep = read_deleted(folder, manifest)
    if not keep.all():
        for column in columns.values():
            column.keep(keep)
        ids = [item for item, kept in zip(ids, keep.tolist()) if kept]
    if len(set(ids)) != len(ids):
        raise IndexFormatError(f"index {str(folder)!r} is damaged: an id appears twice")
    rows = np.flatnonzero(keep).astype(np.int64)
    return ids, Saved(folder, manifest, rows, np.flatnonzero(~keep).astype(np.int64), _NONE)


def load_states(folder: Path, manifest: Manifest, searchers: Mapping[str, Searcher]) -> None:
    """Give each searcher that keeps a state the one saved for its dimension."""
    for name, files in manifest.ann.items():
        try:
            searchers[name].restore_state({key: load_array(folder, file) for key, file in files.items()})
        except InputError as exc:
            if isinstance(exc, IndexFormatError):
                raise
            raise IndexFormatError(f"index {str(folder)!r} is damaged: unusable {name!r} search state ({exc})") from None
