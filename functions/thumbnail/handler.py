"""A thumbnail of a picture, as a PNG file: a function whose output is a file.

It returns a ``pathlib.Path``; the platform stores the file and the result holds its URL
(or, with ``?files=data_uri``, the PNG inline). The PNG is written beside the input, in
the folder the platform made for this attempt and removes after it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field

from conveyor import Accept, File


class ThumbnailInput(BaseModel):
    image: Annotated[File, Accept("image/*")]
    size: int = Field(128, ge=8, le=1024, description="the longest side, pixels")


class Thumbnail(BaseModel):
    thumbnail: Path
    width: int
    height: int


def run(item: ThumbnailInput) -> Thumbnail:
    from PIL import Image

    with Image.open(item.image) as picture:
        picture.thumbnail((item.size, item.size))
        out = item.image.parent / f"{Path(item.image.filename or 'image').stem}-thumb.png"
        picture.convert("RGB").save(out, "PNG")
        return Thumbnail(thumbnail=out, width=picture.width, height=picture.height)
