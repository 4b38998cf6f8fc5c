"""Embedding tables as Parquet files: written in chunks, atomically; read back with checks.

``imageprism embed PATH... --out embeddings.parquet`` writes with :func:`write_parquet`;
``imageprism dedup --from`` and ``imageprism index build --from`` read with
:func:`read_parquet` and :func:`table_embeddings`. The schema is the one of
:mod:`imageprism.columnar.schema` (versioned in the file metadata).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing
from typing import TYPE_CHECKING

import numpy as np

from imageprism._files import atomic_file
from imageprism._prism import ImagePrism
from imageprism._results import Failure
from imageprism._workers import ChunkResult, Outcome, check_workers
from imageprism.columnar.embed import ArrowEmbedder, embeddings_from_table
from imageprism.columnar.schema import VERSION_KEY, pyarrow
from imageprism.errors import ConfigError, ImageLoadError, InputError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["TableInputs", "read_parquet", "table_embeddings", "table_keep_order", "write_parquet"]

#: inputs embedded (and held in memory) per Parquet row group
CHUNK_SIZE = 256


def write_parquet(
    embedder: ArrowEmbedder,
    paths: Sequence[str],
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    chunk_size: int = CHUNK_SIZE,
    on_chunk: Callable[[int], None] | None = None,
    workers: int | None = 1,
    progress: bool | None = False,
) -> int:
    """Embed ``paths`` into the Parquet file ``out``, ``chunk_size`` inputs per row group; returns the failures.

    One row per path, in order (failed inputs are rows with ``error`` set). The outcomes
    come in order from the path of :meth:`ImagePrism.embed_batch <imageprism.ImagePrism.embed_batch>`:
    ``workers`` processes (``None``: every core; ``1``: this process only; the table is
    the same either way), files unchanged since a previous run answered from a persistent
    cache's file-identity records. ``progress``: a bar on stderr as there
    (``None``: only for long runs on a terminal; default: none). Memory holds one row group
    and the pool's window. The file appears complete at the end or not at all (temporary
    file in the same folder, fsync, rename); an existing ``out`` is refused unless
    ``overwrite``. ``on_chunk(rows_written)`` is called after each row group.
    """
    pyarrow()  # a missing extra fails before any work
    import pyarrow.parquet as pq

    workers = check_workers(workers)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigError(f"chunk_size={chunk_size!r} is invalid; use a positive number of rows per row group")
    schema = embedder.schema  # learnt before any worker starts
    failures = 0
    outcomes = embedder.prism._embedded_in_order(paths, workers=workers, progress=progress)
    # closing: a failed write stops the workers at once, not when the generator is collected
    with closing(outcomes), atomic_file(out, overwrite=overwrite) as handle, pq.ParquetWriter(handle, schema) as writer:
        for start, group in _row_groups(outcomes, chunk_size):
            table = embedder._table(paths[start : start + len(group)], group)
            failures += table.num_rows - table.column("error").null_count
            writer.write_table(table)
            if on_chunk is not None:
                on_chunk(start + table.num_rows)
    return failures


def _row_groups(chunks: Iterator[ChunkResult], size: int) -> Iterator[tuple[int, list[Outcome]]]:
    """``(first row, outcomes)`` of ``size`` rows at a time (the last may be shorter), from chunks in input order."""
    group: list[Outcome] = []
    start = 0
    for chunk in chunks:
        for i, outcome in chunk:
            assert i == start + len(group), f"outcome {i} out of order (expected {start + len(group)})"
            group.append(outcome)
            if len(group) == size:
                yield start, group
                start, group = start + size, []
    if group:
        yield start, group


def read_parquet(path: str | os.PathLike[str]) -> pa.Table:
    """The embedding table in the Parquet file ``path``; :class:`InputError` unless it is one of ours."""
    pa = pyarrow()
    import pyarrow.parquet as pq

    name = os.fspath(path)
    try:
        mode = os.stat(name).st_mode
    except OSError as exc:
        raise InputError(f"{name!r} cannot be read ({exc.strerror}); give the Parquet file written by 'imageprism embed --out'") from None
    if not stat.S_ISREG(mode):
        raise InputError(f"{name!r} is not a regular file; give the Parquet file written by 'imageprism embed --out'")
    try:
        schema = pq.read_schema(name)
        if VERSION_KEY not in (schema.metadata or {}):
            raise InputError(
                f"{name!r} is a Parquet file but not an imageprism embedding table (no {VERSION_KEY.decode()} "
                "metadata); write one with 'imageprism embed PATH... --out FILE.parquet'"
            )
        table = pq.read_table(name)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(
            f"{name!r} is not a readable Parquet file ({type(exc).__name__}: {str(exc)[:200]}); "
            "give the file written by 'imageprism embed --out'"
        ) from None
    return table


class TableInputs:
    """The inputs of an embedding table, as ``embed_batch`` would return them: one entry per row."""

    def __init__(self, paths: list[str], embeddings: Sequence[Mapping[str, np.ndarray | None] | None],
                 failures: Sequence[Failure]) -> None:
        self.paths = paths
        self.embeddings = embeddings
        self.failures = failures


def table_embeddings(table: pa.Table, prism: ImagePrism, *, source: str) -> TableInputs:
    """Per-row embeddings of ``table`` for ``prism``; :class:`ConfigError` unless they were made with its dimensions.

    ``source`` names the table in messages (its file name). Error rows become failures.
    """
    back = embeddings_from_table(table)
    made = {f.name: f.token for f in back.fields}
    wanted = {name: plugin.cache_token for name, plugin in prism.plugins.items()}
    if made != wanted:
        differ = sorted(n for n in made.keys() & wanted.keys() if made[n] != wanted[n])
        detail = (f"the {', '.join(differ)} configuration differs (hash mode, model or settings)" if differ and
                  made.keys() == wanted.keys() else
                  f"it holds the dimensions {', '.join(made) or 'none'}, the selection is {', '.join(wanted)}")
        raise ConfigError(
            f"{source!r} was embedded with other settings: {detail}; select the same ones as at embed time "
            f"(--dimensions {','.join(made)} with the same --hash/--model/--profile), or re-embed with "
            f"'imageprism embed PATH... --out {source} --force' and the settings you want"
        )
    paths = [p if p is not None else f"row {i}" for i, p in enumerate(table.column("path").to_pylist())]
    embeddings: list[Mapping[str, np.ndarray | None] | None] = [None] * table.num_rows
    for k, row in enumerate(back.rows.tolist()):
        embeddings[row] = {name: values[k] for name, values in back.embeddings.items()}
    failures = [Failure(i, paths[i], ImageLoadError(_message(text))) for i, text in sorted(back.errors.items())]
    return TableInputs(paths, tuple(embeddings), tuple(failures))


def _message(error: str) -> str:
    """An ``error`` cell without its ``ErrorType: `` prefix (the text the direct run reports)."""
    kind, sep, message = error.partition(": ")
    return message if sep and kind.isidentifier() else error


def table_keep_order(table: pa.Table, keep: str) -> np.ndarray:
    """:func:`~imageprism._keep.keep_order` from the table's columns (no file is read again).

    ``largest``: most pixels, then largest file; ``newest``/``oldest``: by ``mtime``;
    ``first``: row order. Failed rows count as 0.
    """
    n = table.num_rows
    if keep == "first":
        return np.arange(n, dtype=np.int64)
    if keep == "largest":
        pixels = [(w or 0) * (h or 0) for w, h in zip(table.column("width").to_pylist(), table.column("height").to_pylist())]
        sizes = [s or 0 for s in table.column("file_size").to_pylist()]
        return np.array(sorted(range(n), key=lambda i: (-pixels[i], -sizes[i])), dtype=np.int64)
    if keep not in ("newest", "oldest"):
        raise ConfigError(f"keep={keep!r} is invalid; use largest, newest, oldest or first")
    times = table.column("mtime").cast(pyarrow().int64()).fill_null(0).to_numpy()
    sign = -1 if keep == "newest" else 1
    return np.array(sorted(range(n), key=lambda i: sign * int(times[i])), dtype=np.int64)
