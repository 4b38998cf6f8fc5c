"""A search index over a catalogue of images: top-k matches of a query, exact.

An :class:`ImageIndex` keeps ids and persistence; the search itself is the search
layer's: one column per dimension of its :class:`~imageprism.ImagePrism`, typed by
the plugin's declared :class:`~imageprism.dimensions.Layout`
(:mod:`imageprism._search.columns`; vectors are stored with unit length, a vector
further than ``1e-4`` from unit length being L2-normalised first: cosine scores do
not change), each with a searcher (:mod:`imageprism._search.topk`).

**Exactness.** A query gives every item a *fast* score: for one dimension, the
searcher's top-``m``; for a blend, every item's fast score on each weighted
dimension, blended with :meth:`Blend.scores <imageprism._blend.Blend.scores>` (the
arithmetic of :func:`~imageprism._blend.blend`). Fast and exact scores differ by at most the
searcher's rounding bound ``e`` (float32 inner products of near-unit vectors:
``d * 2**-23 + 2.5e-4``; packed bits: ``1e-9``), so every item whose exact score
reaches the ``k``-th best has a fast score within ``2e`` of the ``k``-th best fast
score: those items are the candidates (``m`` grows until no item left out can be
one). Candidates are scored exactly (:meth:`Column.query_scores
<imageprism._search.columns.Column.query_scores>`, the arithmetic dedup uses),
blended, and ranked, ties broken by insertion order. So the hits are exactly the top
``k``. Each hit reports the plugin's own scores, the numbers :meth:`ImagePrism.compare
<imageprism.ImagePrism.compare>` gives (equal to the ranking scores up to the last bit
of float rounding). :meth:`ImageIndex.remove` drops items from every column.

**Files.** :meth:`ImageIndex.save` commits a directory of segments (one ``.npy``
file per column array, read back with ``allow_pickle=False``, and a JSON id list
each) named by ``manifest.json`` (format version, generation, imageprism version,
dimensions with their kind and ``cache_token``, weights, missing policy, profile),
which is replaced atomically: :mod:`imageprism._index_files` (format, checks,
crash safety) and :mod:`imageprism._index_store` (incremental saves). :meth:`ImageIndex.load`
checks every file and field, and that each dimension's ``cache_token`` matches the
``ImagePrism`` used for queries: embeddings from another model or configuration are refused.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from imageprism._blend import Blend
from imageprism._cache import EmbeddingCache
from imageprism._image import ImageInput, describe_input
from imageprism._index_files import FORMAT_VERSION, MANIFEST, Manifest, is_leftover, read_manifest
from imageprism._index_store import Saved, load_columns, load_states, save_columns
from imageprism._prism import ImagePrism
from imageprism._profiles import load_profile, normalize_weights
from imageprism._results import Failure, SearchHit
from imageprism._search.ann import Exact, check_exact
from imageprism._search.columns import Column, plugin_column
from imageprism._search.topk import Searcher, searcher_for, top_positions
from imageprism._selection import build_plugins, resolve_blend
from imageprism._types import Dimension, Embeddings, OnError, Profile
from imageprism._video import embed_inputs, is_video
from imageprism.dimensions import DimensionPlugin, known_names, parse_dimension
from imageprism.errors import ConfigError, ImagePrismError, IndexFormatError, InputError

__all__ = ["FORMAT_VERSION", "ImageIndex", "SearchHit", "saved_prism"]



# -- the index ------------------------------------------------------------------------


class ImageIndex:
    """Embeddings of a catalogue of images, searchable by similarity to a query image.

    Args:
        prism: the :class:`~imageprism.ImagePrism` whose dimensions are indexed and
            which embeds added and query images (default: ``ImagePrism()``, hash only).
        exact: ``True`` (default): every query scans every item, the hits are exactly
            the top ``k``. ``False``, or ``"auto"`` (from 50,000 items): a query ranked
            by one vector dimension takes its candidates from an approximate index
            (IVF-PQ, :class:`~imageprism._search.topk.AnnScan`), re-scored exactly; a
            true top-``k`` item can be missed (recall@10 measured in the README).
            Hashes, faces and blends of several dimensions are always scanned exactly.

    One index may be shared by several threads: adds, searches and saves take a
    lock, so they run one at a time (embedding, outside the lock, overlaps).

    >>> import numpy as np
    >>> index = ImageIndex()
    >>> ramp = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))
    >>> index.add([ramp, ramp.T, 255 - ramp], ids=["ramp", "transposed", "inverted"])
    ()
    >>> [hit.id for hit in index.search(ramp, k=2)]
    ['ramp', 'transposed']
    """

    def __init__(self, prism: ImagePrism | None = None, *, exact: Exact = True) -> None:
        self.prism = prism if prism is not None else ImagePrism()
        self.exact = check_exact(exact)
        self._plugins: dict[str, DimensionPlugin] = dict(self.prism.plugins)
        self._columns: dict[str, Column] = {
            name: plugin_column(plugin, unit_vectors=True) for name, plugin in self._plugins.items()
        }
        self._searchers: dict[str, Searcher] = {name: searcher_for(c, exact=self.exact) for name, c in self._columns.items()}
        self._ids: list[str] = []
        self._positions: dict[str, int] = {}
        self._saved: Saved | None = None  # what the directory last saved to / loaded from holds
        self._lock = threading.RLock()  # searches read faiss' memory without a copy: no add meanwhile

    # -- building -------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        images: Iterable[ImageInput],
        *,
        prism: ImagePrism | None = None,
        ids: Sequence[str] | None = None,
        fps: float = 1.0,
        on_error: OnError = "raise",
        exact: Exact = True,
    ) -> ImageIndex:
        """A new index holding ``images`` (see :meth:`add`); failures raise unless ``on_error="skip"``."""
        index = cls(prism, exact=exact)
        index.add(images, ids=ids, fps=fps, on_error=on_error)
        return index

    def add(
        self,
        images: Iterable[ImageInput],
        *,
        ids: Sequence[str] | None = None,
        fps: float = 1.0,
        on_error: OnError = "raise",
        workers: int | None = 1,
    ) -> tuple[Failure, ...]:
        """Embed ``images`` and add them; returns the inputs that failed (``on_error="skip"``).

        Each item's id is ``ids[i]`` if given, else the path (``str`` or
        ``os.PathLike`` inputs); other inputs need ``ids``. Ids are unique within
        an index. A path with a video extension (see :mod:`imageprism._video`) adds
        its frames sampled at ``fps`` per second, with ids ``"<id>@<seconds>s"``
        (e.g. ``"clip.mp4@2.50s"``). Nothing is added if an error is raised.
        ``workers``: processes embedding in parallel, as for
        :meth:`ImagePrism.embed_batch <imageprism.ImagePrism.embed_batch>`.
        """
        if on_error not in ("raise", "skip"):
            raise InputError(f"on_error={on_error!r} is invalid; use 'raise' or 'skip'")
        items = list(images)
        if ids is not None:
            ids = list(ids)
            if len(ids) != len(items) or not all(isinstance(i, str) for i in ids):
                raise InputError(f"ids must be {len(items)} strings, one per input; got {len(ids)} values")
        names = [self._default_id(item, i, ids) for i, item in enumerate(items)]
        embedded = embed_inputs(self.prism, items, names, fps=fps, on_error=on_error, workers=workers)
        present = [(e, embedded.labels[j]) for j, e in enumerate(embedded.embeddings) if e is not None]
        self.add_embeddings([e for e, _ in present], ids=[label for _, label in present])
        return tuple(dataclasses.replace(f, index=embedded.origins[f.index]) for f in embedded.failures)

    def _default_id(self, item: object, i: int, ids: Sequence[str] | None) -> str:
        if ids is not None:
            return ids[i]
        if isinstance(item, (str, os.PathLike)):
            return os.fspath(item)
        raise InputError(f"input {i} ({describe_input(item)}) has no path to serve as its id; pass ids=[...]")

    def add_embeddings(self, embeddings: Sequence[Embeddings], *, ids: Sequence[str]) -> None:
        """Add precomputed embeddings (from :meth:`ImagePrism.embed <imageprism.ImagePrism.embed>`
        of an ``ImagePrism`` configured like this index's), one mapping per item."""
        embeddings, ids = list(embeddings), list(ids)
        if len(embeddings) != len(ids):
            raise InputError(f"got {len(embeddings)} embeddings but {len(ids)} ids; give one id per embedding")
        with self._lock:
            self._add_embeddings(embeddings, ids)

    def _add_embeddings(self, embeddings: list[Embeddings], ids: list[str]) -> None:
        self._check_new_ids(ids)
        if not ids:
            return
        values = {}
        for name, column in self._columns.items():
            values[name] = [_entry(e, name, i) for i, e in enumerate(embeddings)]
            if column.kind != "other":
                missing = [ids[i] for i, v in enumerate(values[name]) if v is None]
                if missing:
                    raise InputError(f"{len(missing)} items have no {name!r} embedding (first: {missing[0]!r})")
        try:
            for name, column in self._columns.items():
                column.append(values[name])
        except ImagePrismError:
            for column in self._columns.values():
                column.truncate(len(self._ids))
            raise
        finally:
            self._sync()
        self._positions.update((name, len(self._ids) + i) for i, name in enumerate(ids))
        self._ids.extend(ids)

    def _check_new_ids(self, ids: Sequence[str]) -> None:
        seen: set[str] = set()
        for name in ids:
            if not isinstance(name, str) or not name:
                raise InputError(f"ids must be non-empty strings, got {name!r}")
            if name in self._positions or name in seen:
                raise InputError(f"id {name!r} is already in the index; ids must be unique (pass ids=[...] to rename)")
            seen.add(name)

    # -- inspection -------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._positions

    @property
    def ids(self) -> tuple[str, ...]:
        """Item ids, in insertion order."""
        return tuple(self._ids)

    @property
    def dimensions(self) -> tuple[str, ...]:
        """The indexed dimensions."""
        return tuple(self._columns)

    def embedding(self, item_id: str) -> dict[str, np.ndarray | None]:
        """The stored embeddings of one item (a vector not of unit length comes back normalised)."""
        with self._lock:
            if item_id not in self._positions:
                raise InputError(f"id {item_id!r} is not in this index of {len(self)} items")
            position = np.array([self._positions[item_id]])
            return {name: column.take(position)[0] for name, column in self._columns.items()}

    def remove(self, ids: Iterable[str]) -> None:
        """Remove items by id: they never match again, and :meth:`save` no longer writes them.

        Positions of the items after a removed one shift down (positions are the
        current order of insertion). Unknown ids raise and nothing is removed.
        """
        ids = [ids] if isinstance(ids, str) else list(ids)
        with self._lock:
            unknown = [i for i in ids if i not in self._positions]
            if unknown:
                raise InputError(f"id {unknown[0]!r} is not in this index of {len(self)} items; nothing was removed")
            keep = np.ones(len(self), bool)
            keep[[self._positions[i] for i in ids]] = False
            for column in self._columns.values():
                column.keep(keep)
            self._sync()
            if self._saved is not None:
                self._saved.remove(keep)
            self._ids = [item for item, kept in zip(self._ids, keep.tolist()) if kept]
            self._positions = {name: i for i, name in enumerate(self._ids)}

    def _sync(self) -> None:
        for searcher in self._searchers.values():
            searcher.sync()

    def __repr__(self) -> str:
        return f"ImageIndex({len(self)} items, dimensions={list(self._columns)}, weights={dict(self.prism.weights)})"

    # -- search -------------------------------------------------------------------------

    def search(
        self,
        image: ImageInput,
        *,
        k: int = 10,
        dimension: Dimension | str | None = None,
        weights: Mapping[Dimension | str, float] | None = None,
        profile: Profile | str | os.PathLike[str] | None = None,
    ) -> list[SearchHit]:
        """The ``k`` items most similar to ``image``, best first (exact; see the module doc).

        Ranked by the index's own weights, or by one ``dimension``, by other
        ``weights`` over the indexed dimensions, or by a ``profile`` (its weights
        and missing policy; its settings must match the index's). Every hit has
        the scores of all indexed dimensions.
        """
        if is_video(image):
            raise InputError(
                f"the query {describe_input(image)} is a video; search with one image, e.g. a frame from "
                "imageprism._video.sample_frames(path, fps=1)"
            )
        return self.search_embedding(
            self.prism.embed(image), k=k, dimension=dimension, weights=weights, profile=profile
        )

    def search_embedding(
        self,
        embedding: Embeddings,
        *,
        k: int = 10,
        dimension: Dimension | str | None = None,
        weights: Mapping[Dimension | str, float] | None = None,
        profile: Profile | str | os.PathLike[str] | None = None,
    ) -> list[SearchHit]:
        """Like :meth:`search`, for a query already embedded with this index's configuration."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"k={k!r} is invalid; use a positive integer (the number of hits)")
        ranking = self._ranking(dimension, weights, profile)
        query = {name: _entry(embedding, name, "query") for name in self._columns}
        with self._lock:
            if not len(self):
                return []
            fast = {name: self._columns[name].check_query(query[name]) for name in ranking.weights}
            return self._exact_top(query, fast, k, ranking)

    def _ranking(
        self,
        dimension: Dimension | str | None,
        weights: Mapping[Dimension | str, float] | None,
        profile: Profile | str | os.PathLike[str] | None,
    ) -> Blend:
        """The blend a query ranks by (positive weights only)."""
        given = [name for name, v in (("dimension", dimension), ("weights", weights), ("profile", profile)) if v is not None]
        if len(given) > 1:
            raise ConfigError(f"give at most one of dimension=, weights= and profile=, not {' and '.join(given)}")
        missing = self.prism.missing
        if dimension is not None:
            chosen = {parse_dimension(dimension, known_names(self.prism.registry)): 1.0}
        elif weights is not None:
            chosen = normalize_weights(cast("Mapping[object, object]", weights), source="search(weights=...)", known=known_names(self.prism.registry))
        elif profile is not None:
            policy, spec = resolve_blend(profile=profile, registry=self.prism.registry)
            assert spec is not None
            plugins = build_plugins(policy.dimensions, spec.configs(), self.prism.runtime, self.prism.registry)
            self._check_compatible(plugins, what=f"profile {spec.name!r}")
            chosen, missing = dict(policy.weights), policy.missing
        else:
            chosen = dict(self.prism.weights)
        absent = [name for name in chosen if name not in self._columns]
        if absent:
            raise ConfigError(
                f"dimension {absent[0]!r} is not in this index (indexed: {', '.join(self._columns)}); "
                "rank by indexed dimensions or build an index with it"
            )
        return Blend({name: w for name, w in chosen.items() if w > 0}, missing)

    def _exact_top(
        self,
        query: Mapping[str, np.ndarray | None],
        fast: Mapping[str, Any],
        k: int,
        ranking: Blend,
    ) -> list[SearchHit]:
        n = len(self)
        k = min(k, n)
        searchers = {name: self._searchers[name] for name in ranking.weights}
        slack = 2 * max(s.error for s in searchers.values()) + 1e-12
        if len(searchers) == 1 and next(iter(searchers.values())).searchable:
            (name, single), = searchers.items()
            m = max(2 * k, k + 16)
            while True:  # grow m until no item left out can come within `slack` of the k-th
                positions, best, bound = single.top(fast[name], m)
                kth = float(np.sort(best)[::-1][k - 1])
                if bound < kth - slack:
                    break
                m *= 4
        else:
            all_fast = ranking.scores({name: s.scores(fast[name]) for name, s in searchers.items()}, n)
            kth = top_positions(all_fast, k)[1][-1]
            positions = np.flatnonzero(all_fast >= kth - slack)
            best = all_fast[positions]
        # Every item whose exact score reaches the k-th best exact score has a fast score
        # within `slack` of the k-th best fast score, so it is among the candidates.
        keep = best >= kth - slack
        positions = positions[keep]
        exact = ranking.scores(
            {name: self._columns[name].query_scores(fast[name], positions) for name in searchers}, len(positions)
        )
        if np.any(np.abs(exact - best[keep]) > slack):  # a plugin whose layout misdescribes its score
            raise RuntimeError(f"fast and exact scores of {list(searchers)} disagree beyond {slack:g}; check its layout")
        order = np.lexsort((positions, -exact))[:k]
        hits = []
        for p in positions[order].tolist():
            scores = {
                name: self._plugins[name].score(query[name], column.take(np.array([p]))[0])
                for name, column in self._columns.items()
            }
            hits.append(SearchHit(self._ids[p], ranking.score(scores), scores, p))
        return hits

    # -- compatibility -------------------------------------------------------------------

    def _check_compatible(self, plugins: Mapping[str, DimensionPlugin], *, what: str) -> None:
        """Refuse plugins whose shared dimensions would embed differently from this index."""
        for name, plugin in plugins.items():
            ours = self._plugins.get(name)
            if ours is not None and ours.cache_token != plugin.cache_token:
                raise ConfigError(
                    f"{what} configures {name!r} differently from this index: "
                    f"{plugin.cache_token!r} vs the index's {ours.cache_token!r}; "
                    "query with the configuration the index was built with"
                )

    # -- files ----------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Commit the index to the directory ``path`` (created; another index there is replaced).

        Crash-safe: whatever instant the process is killed at, or if the disk fills,
        the directory holds the previous committed index or this one, never a mix
        (see :mod:`imageprism._index_files`). Saving again to the directory the index
        was loaded from or last saved to writes only what changed since. Returns the
        directory. Refuses a non-empty directory that is not an index; raises
        :class:`~imageprism.errors.IndexWriteError` when the files cannot be written and
        :class:`~imageprism.errors.IndexConflictError` when another writer saves it or
        saved it since this index was loaded.
        """
        folder = Path(os.fspath(path))
        if folder.exists() and not folder.is_dir():
            raise InputError(f"cannot save the index to {str(folder)!r}: it is a file; give a directory path")
        if folder.is_dir() and not (folder / MANIFEST).is_file() and not all(map(is_leftover, os.listdir(folder))):
            raise InputError(f"cannot save the index to {str(folder)!r}: it is a non-empty directory without {MANIFEST}")
        header = Manifest(
            0, len(self), {name: {"kind": column.kind, "cache_token": self._plugins[name].cache_token}
                           for name, column in self._columns.items()},
            dict(self.prism.weights), self.prism.missing, _profile_ref(self.prism), [], [], exact=self.exact,
        )
        with self._lock:
            states = {name: searcher.state() for name, searcher in self._searchers.items()}
            self._saved = save_columns(folder, self._columns, self._plugins, self._ids, header, self._saved, states)
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, prism: ImagePrism | None = None, exact: Exact | None = None) -> ImageIndex:
        """Read the index committed in directory ``path`` by :meth:`save`.

        Without ``prism``, the ``ImagePrism`` is rebuilt from the saved profile and
        weights (dimension configs given with ``config=`` are not saved: pass the
        same ``prism`` then). Either way, every dimension's ``cache_token`` must
        match the saved one. Anything the index did not write (a path out of the
        directory, a link, a FIFO, a wrong type, size or shape) raises
        :class:`~imageprism.errors.IndexFormatError` before it is read. ``exact``: as saved
        unless given; the approximate structure's saved training is reused (its codes are
        encoded from the vectors on the first search that needs them).
        """
        folder = Path(os.fspath(path))
        for attempt in range(3):
            manifest = read_manifest(folder)
            try:
                return cls._load(folder, manifest, prism, exact)
            except IndexFormatError:  # a writer may have committed and removed old files meanwhile
                if attempt == 2 or read_manifest(folder).generation == manifest.generation:
                    raise
        raise AssertionError("unreachable")

    @classmethod
    def _load(cls, folder: Path, manifest: Manifest, prism: ImagePrism | None, exact: Exact | None) -> ImageIndex:
        if prism is None:
            prism = _prism_from_manifest(manifest, folder)
        index = cls(prism, exact=check_exact(manifest.exact) if exact is None else exact)
        saved = manifest.dimensions
        if sorted(saved) != sorted(index._columns):
            raise ConfigError(
                f"index {str(folder)!r} holds dimensions {sorted(saved)}; the given ImagePrism uses "
                f"{sorted(index._columns)}; pass an ImagePrism with the index's dimensions"
            )
        for name, plugin in index._plugins.items():
            token = saved[name]["cache_token"]
            if token != plugin.cache_token:
                raise ConfigError(
                    f"index {str(folder)!r} was built with {name!r} configured as {token!r}, "
                    f"but this ImagePrism has {plugin.cache_token!r}; pass an ImagePrism configured like the index"
                )
        index._ids, index._saved = load_columns(folder, manifest, index._columns)
        load_states(folder, manifest, index._searchers)
        index._positions = {name: i for i, name in enumerate(index._ids)}
        index._sync()
        return index


