"""files: PNG masks and one JSON line per frame (events.jsonl) in a folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import cv2
from pydantic import BaseModel, ConfigDict, Field

from firespotter.runtime.errors import FirespotterError
from firespotter.runtime.plugins import hookimpl
from firespotter.runtime.specs import SinkSpec


class FilesOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dir: Path = Field(description="folder for masks/ and events.jsonl (created if missing)")
    masks: Literal["all", "fire", "none"] = Field("all", description="which frames get a mask PNG: every frame, frames with fire, or none")
    events: bool = Field(True, description="append one JSON line per frame to events.jsonl")


class FilesSink:
    needs_image = False

    def __init__(self, options: FilesOptions, name: str = "files"):
        self.name = name
        self.options = options
        self.dir = options.dir
        self.mask_dir = self.dir / "masks"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            if options.masks != "none":
                self.mask_dir.mkdir(exist_ok=True)
            # Line-buffered: each event reaches the file at once, so a crash or power cut loses none.
            self._events = (open(self.dir / "events.jsonl", "w", encoding="utf-8", buffering=1)
                            if options.events else None)
        except OSError as exc:
            raise FirespotterError(f"files sink cannot write to {self.dir}: {exc.strerror}") from None

    def send(self, result) -> None:
        write_mask = self.options.masks == "all" or (self.options.masks == "fire" and result.regions)
        if write_mask:
            stem = result.meta.get("name") or f"{result.seq:06d}"
            if not cv2.imwrite(str(self.mask_dir / f"{stem}.png"), result.mask):
                raise OSError(f"could not write {self.mask_dir / (stem + '.png')}")
        if self._events is not None:
            self._events.write(json.dumps(result.as_event(), separators=(",", ":")) + "\n")

    def flush(self) -> None:
        if self._events is not None:
            self._events.flush()

    def close(self) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None


def make_files_sink(options: FilesOptions, name: str = "files"):
    return FilesSink(options, name)


@hookimpl
def register_sinks():
    return [SinkSpec("files", make_files_sink, "PNG masks + events.jsonl in a folder", options_model=FilesOptions)]
