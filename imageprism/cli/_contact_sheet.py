"""Contact sheets: the duplicate groups of a dedup as one PNG grid, for review at a glance.

One row per group: the representative first (framed in green), then its
duplicates (framed in orange), each thumbnail captioned with its name. Rows
longer than ``max_per_group`` end with a "+N more" cell.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from imageprism._image import ImageInput, describe_input, open_image
from imageprism.dimensions._base import ImageRequest
from imageprism.errors import ConfigError, ImageLoadError

__all__ = ["contact_sheet"]

_REP, _DUP, _BG, _TEXT = (46, 160, 67), (230, 126, 34), (255, 255, 255), (30, 30, 30)
_PAD, _BORDER, _CAPTION = 8, 4, 14


def contact_sheet(
    groups: Sequence[Sequence[ImageInput]],
    *,
    names: Sequence[Sequence[str]] | None = None,
    thumb: int = 160,
    max_groups: int = 200,
    max_per_group: int = 8,
) -> Image.Image:
    """An RGB image with one row per group (representative first) of ``thumb``-pixel thumbnails.

    ``names`` (same shape as ``groups``) caption the thumbnails; by default the
    file name of path inputs. At most ``max_groups`` rows and ``max_per_group``
    thumbnails per row are drawn; a row with more members ends with "+N more", and
    a last line says how many groups were left out. An input that can no longer be
    read is drawn as a grey cell captioned "unreadable".
    """
    for label, value, low in (("thumb", thumb, 16), ("max_groups", max_groups, 1), ("max_per_group", max_per_group, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"contact_sheet({label}={value!r}) is invalid; use an integer >= {low}")
    shown = list(groups)[:max_groups]
    columns = max((min(len(g), max_per_group) + (len(g) > max_per_group) for g in shown), default=1)
    cell_w, cell_h = thumb + 2 * _BORDER, thumb + 2 * _BORDER + _CAPTION
    left_out = len(groups) - len(shown)
    footer = _CAPTION + _PAD if left_out else 0
    sheet = Image.new(
        "RGB",
        (_PAD + columns * (cell_w + _PAD), _PAD + max(len(shown), 1) * (cell_h + _PAD) + footer),
        _BG,
    )
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for row, group in enumerate(shown):
        y = _PAD + row * (cell_h + _PAD)
        labels = names[row] if names is not None else [_name(item) for item in group]
        for col, (item, label) in enumerate(list(zip(group, labels))[:max_per_group]):
            x = _PAD + col * (cell_w + _PAD)
            draw.rectangle([x, y, x + cell_w - 1, y + thumb + 2 * _BORDER - 1], fill=_REP if col == 0 else _DUP)
            sheet.paste(_thumbnail(item, thumb), (x + _BORDER, y + _BORDER))
            draw.text((x, y + thumb + 2 * _BORDER + 1), _fit(label, draw, font, cell_w), fill=_TEXT, font=font)
        if len(group) > max_per_group:
            x = _PAD + max_per_group * (cell_w + _PAD)
            draw.text((x + _BORDER, y + thumb // 2), f"+{len(group) - max_per_group} more", fill=_TEXT, font=font)
    if left_out:
        draw.text((_PAD, sheet.height - footer), f"... and {left_out} more groups not shown", fill=_TEXT, font=font)
    return sheet


def _name(item: ImageInput) -> str:
    if isinstance(item, (str, os.PathLike)):
        return os.path.basename(os.fspath(item))
    return describe_input(item)


def _thumbnail(item: ImageInput, size: int) -> Image.Image:
    """The image fitted into a ``size`` square (aspect kept, centred on grey), or a grey cell."""
    cell = Image.new("RGB", (size, size), (200, 200, 200))
    try:
        image = open_image(item).pixels(ImageRequest(mode="RGB", min_side=size)).image.convert("RGB")
    except ImageLoadError:
        ImageDraw.Draw(cell).text((6, size // 2 - 6), "unreadable", fill=_TEXT)
        return cell
    image.thumbnail((size, size))
    cell.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
    return cell


def _fit(text: str, draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength("..." + text, font=font) > width:
        text = text[1:]
    return "..." + text
