"""Settings + plugins -> a ready Pipeline. Everything is found through the registry, by kind and name."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from pydantic import ValidationError

from .config import (ModelSettings, PluginTable, ProcessorSettings, Settings, SinkSettings, reject_non_finite,
                     describe_validation_error)
from .errors import ConfigError, PluginError
from .pipeline import Pipeline, PipelineOptions
from .post import PostParams
from .sources import open_source


def bind_segmenter(registry, model: ModelSettings):
    """-> (segmenter, backend name). Picks the highest-priority available backend for backend='auto'."""
    spec = registry.get("models", model.name)
    instance = spec.factory(model.options)
    formats = tuple(instance.formats())
    if model.backend == "auto":
        candidates = [
            b for b in registry.specs("backends").values() if set(b.formats) & set(formats) and b.available()
        ]
        if not candidates:
            raise PluginError(f"no available backend runs model {model.name!r} (formats: {', '.join(formats)})",
                              "run `firespotter plugins` to see which backends are missing and why")
        backend = max(candidates, key=lambda b: b.priority)
    else:
        backend = registry.get("backends", model.backend)
        if not set(backend.formats) & set(formats):
            raise PluginError(
                f"backend {model.backend!r} cannot run model {model.name!r}: it runs {', '.join(backend.formats)}, "
                f"the model comes as {', '.join(formats)}"
            )
    if model.precision not in spec.precisions:
        built = tuple(getattr(backend, "built_precisions", tuple)())
        if model.precision not in built:
            also = f"; backend {backend.name!r} also builds: {', '.join(built)}" if built else ""
            raise PluginError(f"model {model.name!r} has no precision {model.precision!r}; it offers: "
                              f"{', '.join(spec.precisions)}{also}")
    segmenter = backend.factory(instance, precision=model.precision, device=model.device, options=model.options)
    return segmenter, backend.name


def validated_options(spec: Any, table: PluginTable, kind: str, index: int, where: str) -> Any:
    """A [[processors]]/[[sinks]] table's options checked by the plugin's options model, in one place, with
    errors that name the table (`sinks[1] (mqtt): ...`). kind: "sink" or "processor"."""
    label = f"{kind}s[{index}]"
    options: Any = table.options()
    if spec.options_model is not None:
        try:
            validated = spec.options_model.model_validate(options)
        except ValidationError as exc:
            msg = describe_validation_error(exc, where, root=spec.options_model)
            raise ConfigError(msg.replace(f"{where}: ", f"{where}: {label} ({table.type}): ")) from None
        reject_non_finite(validated, f"{where}: {label} ({table.type})")
        return validated
    if options:
        raise ConfigError(f"{where}: {label} ({table.type}): this {kind} takes no options, got {', '.join(options)}")
    return options


def build_sinks(registry, sinks: Sequence[SinkSettings], where: str = "config") -> list[tuple[str, Any]]:
    built = []
    try:
        for i, s in enumerate(sinks):
            spec = registry.get("sinks", s.type)
            name = s.name or s.type
            built.append((name, spec.factory(validated_options(spec, s, "sink", i, where), name=name)))
    except Exception:
        close_all(sink for _, sink in built)  # do not leak open files when a later sink fails
        raise
    return built


def processor_tables(settings: Settings, source: Any = None) -> list[ProcessorSettings]:
    """The [[processors]] tables; the `geo` processor comes first, implied, whenever a pose may appear and no
    table names it: [camera] or [telemetry] are set, or the source says its frames carry poses
    (`carries_poses`). Sinks never georeference, so a pose without `geo` would publish no outlines."""
    tables = list(settings.processors)
    poses = settings.camera or settings.telemetry or getattr(source, "carries_poses", False)
    if poses and not any(t.type == "geo" for t in tables):
        tables.insert(0, ProcessorSettings(type="geo"))
    return tables


def build_processors(registry, tables: Sequence[ProcessorSettings], info: dict[str, Any],
                     where: str = "config") -> list[tuple[str, Any]]:
    """One instance of each processor for this pipeline, in order."""
    built = []
    try:
        for i, t in enumerate(tables):
            spec = registry.get("processors", t.type)
            built.append((t.type, spec.factory(validated_options(spec, t, "processor", i, where), info=info,
                                               registry=registry)))
    except Exception:
        close_all(p for _, p in built)
        raise
    return built


def close_all(components: Iterable[Any]) -> None:
    for c in components:
        try:
            c.close()
        except Exception:
            pass


def pipeline_options(settings: Settings, *, limit: int | None = None) -> PipelineOptions:
    rt, post = settings.runtime, settings.post
    return PipelineOptions(
        mode=rt.mode,
        deadline_ms=rt.deadline_ms,
        queue_size=rt.queue_size,
        sink_queue_size=rt.sink_queue_size,
        drain_timeout_s=rt.drain_timeout_s,
        post=PostParams(
            threshold=settings.model.threshold,
            min_region_px=post.min_region_px,
            alert_min_area_px=post.alert_min_area_px,
            alert_min_peak=post.alert_min_peak,
            max_regions=post.max_regions,
        ),
        limit=limit,
    )


def build_pipeline(settings: Settings, registry, *, limit: int | None = None, where: str = "config",
                   on_progress=None, extra_sinks: Sequence[tuple[str, Any]] = ()) -> Pipeline:
    """Open the source, bind the model, build the sinks. Fails early, before any frame is read."""
    if not settings.source.uri:
        raise ConfigError(f"{where}: source.uri: no source given", "set [source] uri or pass SOURCE")
    segmenter, backend = bind_segmenter(registry, settings.model)
    adapters = []
    if settings.adapt.name:
        adapters.append(registry.get("adapters", settings.adapt.name).factory(segmenter, settings.adapt.options))
    sinks = build_sinks(registry, settings.sinks, where) + list(extra_sinks)
    try:
        source = open_source(settings.source.uri, registry, source_id=settings.source.source_id,
                             live=settings.runtime.mode == "live", options=settings.source.options)
    except Exception:
        close_all(sink for _, sink in sinks)
        raise
    info = {
        "drone_id": settings.runtime.drone_id,
        "source": settings.source.uri,
        "model": settings.model.name,
        "backend": backend,
        "threshold": settings.model.threshold,
        "adapter": settings.adapt.name,
        "source_fps": getattr(source, "fps", None),
        # Plain dicts for the network sinks (outbox) and the geo processor (camera, telemetry).
        "outbox": settings.outbox.model_dump(mode="json", exclude_none=True),
        "camera": settings.camera.model_dump(exclude_none=True) if settings.camera else None,
        "telemetry": settings.telemetry.model_dump(mode="json", exclude_none=True) if settings.telemetry else None,
    }
    try:
        processors = build_processors(registry, processor_tables(settings, source), info, where)
    except Exception:
        close_all([source, *(sink for _, sink in sinks)])
        raise
    return Pipeline(source, segmenter, sinks, pipeline_options(settings, limit=limit), adapters=adapters,
                    processors=processors, hook=registry.hook(), info=info, on_progress=on_progress)
