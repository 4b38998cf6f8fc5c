"""``ImagePrism``: the one entry point that dispatches to the dimension plugins."""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from imageprism._cache import EmbeddingCache
from imageprism._dedup import (
    DedupResult,
    check_threshold,
    dedup_embeddings,
    default_threshold,
)
from imageprism._image import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    ImageInput,
    SourceImage,
    describe_input,
    open_image,
)
from imageprism._keep import Keep, dedup_in_order, keep_order
from imageprism._results import BatchEmbedding, CompareResult, EmbeddedImage, Failure
from imageprism._resume import resumed_chunks
from imageprism._runtime import ModelRuntime, prefetch, progress_bar
from imageprism._search.ann import Exact, check_exact
from imageprism._search.components import DEFAULT_MAX_HOPS, Linkage, check_linkage
from imageprism._selection import build_plugins, resolve_blend
from imageprism._types import Dimension, OnError, Profile
from imageprism._types import EmbeddingDict as Embeddings
from imageprism._video import VideoDedup, dedup_video
from imageprism._workers import TASK_SIZE, ChunkResult, check_workers, chunk_result, parallel_chunks
from imageprism.dimensions import DimensionPlugin, Registry, known_names, parse_dimension, plugin_class
from imageprism.errors import ConfigError, ImageLoadError, InputError

__all__ = ["ImagePrism"]



