"""Profiles: YAML files that pick dimensions and blend their scores into one number.

A profile file is one flat mapping (parsed with ``yaml.safe_load``)::

    description: >
      Is image B a copy of image A?       # first paragraph: the question it answers

      Why the weights are what they are.  # then: the reasoning
    weights:            # required: dimension -> non-negative number (normalised to sum 1)
      hash: 0.35
      instance: 0.45
      semantic: 0.2
    missing: zero       # optional: "zero" (default) or "renormalize"
    threshold: 0.7      # optional: weighted score at which a pair counts as a match
    settings:           # optional: per-dimension config fields, e.g.
      hash:
        hash_size: 16

``weights`` decide which dimensions run; a weight of 0 computes and reports a
dimension without letting it move the blended score. ``missing`` says what a
dimension that cannot score a pair (``face`` with no face found) does: ``zero``
counts it as 0, ``renormalize`` spreads its weight over the dimensions that did
score. :func:`imageprism._blend.blend` is the one place where scores are blended.

A profile file is untrusted input: it is refused with a :class:`~imageprism.errors.ProfileError`,
before it is parsed, when it is larger than :data:`MAX_PROFILE_BYTES`, uses YAML anchors or
aliases (``&a``/``*a``: a 500-byte "billion laughs" file expands to gigabytes), or nests
deeper than :data:`MAX_PROFILE_DEPTH`.

Built-in profiles ship inside the package (``imageprism/profiles/*.yaml``); a
source checkout reads them from ``<repo>/profiles``. :func:`load_profile` takes a
:class:`~imageprism.Profile`, a built-in name, or the path of your own file.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import math
import numbers
import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal, cast

import yaml

from imageprism._blend import MISSING_POLICIES, Blend, blend
from imageprism._types import Dimension, Profile
from imageprism.errors import ConfigError, DimensionUnavailableError, ProfileError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = [
    "MISSING_POLICIES",
    "ProfileSpec",
    "blend",
    "list_profiles",
    "load_profile",
    "normalize_weights",
]

MissingPolicy = Literal["zero", "renormalize"]

#: the keys a profile file may have
PROFILE_KEYS: tuple[str, ...] = ("description", "weights", "missing", "threshold", "settings")

#: largest profile file read (the built-in ones are under 2 KB)
MAX_PROFILE_BYTES = 64 * 1024
#: deepest nesting of mappings and lists in a profile (a profile needs 3: settings -> hash -> a list)
MAX_PROFILE_DEPTH = 8

_SUFFIXES = (".yaml", ".yml")
_DIMENSIONS = ", ".join(d.value for d in Dimension)
_BUILTINS = ", ".join(p.value for p in Profile)


@dataclasses.dataclass(frozen=True, repr=False)
class ProfileSpec:
    """A loaded, validated profile.

    ``weights`` map dimension names to weights that sum to 1 (in file order);
    ``settings`` hold the raw per-dimension config fields from the file (lists
    become tuples); :meth:`configs` turns them into config objects. ``source`` is
    the file the profile was read from.
    """

    name: str
    description: str
    weights: Mapping[str, float]
    missing: MissingPolicy
    threshold: float | None
    settings: Mapping[str, Mapping[str, object]]
    source: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", MappingProxyType(dict(self.weights)))
        frozen = {dim: MappingProxyType(dict(values)) for dim, values in self.settings.items()}
        object.__setattr__(self, "settings", MappingProxyType(frozen))

    def __repr__(self) -> str:
        weights = ", ".join(f"{dim!r}: {w:.3g}" for dim, w in self.weights.items())
        return (
            f"ProfileSpec(name={self.name!r}, weights={{{weights}}}, missing={self.missing!r}, "
            f"threshold={self.threshold!r}, source={str(self.source)!r})"
        )

    @property
    def blend(self) -> Blend:
        """The profile's weights, missing policy and threshold as one value."""
        return Blend(self.weights, self.missing, self.threshold)

    @property
    def dimensions(self) -> list[str]:
        """The dimensions this profile computes, in file order."""
        return list(self.weights)

    @property
    def summary(self) -> str:
        """The first paragraph of the description: the question the profile answers."""
        return self.description.split("\n", 1)[0].strip()

    def configs(self) -> dict[str, object]:
        """Build the config object of each dimension that has ``settings``.

        Imports the dimension modules concerned. Raises :class:`ProfileError`
        naming the file, the dimension and the bad key (with the valid keys) when a
        setting is unknown or its value is rejected by the config class.
        """
        from imageprism.dimensions import plugin_class

        built: dict[str, object] = {}
        for dim, values in self.settings.items():
            try:
                config_type = plugin_class(dim).config_type
            except DimensionUnavailableError as exc:
                raise DimensionUnavailableError(f"profile {self.source}: key 'settings.{dim}': {exc}") from exc
            valid = [f.name for f in dataclasses.fields(config_type) if f.init]
            for key in values:
                if key not in valid:
                    raise _error(
                        self.source,
                        f"settings.{dim}.{key}",
                        f"unknown setting for dimension {dim!r}{_did_you_mean(key, valid)}; "
                        f"valid settings are: {', '.join(valid)}",
                    )
            try:
                built[dim] = config_type(**values)
            except (ConfigError, TypeError, ValueError) as exc:
                raise _error(
                    self.source,
                    f"settings.{dim}",
                    f"invalid settings for dimension {dim!r}: {exc} (valid settings are: {', '.join(valid)})",
                ) from exc
        return built

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready plain dict of the profile (as printed by ``imageprism profiles --json``)."""
        return {
            "name": self.name,
            "description": self.description,
            "weights": dict(self.weights),
            "missing": self.missing,
            "threshold": self.threshold,
            "settings": {dim: {k: _jsonable(v) for k, v in values.items()} for dim, values in self.settings.items()},
            "source": str(self.source),
        }


def normalize_weights(
    weights: Mapping[object, object],
    *,
    source: str,
    error: type[ConfigError] = ConfigError,
    known: Collection[str] | None = None,
) -> dict[str, float]:
    """Validate weights and scale them to sum to 1; keys become dimension names.

    Keys are :class:`~imageprism.Dimension` members or their names; values are
    finite, non-negative real numbers, not all zero. ``source`` starts every error
    message (e.g. ``"ImagePrism(weights=...)"``); ``error`` is the class raised.

    >>> normalize_weights({"hash": 3, Dimension.SEMANTIC: 1}, source="example")
    {'hash': 0.75, 'semantic': 0.25}
    """
    if not isinstance(weights, Mapping):
        raise error(
            f"{source}: weights must be a mapping of dimension to weight, got {type(weights).__name__} "
            f"{weights!r}; e.g. {{'hash': 0.5, 'semantic': 0.5}}"
        )
    if not weights:
        raise error(f"{source}: no weights given; give at least one of the dimensions: {_DIMENSIONS}")
    from imageprism.dimensions import parse_dimension

    checked: dict[str, float] = {}
    for key, value in weights.items():
        try:
            name = parse_dimension(key, known)
        except ConfigError:
            valid = list(known) if known is not None else [d.value for d in Dimension]
            raise error(
                f"{source}: unknown dimension {key!r}{_did_you_mean(key, valid)}; "
                f"valid dimensions are: {', '.join(valid)}"
            ) from None
        if name in checked:
            raise error(f"{source}: dimension {name!r} is given twice; give each dimension once")
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise error(
                f"{source}: the weight of {name!r} must be a number, got {type(value).__name__} {value!r}"
            )
        number = float(value)
        if not math.isfinite(number):
            raise error(f"{source}: the weight of {name!r} must be finite, got {value!r}")
        if number < 0:
            raise error(
                f"{source}: the weight of {name!r} must not be negative, got {value!r}; "
                "use 0 to report a dimension without blending it"
            )
        checked[name] = number
    largest = max(checked.values())
    if largest == 0:
        raise error(f"{source}: all weights are zero; give at least one dimension a positive weight")
    try:
        total = math.fsum(checked.values())
    except OverflowError:  # huge weights: scale them down first
        checked = {name: w / largest for name, w in checked.items()}
        total = math.fsum(checked.values())
    return {name: w / total for name, w in checked.items()}


def load_profile(profile: Profile | str | os.PathLike[str]) -> ProfileSpec:
    """Load and validate a profile.

    ``profile`` is a :class:`~imageprism.Profile` member, the name of a built-in
    profile (``"copyright"``), or the path of a ``.yaml``/``.yml`` file. Raises
    :class:`ProfileError` naming the file, the key and what is allowed.
    """
    if isinstance(profile, Profile):
        return _load_builtin(profile)
    if isinstance(profile, str) and profile.strip().lower() in {p.value for p in Profile}:
        return _load_builtin(Profile(profile.strip().lower()))
    if isinstance(profile, (str, os.PathLike)):
        path = Path(os.fspath(profile)).expanduser()
        if path.suffix.lower() in _SUFFIXES:
            return _load_file(path)
        if not isinstance(profile, str):
            raise ProfileError(f"profile file {path} must end in .yaml or .yml; built-in profiles are: {_BUILTINS}")
        hint = _did_you_mean(profile, [p.value for p in Profile])
        raise ProfileError(
            f"unknown profile {str(profile)!r}{hint}; built-in profiles are: {_BUILTINS}; "
            "or give the path of your own profile file ending in .yaml or .yml"
        )
    raise ProfileError(
        f"a profile must be a Profile member, a built-in profile name or a path to a .yaml file, "
        f"got {type(profile).__name__} {profile!r}; built-in profiles are: {_BUILTINS}"
    )


def list_profiles() -> list[ProfileSpec]:
    """The built-in profiles, in :class:`~imageprism.Profile` order."""
    return [_load_builtin(p) for p in Profile]


# -- loading -----------------------------------------------------------------------------------


def _builtin_dir() -> Traversable:
    """The folder of the built-in profile files: in the installed package, else the checkout."""
    packaged = importlib.resources.files("imageprism") / "profiles"
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "profiles").is_dir():
        return checkout / "profiles"
    raise ProfileError(
        f"the built-in profiles are missing from this installation (looked in {packaged} and "
        f"{checkout / 'profiles'}); reinstall imageprism"
    )


def _load_builtin(profile: Profile) -> ProfileSpec:
    resource = _builtin_dir() / f"{profile.value}.yaml"
    source = Path(str(resource))
    if not resource.is_file():
        raise ProfileError(f"built-in profile file {source} is missing from this installation; reinstall imageprism")
    return _parse(resource.read_text(encoding="utf-8"), source=source, name=profile.value)


def _load_file(path: Path) -> ProfileSpec:
    if not path.exists():
        raise ProfileError(f"profile file not found: {path}; built-in profiles are: {_BUILTINS}")
    if not path.is_file():
        raise ProfileError(f"profile {path} is not a file; give the path of a .yaml or .yml file")
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_PROFILE_BYTES + 1)
        if len(raw) > MAX_PROFILE_BYTES:
            raise ProfileError(
                f"profile {path} is larger than {MAX_PROFILE_BYTES:,} bytes; a profile is a short mapping "
                "(the built-in ones are under 2 KB): check that this is the right file"
            )
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProfileError(f"profile {path} is not UTF-8 text: {exc}") from exc
    except OSError as exc:
        raise ProfileError(f"profile {path} cannot be read: {exc.strerror or exc}") from exc
    return _parse(text, source=path, name=path.stem)


def _check_structure(text: str, source: Path) -> None:
    """Refuse anchors, aliases and deep nesting from the event stream, before anything is built."""
    depth = 0
    # libyaml when present: the pure-Python scanner looks far ahead in deep flow nesting (about 1 s for 60 KB)
    for event in yaml.parse(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise ProfileError(
                f"profile {source}: line {event.start_mark.line + 1}: YAML anchors and aliases (&name, *name) "
                "are not allowed in a profile; write the values out"
            )
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_PROFILE_DEPTH:
                raise ProfileError(
                    f"profile {source}: line {event.start_mark.line + 1}: nested deeper than {MAX_PROFILE_DEPTH} "
                    "levels; a profile is a flat mapping with 'weights' and 'settings' one level down"
                )
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _parse(text: str, *, source: Path, name: str) -> ProfileSpec:
    try:
        _check_structure(text, source)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProfileError(f"profile {source}: malformed YAML: {_describe_yaml_error(exc)}") from exc
    if data is None:
        raise ProfileError(f"profile {source}: the file is empty; it needs at least a 'weights' mapping")
    if not isinstance(data, dict):
        raise ProfileError(
            f"profile {source}: the top level must be a mapping with the keys {', '.join(PROFILE_KEYS)}, "
            f"got a {_yaml_type(data)}"
        )
    for key in data:
        if key not in PROFILE_KEYS:
            raise _error(
                source,
                str(key),
                f"unknown key{_did_you_mean(str(key), PROFILE_KEYS)}; allowed keys are: {', '.join(PROFILE_KEYS)}",
            )
    if "weights" not in data:
        raise _error(source, "weights", "missing; give a mapping of dimension to weight, e.g. {hash: 1}")

    description = data.get("description", "")
    if description is None:
        description = ""
    if not isinstance(description, str):
        raise _error(source, "description", f"must be text, got a {_yaml_type(description)}")

    weights = normalize_weights(
        cast("Mapping[object, object]", data["weights"]),
        source=f"profile {source}: key 'weights'",
        error=ProfileError,
    )

    missing = data.get("missing", "zero")
    if missing not in MISSING_POLICIES:
        raise _error(source, "missing", f"must be one of: {', '.join(MISSING_POLICIES)}; got {missing!r}")

    threshold = data.get("threshold")
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
            raise _error(source, "threshold", f"must be a number between 0 and 1, got {threshold!r}")
        threshold = float(threshold)
        if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
            raise _error(source, "threshold", f"must be a number between 0 and 1, got {threshold!r}")

    settings = _parse_settings(data.get("settings"), weights, source)
    return ProfileSpec(
        name=name,
        description=description.strip(),
        weights=weights,
        missing=cast(MissingPolicy, missing),
        threshold=threshold,
        settings=settings,
        source=source,
    )


def _parse_settings(raw: object, weights: Mapping[str, float], source: Path) -> dict[str, dict[str, object]]:
    """Check the shape of ``settings`` (the fields themselves are checked by :meth:`ProfileSpec.configs`)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _error(source, "settings", f"must be a mapping of dimension to its settings, got a {_yaml_type(raw)}")
    from imageprism.dimensions import parse_dimension

    settings: dict[str, dict[str, object]] = {}
    for key, values in raw.items():
        try:
            dim = parse_dimension(key)
        except ConfigError:
            raise _error(
                source,
                f"settings.{key}",
                f"unknown dimension{_did_you_mean(str(key), [d.value for d in Dimension])}; "
                f"valid dimensions are: {_DIMENSIONS}",
            ) from None
        if dim not in weights:
            raise _error(
                source,
                f"settings.{key}",
                f"dimension {dim!r} has settings but no weight; add it to 'weights' or remove its settings",
            )
        if not isinstance(values, dict):
            raise _error(
                source,
                f"settings.{key}",
                f"must be a mapping of setting name to value, got a {_yaml_type(values)}",
            )
        for field_name in values:
            if not isinstance(field_name, str):
                raise _error(source, f"settings.{key}", f"setting names must be text, got {field_name!r}")
        settings[dim] = {field_name: _freeze(value) for field_name, value in values.items()}
    return settings


# -- helpers -----------------------------------------------------------------------------------


def _error(source: Path, key: str, problem: str) -> ProfileError:
    return ProfileError(f"profile {source}: key {key!r}: {problem}")


def _did_you_mean(value: object, choices: Sequence[str]) -> str:
    matches = difflib.get_close_matches(str(value).lower(), list(choices), n=1)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


def _describe_yaml_error(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is not None and problem:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(exc).split())


def _yaml_type(value: object) -> str:
    names = {dict: "mapping", list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return names.get(type(value), type(value).__name__)


def _freeze(value: object) -> object:
    """YAML lists become tuples, so config dataclasses stay hashable and their repr stable."""
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _jsonable(value: object) -> object:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value