# -- helpers ----------------------------------------------------------------------------


def _entry(embedding: Embeddings, name: str, which: object) -> np.ndarray | None:
    if not isinstance(embedding, Mapping) or name not in embedding:
        have = ", ".join(embedding) if isinstance(embedding, Mapping) else type(embedding).__name__
        raise InputError(f"embedding {which} has no {name!r} entry (it has: {have}); embed it with the index's ImagePrism")
    return embedding[name]


def _profile_ref(prism: ImagePrism) -> str | None:
    spec = prism.profile
    if spec is None:
        return None
    if spec.name in {p.value for p in Profile} and load_profile(spec.name).source == spec.source:
        return spec.name
    return str(spec.source.resolve())


def saved_prism(path: str | os.PathLike[str], *, cache: EmbeddingCache | None = None) -> ImagePrism:
    """The ``ImagePrism`` a saved index is rebuilt with (its profile and weights), with ``cache``."""
    folder = Path(os.fspath(path))
    return _prism_from_manifest(read_manifest(folder), folder, cache)


def _prism_from_manifest(manifest: Manifest, folder: Path, cache: EmbeddingCache | None = None) -> ImagePrism:
    try:  # a profile path is read by the bounded profile loader (regular files, size, no aliases, depth)
        return ImagePrism(profile=manifest.profile, weights=manifest.weights, cache=cache)
    except ConfigError as exc:
        raise ConfigError(f"index {str(folder)!r}: cannot rebuild its ImagePrism ({exc}); pass prism=") from exc
