"""The error tree: documented, complete, and caller errors are ValueErrors."""

from __future__ import annotations

import re
import sys

import pytest

import imageprism
from imageprism import errors


def test_every_error_is_in_the_documented_tree_and_exported() -> None:
    documented = set(re.findall(r"(\w+Error)\b", errors.__doc__ or ""))
    defined = {name for name, obj in vars(errors).items() if isinstance(obj, type) and issubclass(obj, Exception)}
    assert defined - {"ValueError", "ImportError"} == documented - {"ValueError", "ImportError"}
    for name in defined:
        assert issubclass(getattr(errors, name), errors.ImagePrismError)
        assert getattr(imageprism, name) is getattr(errors, name)


def test_caller_errors_are_value_errors() -> None:
    for cls in (errors.InputError, errors.ImageLoadError, errors.DecompressionBombError, errors.ConfigError,
                errors.ProfileError, errors.DimensionUnavailableError):
        assert issubclass(cls, ValueError)
    for cls in (errors.ModelError, errors.ModelDownloadError, errors.ModelNotCachedError, errors.ModelLoadError):
        assert not issubclass(cls, ValueError)


def test_missing_onnx_for_style_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from imageprism.dimensions import style

    monkeypatch.setitem(sys.modules, "onnx", None)  # makes "import onnx" fail
    with pytest.raises(errors.MissingDependencyError, match=r"pip install \"\.\[style\]\"") as info:
        style._import_onnx()
    assert isinstance(info.value, ImportError)