class ImagePrism:
    """Compare, embed and deduplicate images along one or more similarity dimensions.

    With no arguments, only the ``hash`` dimension is used: nothing is downloaded.

    Args:
        dimensions: dimensions to use, weighted equally (``Dimension`` members or names).
        weights: dimension -> relative weight; selects those dimensions. Normalised to sum to 1.
        config: dimension -> config object (e.g. ``{"hash": HashConfig(hash_size=16)}``).
        profile: a :class:`Profile`, a built-in profile name, or a path to a YAML profile.
            ``weights=`` replaces the profile's weights; ``config=`` replaces its settings
            for the dimensions it names.
        cache: the embedding cache (default: a new in-memory :class:`EmbeddingCache`).
        max_pixels: largest image (width x height) accepted; checked before decoding.
        max_bytes: largest input (file, file object or bytes) accepted; checked before reading.
        batch_size: images per inference batch in :meth:`embed_batch`.
        runtime: model runtime settings; or give ``offline``, ``cache_dir``, ``providers``
            and ``threads`` directly.
        registry: extra dimensions for this instance, ``{name: DimensionPlugin subclass}``
            (consulted before the built-in registry): how a new or fake dimension is
            plugged in without touching global state.

    Constructing an instance downloads nothing and opens no model: models load on
    first use. One instance may be shared by several threads.

    >>> prism = ImagePrism()
    >>> prism.dimensions
    ('hash',)
    """

    def __init__(
        self,
        dimensions: Iterable[Dimension | str] | None = None,
        *,
        weights: Mapping[Dimension | str, float] | None = None,
        config: Mapping[Dimension | str, object] | None = None,
        profile: Profile | str | os.PathLike[str] | None = None,
        cache: EmbeddingCache | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        batch_size: int = 16,
        runtime: ModelRuntime | None = None,
        registry: Registry | None = None,
        offline: bool | None = None,
        cache_dir: str | Path | None = None,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
    ) -> None:
        self.registry: Registry = dict(registry or {})
        self.blend, spec = resolve_blend(dimensions=dimensions, weights=weights, profile=profile, registry=self.registry)
        self.profile = spec
        self._weights = dict(self.blend.weights)
        profile_configs = spec.configs() if spec is not None else {}
        configs = self._merge_configs({k: v for k, v in profile_configs.items() if k in self._weights}, config)

        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r} is invalid; use a positive integer")
        if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
            raise ConfigError(f"max_pixels={max_pixels!r} is invalid; use a positive integer")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ConfigError(f"max_bytes={max_bytes!r} is invalid; use a positive integer")
        if runtime is not None and any(v is not None for v in (offline, cache_dir, providers, threads)):
            raise ConfigError("give either runtime= or offline/cache_dir/providers/threads, not both")
        self.runtime = runtime or ModelRuntime(cache_dir=cache_dir, offline=offline, providers=providers, threads=threads)
        self.cache = cache if cache is not None else EmbeddingCache()
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes
        self.batch_size = batch_size
        self._plugins = build_plugins(self.blend.dimensions, configs, self.runtime, self.registry)

    def _merge_configs(
        self, base: Mapping[str, object], overrides: Mapping[Dimension | str, object] | None
    ) -> dict[str, object]:
        merged = dict(base)
        if overrides is None:
            return merged
        if not isinstance(overrides, Mapping):
            raise ConfigError(f"config= must be a mapping of dimension to config object, got {type(overrides).__name__}")
        for key, value in overrides.items():
            name = parse_dimension(key, known_names(self.registry))
            if name not in self._weights:
                raise ConfigError(
                    f"config= has an entry for {name!r}, which is not among the dimensions in use "
                    f"({', '.join(self._weights)}); add it to dimensions= or weights="
                )
            expected = plugin_class(name, self.registry).config_type
            if not isinstance(value, expected):
                raise ConfigError(
                    f"config[{name!r}] must be a {expected.__name__}, got {type(value).__name__} {value!r}"
                )
            merged[name] = value
        return merged

    # -- introspection ------------------------------------------------------------

    @property
    def dimensions(self) -> tuple[str, ...]:
        """The dimensions in use, in the order of their weights."""
        return tuple(self._weights)

    @property
    def weights(self) -> Mapping[str, float]:
        """Normalised weights (they sum to 1)."""
        return dict(self._weights)

    @property
    def missing(self) -> str:
        """How a dimension that cannot score a pair counts in the blend (``blend.missing``)."""
        return self.blend.missing

    @property
    def threshold(self) -> float | None:
        """The profile's match threshold, if any (``blend.threshold``)."""
        return self.blend.threshold

    @property
    def plugins(self) -> Mapping[str, DimensionPlugin]:
        """The dimension plugins in use, by name."""
        return dict(self._plugins)

    def __repr__(self) -> str:
        weights = ", ".join(f"{k}={v:.3g}" for k, v in self._weights.items())
        origin = f"profile={self.profile.name!r}, " if self.profile is not None else ""
        return f"ImagePrism({origin}weights={{{weights}}})"

    # -- compare ------------------------------------------------------------------

    def compare(self, a: ImageInput, b: ImageInput) -> CompareResult:
        """Score two images on every dimension and blend the scores.

        >>> prism = ImagePrism()
        >>> import numpy as np
        >>> img = np.zeros((64, 64), dtype=np.uint8); img[:, 32:] = 255
        >>> prism.compare(img, img).scores["hash"]
        1.0
        """
        first, second = self._embed_sources([self._open(a), self._open(b)])
        return self.compare_embeddings(first, second)

    def compare_embeddings(self, a: Mapping[str, np.ndarray | None], b: Mapping[str, np.ndarray | None]) -> CompareResult:
        """Score two precomputed embeddings (from :meth:`embed`), e.g. kept in your own store."""
        scores = {name: plugin.score(_pick(a, name, "first"), _pick(b, name, "second"))
                  for name, plugin in self._plugins.items()}
        return CompareResult(
            scores=scores,
            weighted_score=self.blend.score(scores),
            weights=self._weights,
            threshold=self.threshold,
        )

    # -- embed --------------------------------------------------------------------

    def embed(self, image: ImageInput) -> Embeddings:
        """Embed one image: ``{dimension: numpy array}`` (``None`` where a dimension cannot describe it)."""
        return self._embed_sources([self._open(image)])[0]

    def embed_batch(
        self,
        images: Iterable[ImageInput],
        *,
        on_error: OnError = "raise",
        progress: bool | None = None,
        workers: int | None = 1,
    ) -> BatchEmbedding:
        """Embed many images in batches; decoding of the next batch overlaps inference of this one.

        With ``on_error="skip"``, inputs that cannot be loaded are reported in
        ``failures`` and their slot in ``embeddings`` is ``None``; every input is
        accounted for. With ``"raise"`` (default) the first bad input raises.
        ``progress``: a progress bar on stderr (``None``: only for long runs on a terminal).
        ``workers``: processes decoding and embedding paths and bytes in parallel
        (``None``: every core; ``1``: this process only). Results are identical and in
        input order either way; each worker loads its own models. With a
        :class:`~imageprism.PersistentCache`, files unchanged since a previous run
        (path, size, modification time, inode) are answered without decoding.
        """
        if on_error not in ("raise", "skip"):
            raise InputError(f"on_error={on_error!r} is invalid; use 'raise' or 'skip'")
        workers = check_workers(workers)
        items = list(images)
        embeddings: list[Embeddings | None] = [None] * len(items)
        failures: list[Failure] = []
        for chunk in self._embedded_in_order(items, workers=workers, progress=progress):
            for i, outcome in chunk:
                if isinstance(outcome, Failure):
                    if on_error == "raise":
                        raise outcome.error
                    failures.append(outcome)
                else:
                    embeddings[i] = outcome.embeddings
        return BatchEmbedding(tuple(embeddings), tuple(failures))

    # -- dedup --------------------------------------------------------------------

    def dedup(
        self,
        images: Iterable[ImageInput],
        threshold: float | None = None,
        *,
        keep: Keep = "first",
        linkage: Linkage = "representative",
        max_hops: int | None = DEFAULT_MAX_HOPS,
        on_error: OnError = "raise",
        progress: bool | None = None,
        exact: Exact = True,
        workers: int | None = 1,
    ) -> DedupResult:
        """Group near-duplicate images; one representative per group.

        Each image is embedded once (through the cache) and, in input order, joins the
        first representative whose score with it reaches ``threshold``, else becomes a
        representative. With several weighted dimensions the blended score is used.
        ``threshold`` defaults to the profile's, else 0.9 for the hash dimension alone
        (other selections must give one). With ``on_error="skip"`` unreadable inputs
        get label ``-1`` and are listed in ``failures``. The grouping is exact (equal to
        comparing each image with every representative) but uses an index, so it
        scales to a million hashes; see the README's dedup section.
        ``keep`` chooses the representatives by setting the order of that pass:
        ``"first"`` (input order), ``"largest"``, ``"newest"``, ``"oldest"`` or a key
        function (see :mod:`imageprism._keep`).
        ``linkage="connected"`` groups an image with any member it matches, not only
        the representative: groups are the connected components of the pairs reaching
        ``threshold``, split so that every member is at most ``max_hops`` such links
        from its representative (default 2: copies that match the same original;
        ``None``: no cap; ignored by the greedy linkage). ``result.scores`` then holds
        each image's score with its representative (see :mod:`imageprism._search.components`).
        ``exact=False`` (or ``"auto"``: from 50,000 inputs) finds the candidates of vector
        dimensions (semantic, instance, style) in an approximate index: every grouped image
        still reaches ``threshold`` with its representative, but a few matches may be missed
        (measured recall in the README). The connected linkage always searches exactly.
        ``workers``: as for :meth:`embed_batch`.

        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> a = np.kron(rng.integers(0, 256, (8, 8)), np.ones((8, 8))).astype(np.uint8)
        >>> brighter = np.clip(a.astype(int) + 12, 0, 255).astype(np.uint8)
        >>> other = rng.integers(0, 256, (64, 64)).astype(np.uint8)
        >>> ImagePrism().dedup([a, other, brighter, a[:, ::-1]]).labels.tolist()
        [0, 1, 0, 0]
        """
        # checked before the (possibly long) embedding, so a typo fails at once
        threshold = check_threshold(default_threshold(self.blend, self._plugins) if threshold is None else threshold)
        check_linkage(linkage, max_hops)
        exact = check_exact(exact)
        items = list(images)
        order = keep_order(items, keep)  # before the embedding too: a bad keep fails at once
        batch = self.embed_batch(items, on_error=on_error, progress=progress, workers=workers)
        if keep != "first":
            return dedup_in_order(
                self, batch.embeddings, batch.failures, order, threshold, progress=progress,
                linkage=linkage, max_hops=max_hops, exact=exact,
            )
        return dedup_embeddings(
            batch.embeddings, plugins=self._plugins, blend=self.blend,
            threshold=threshold, failures=batch.failures, progress=progress, linkage=linkage, max_hops=max_hops,
            exact=exact,
        )

    def dedup_video(
        self, video: str | os.PathLike[str], threshold: float | None = None, *, fps: float = 1.0,
        progress: bool | None = None,
    ) -> VideoDedup:
        """The distinct frames of a video sampled at ``fps`` frames per second, with their times.

        The sampled frames are grouped as :meth:`dedup` groups images (same threshold
        default). Needs PyAV: ``pip install ".[video]"`` from the checkout. See :class:`~imageprism._video.VideoDedup`.
        """
        return dedup_video(self, video, threshold, fps=fps, progress=progress)

    def dedup_embeddings(
        self,
        embeddings: Sequence[Mapping[str, np.ndarray | None]] | Mapping[str, Sequence[np.ndarray | None] | np.ndarray],
        threshold: float | None = None,
        *,
        linkage: Linkage = "representative",
        max_hops: int | None = DEFAULT_MAX_HOPS,
        progress: bool | None = None,
        exact: Exact = True,
    ) -> DedupResult:
        """:meth:`dedup` on precomputed embeddings (e.g. kept in your own store).

        ``embeddings``: one ``{dimension: array}`` per input (what :meth:`embed` returns),
        or ``{dimension: sequence or stacked array}`` with one entry per input. They
        must come from an ``ImagePrism`` with the same dimension configurations.
        ``linkage``, ``max_hops`` and ``exact`` as in :meth:`dedup`.
        """
        threshold = default_threshold(self.blend, self._plugins) if threshold is None else threshold
        return dedup_embeddings(
            embeddings, plugins=self._plugins, blend=self.blend, threshold=threshold, progress=progress,
            linkage=linkage, max_hops=max_hops, exact=exact,
        )

    def _embedded_in_order(self, items: Sequence[Any], *, workers: int, progress: bool | None) -> Generator[ChunkResult, None, None]:
        """The outcome of every input, chunk by chunk in input order: the one path of every batch embedding.

        Files unchanged since a previous run come from a persistent cache's file-identity
        records, image size included (see :func:`~imageprism._resume.resumed_chunks`), the
        rest are computed here or on ``workers`` processes. Memory holds one window of
        results, however many ``items``. ``progress``: as for :meth:`embed_batch`.
        :meth:`embed_batch` collects the chunks; ``imageprism embed --out`` streams them to
        a Parquet table (:func:`~imageprism.columnar.parquet.write_parquet`).
        """
        tokens = {name: plugin.cache_token for name, plugin in self._plugins.items()}
        with progress_bar(len(items), progress=progress, description="embedding") as bar:
            for chunk in resumed_chunks(self.cache, tokens, items, lambda todo: self._embedded_chunks(todo, workers)):
                yield chunk
                bar.update(len(chunk))

    def _embedded_chunks(self, items: Sequence[Any], workers: int) -> Iterator[ChunkResult]:
        """Chunks of embedded inputs in order: here (decoding one chunk ahead in a thread) or on workers.

        Results computed by worker processes are filed in this process's cache.
        """
        if workers > 1 and len(items) > TASK_SIZE:
            for chunk in parallel_chunks(self._worker_recipe(), items, workers, self._embed_chunk):
                for _, outcome in chunk:
                    if not isinstance(outcome, Failure):
                        self._file(outcome.embeddings, outcome.pixel_keys)
                yield chunk
            return
        starts = range(0, len(items), self.batch_size)
        decoded = (self._decode_chunk(items[start : start + self.batch_size], start) for start in starts)
        for sources in decoded if len(starts) <= 1 else prefetch(decoded):  # one chunk: nothing to overlap
            yield chunk_result(self._embed_decoded(sources))  # embed_chunk's two halves, overlapped

    def _worker_recipe(self) -> functools.partial[ImagePrism]:
        """A picklable maker of an ``ImagePrism`` embedding like this one (settings only: no cache, no model)."""
        return functools.partial(
            _worker_prism, {name: plugin.config for name, plugin in self._plugins.items()},
            {f.name: getattr(self.runtime, f.name) for f in dataclasses.fields(self.runtime) if f.init},
            self.registry, {"max_pixels": self.max_pixels, "max_bytes": self.max_bytes, "batch_size": self.batch_size},
        )

    def _embed_chunk(self, items: Sequence[Any], start: int) -> ChunkResult:
        """Open, decode and embed ``items`` (inputs ``start``, ``start + 1``, ...), in batches."""
        out: ChunkResult = []
        for s in range(0, len(items), self.batch_size):
            out += chunk_result(self.embed_chunk(items[s : s + self.batch_size], start + s))
        return out

    def embed_chunk(self, items: Sequence[ImageInput], start: int = 0) -> list[EmbeddedImage | Failure]:
        """Embed one chunk of inputs in this process: the per-chunk step of :meth:`embed_batch`.

        For engines that hand over one batch at a time (:class:`~imageprism.ArrowEmbedder`
        in Ray's ``map_batches`` or Spark's ``mapInArrow``): opens and decodes ``items``,
        then embeds them with every dimension through the cache (identical pixels embed
        once). Entries are in input order, indexed from ``start``; an input that cannot be
        loaded is a :class:`Failure` in its place. Embeddings equal :meth:`embed_batch`'s.
        """
        return self._embed_decoded(self._decode_chunk(items, start))

    def _decode_chunk(self, items: Sequence[Any], start: int) -> list[tuple[int, SourceImage | Failure]]:
        """Open and decode ``items`` (inputs ``start``, ``start + 1``, ...); failures in their place."""
        chunk: list[tuple[int, SourceImage | Failure]] = []
        for i, item in enumerate(items, start):
            try:
                source = self._open(item)
                for plugin in self._plugins.values():
                    source.pixels(plugin.image_request)
                source.size  # noqa: B018 (read here: a header that no longer reads fails in its place)
                chunk.append((i, source))
            except ImageLoadError as exc:
                chunk.append((i, Failure(i, describe_input(item), exc)))
        return chunk

    def _embed_decoded(self, chunk: list[tuple[int, SourceImage | Failure]]) -> list[EmbeddedImage | Failure]:
        """Embeddings, pixel keys and sizes of the decoded inputs of a chunk; failures kept in place."""
        ok = [src for _, src in chunk if isinstance(src, SourceImage)]
        embedded = iter(self._embed_sources(ok))
        out: list[EmbeddedImage | Failure] = []
        for i, src in chunk:
            if isinstance(src, Failure):
                out.append(src)
            else:
                keys = {name: src.pixels(plugin.image_request).key for name, plugin in self._plugins.items()}
                out.append(EmbeddedImage(i, next(embedded), keys, *src.size))
        return out

    def _file(self, embeddings: Embeddings, keys: Mapping[str, str]) -> None:
        """Keep embeddings computed elsewhere in the cache, under their pixel keys (in place)."""
        for name, plugin in self._plugins.items():
            embeddings[name] = self.cache.put((keys[name], plugin.cache_token), embeddings[name])

    def _open(self, image: ImageInput) -> SourceImage:
        return open_image(image, max_pixels=self.max_pixels, max_bytes=self.max_bytes)

    def _embed_sources(self, sources: Sequence[SourceImage]) -> list[Embeddings]:
        """Embed opened images with every plugin, through the cache; identical pixels embed once."""
        results: list[Embeddings] = [{} for _ in sources]
        for name, plugin in self._plugins.items():
            token = plugin.cache_token
            request = plugin.image_request
            todo: dict[str, list[int]] = {}
            pixels = {}
            for i, source in enumerate(sources):
                px = source.pixels(request)
                hit, embedding = self.cache.lookup((px.key, token))
                if hit:
                    results[i][name] = embedding
                else:
                    todo.setdefault(px.key, []).append(i)
                    pixels[px.key] = px.image
            if not todo:
                continue
            keys = list(todo)
            computed = plugin.embed_batch([pixels[k] for k in keys])
            if len(computed) != len(keys):
                raise RuntimeError(f"dimension {name!r} returned {len(computed)} embeddings for {len(keys)} images")
            for key, embedding in zip(keys, computed):
                embedding = self.cache.put((key, token), embedding)
                for i in todo[key]:
                    results[i][name] = embedding
        return results


def _worker_prism(
    configs: Mapping[str, object], runtime: Mapping[str, Any], registry: Registry, limits: Mapping[str, int]
) -> ImagePrism:
    """The ``ImagePrism`` of a worker process (see ``ImagePrism._worker_recipe``); it caches nothing.

    ``limits``: ``max_pixels``, ``max_bytes`` and ``batch_size``, as the caller's.
    """
    return ImagePrism(
        weights={name: 1.0 for name in configs}, config=dict(configs), runtime=ModelRuntime(**runtime),
        registry=registry, cache=EmbeddingCache(max_entries=0), max_pixels=limits["max_pixels"],
        max_bytes=limits["max_bytes"], batch_size=limits["batch_size"],
    )


def _pick(embeddings: Mapping[str, np.ndarray | None], name: str, which: str) -> np.ndarray | None:
    if not isinstance(embeddings, Mapping) or name not in embeddings:
        have = ", ".join(embeddings) if isinstance(embeddings, Mapping) else type(embeddings).__name__
        raise InputError(f"the {which} embedding has no {name!r} entry (it has: {have}); embed it with this ImagePrism")
    return embeddings[name]
