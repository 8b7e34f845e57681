"""`firespotter synth OUT`: write a synthetic flight (images/, masks/, optionally an H.264 MP4)."""

from __future__ import annotations

from pathlib import Path

import cv2
import typer

from firespotter.models.shifts import SHIFTS, check_shift
from firespotter.models.synthetic import SyntheticScene
from firespotter.runtime.errors import FirespotterError
from firespotter.runtime.plugins import hookimpl
from firespotter.runtime.sources import parse_wxh
from firespotter.runtime.specs import CommandSpec
from firespotter.runtime.video import VideoWriter


def parse_size(text: str) -> tuple[int, int]:
    try:
        return parse_wxh(text)
    except ValueError as exc:
        raise FirespotterError(f"--size {exc}") from None


def parse_shift(text: str | None) -> str | None:
    """The shift's name, or a one-line error naming the known ones."""
    if text is None or text == "":
        return None
    try:
        return check_shift(text)
    except ValueError as exc:
        raise FirespotterError(f"--shift: {exc}") from None


def write_flight(out: Path, frames: int, width: int, height: int, seed: int, video: bool, fps: float = 10.0,
                 shift: str | None = None, shift_strength: float = 1.0, prefix: str = "synth") -> dict:
    scene = SyntheticScene(width=width, height=height, frames=frames, seed=seed, shift=parse_shift(shift),
                           shift_strength=shift_strength)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    # A fixed container date (2020-01-01) keeps the MP4 byte-identical for one seed.
    writer = VideoWriter(out / "flight.mp4", width, height, fps, creation_time_s=1577836800) if video else None
    fire_frames = 0
    try:
        for i in range(frames):
            rgb, mask = scene.render(i)
            name = f"{prefix}_{i:06d}.png"
            cv2.imwrite(str(out / "images" / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(out / "masks" / name), mask)
            fire_frames += bool(mask.any())
            if writer is not None:
                writer.write(rgb)
    finally:
        if writer is not None:
            writer.close()
    return {"frames": frames, "fire_frames": fire_frames, "video": writer.codec if writer else None,
            "shift": scene.shift, "mix": scene.mix}


def synth(
    out: Path = typer.Argument(..., help="Output folder (images/, masks/, flight.mp4)."),
    frames: int = typer.Option(100, "--frames", min=1, help="Number of frames."),
    size: str = typer.Option("256x256", "--size", help="WIDTHxHEIGHT."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same bytes."),
    video: bool = typer.Option(False, "--video", help="Also write flight.mp4 (H.264 where GStreamer has it)."),
    fps: float = typer.Option(10.0, "--fps", min=0.1, help="Frame rate of the video."),
    shift: str = typer.Option(None, "--shift", metavar="KIND",
                              help=f"Domain shift on the images after rendering, masks unchanged: {', '.join(SHIFTS)}."),
    shift_strength: float = typer.Option(1.0, "--shift-strength", min=0.0, help="0 none, 1 clear, 2 harsh."),
    flights: int = typer.Option(1, "--flights", min=1, help="Several flights (seeds SEED, SEED+1, ...) into one "
                                "set, named f<seed>_<frame>: a varied evaluation set (no --video)."),
) -> None:
    """Render a synthetic aerial fire flight with exact masks."""
    width, height = parse_size(size)
    shift = parse_shift(shift)
    if flights > 1:
        if video:
            raise FirespotterError("--video writes one flight; drop --video or --flights")
        total = sum(write_flight(out, frames, width, height, seed + k, False, fps, shift, shift_strength,
                                 prefix=f"f{seed + k}")["fire_frames"] for k in range(flights))
        typer.echo(f"wrote {flights} flights x {frames} frames ({total} with fire) to {out}/ images/ masks/")
        return
    stats = write_flight(out, frames, width, height, seed, video, fps, shift, shift_strength)
    codec = f", flight.mp4 ({stats['video']})" if stats["video"] else ""
    shifted = f", shift {shift}" if shift else ""
    typer.echo(f"wrote {frames} frames ({stats['fire_frames']} with fire{shifted}) to {out}/ images/ masks/{codec}")


@hookimpl
def register_commands():
    return [CommandSpec("synth", synth, help="Render a synthetic aerial fire flight with exact masks.")]
