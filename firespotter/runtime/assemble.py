"""Settings + plugins -> a ready Pipeline. Everything is found through the registry, by kind and name; every
plugin's options are validated by its options model (runtime/options.py) before anything is built."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from .config import ModelSettings, ProcessorSettings, Settings, SinkSettings
from .errors import ConfigError, PluginError
from .options import option_keys, toml_value, validated_options
from .pipeline import Pipeline, PipelineOptions
from .post import PostParams
from .protocols import ADAPTER, MODEL, PROCESSOR, SEGMENTER, SINK, SOURCE, ResultObserver, conform
from .sources import open_source


def misplaced_options(registry, spec, model: ModelSettings, where: str) -> None:
    """A config written before backend options had a table of their own put them in [model] options: one line
    that says exactly what to move where (and the same for a model option written among the backend's)."""
    stray = [k for k in model.options if k not in option_keys(spec)]
    if not stray:
        return
    backends = registry.specs("backends")
    candidates = list(backends.values()) if model.backend == "auto" else [backends[model.backend]] \
        if model.backend in backends else []
    owners = sorted({b.name for b in candidates for k in stray if k in option_keys(b)})
    moved = [k for k in stray if any(k in option_keys(b) for b in candidates)]
    if moved:
        them = "it" if len(moved) == 1 else "them"
        raise ConfigError(
            f"{where}: [model] options: {', '.join(moved)} {'is an option' if len(moved) == 1 else 'are options'} "
            f"of the backend ({', '.join(owners)}), not of model {model.name!r}: move {them} to [model] "
            f"backend_options, e.g. backend_options = {toml_value({k: model.options[k] for k in moved})}")


def _model_option_in_backend_table(spec, backend, model: ModelSettings, where: str) -> None:
    moved = [k for k in model.backend_options if k not in option_keys(backend) and k in option_keys(spec)]
    if moved:
        raise ConfigError(
            f"{where}: [model] backend_options: {', '.join(moved)} {'is an option' if len(moved) == 1 else 'are options'}"
            f" of model {model.name!r}, not of backend {backend.name!r}: move {'it' if len(moved) == 1 else 'them'} "
            f"to [model] options, e.g. options = {toml_value({k: model.backend_options[k] for k in moved})}")


def model_and_backend(registry, model: ModelSettings, where: str = "config"):
    """-> (model spec, model instance, backend spec): the model built from its validated options and the backend
    that runs it (for backend='auto', the highest-priority available one that takes one of its formats)."""
    spec = registry.get("models", model.name)
    misplaced_options(registry, spec, model, where)
    options = validated_options(spec, model.options, kind="model", table=f"model.options ({model.name})", where=where)
    instance = conform(spec.factory(options), MODEL, model.name)
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
    return spec, instance, backend


def bind_segmenter(registry, model: ModelSettings, where: str = "config"):
    """-> (segmenter, backend name). The model's options ([model] options) and the backend's ([model]
    backend_options) are validated by their options models (model_and_backend picks the backend)."""
    spec, instance, backend = model_and_backend(registry, model, where)
    if model.precision not in spec.precisions:
        built = tuple(backend.built_precisions())
        if model.precision not in built:
            also = f"; backend {backend.name!r} also builds: {', '.join(built)}" if built else ""
            raise PluginError(f"model {model.name!r} has no precision {model.precision!r}; it offers: "
                              f"{', '.join(spec.precisions)}{also}")
    _model_option_in_backend_table(spec, backend, model, where)
    backend_options = validated_options(backend, model.backend_options, kind="backend",
                                        table=f"model.backend_options ({backend.name})", where=where)
    segmenter = backend.factory(instance, precision=model.precision, device=model.device, options=backend_options)
    return conform(segmenter, SEGMENTER, backend.name), backend.name


def with_options(registry, model: ModelSettings, pairs: Mapping[str, Any]) -> ModelSettings:
    """`model` with extra options (e.g. a command's `--option KEY=VALUE`), each put in its table: a key the
    model's options model declares goes to [model] options, any other to [model] backend_options."""
    own = option_keys(registry.get("models", model.name))
    options, backend_options = dict(model.options), dict(model.backend_options)
    for key, value in pairs.items():
        (options if key in own else backend_options)[key] = value
    return model.model_copy(update={"options": options, "backend_options": backend_options})


def build_sinks(registry, sinks: Sequence[SinkSettings], where: str = "config") -> list[tuple[str, Any]]:
    built = []
    try:
        for i, s in enumerate(sinks):
            spec = registry.get("sinks", s.type)
            name = s.name or s.type
            options = validated_options(spec, s.options(), kind="sink", table=f"sinks[{i}] ({s.type})", where=where)
            built.append((name, conform(spec.factory(options, name=name), SINK, name)))
    except Exception:
        close_all(sink for _, sink in built)  # do not leak open files when a later sink fails
        raise
    return built


def processor_tables(settings: Settings, source: Any = None) -> list[ProcessorSettings]:
    """The [[processors]] tables; the `geo` processor comes first, implied, whenever a pose may appear and no
    table names it: [camera] or [telemetry] are set, or the source says its frames carry poses
    (`carries_poses`). Sinks never georeference, so a pose without `geo` would publish no outlines."""
    tables = list(settings.processors)
    poses = settings.camera or settings.telemetry or (source is not None and conform(source, SOURCE).carries_poses)
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
            options = validated_options(spec, t.options(), kind="processor", table=f"processors[{i}] ({t.type})",
                                        where=where)
            built.append((t.type, conform(spec.factory(options, info=info, registry=registry), PROCESSOR, t.type)))
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


def build_adapters(registry, settings: Settings, segmenter, where: str = "config") -> list[Any]:
    """The [adapt] adapter bound to `segmenter` (none without [adapt] name)."""
    name = settings.adapt.name
    if not name:
        return []
    spec = registry.get("adapters", name)
    options = validated_options(spec, settings.adapt.options, kind="adapter", table=f"adapt.options ({name})",
                                where=where)
    return [conform(spec.factory(segmenter, options), ADAPTER, name)]


def build_pipeline(settings: Settings, registry, *, limit: int | None = None, where: str = "config",
                   observers: Sequence[ResultObserver] = (), extra_sinks: Sequence[tuple[str, Any]] = ()) -> Pipeline:
    """Open the source, bind the model, build the sinks. Fails early, before any frame is read. `observers`
    see every Result leaving the pipeline (after the `on_result` hook)."""
    if not settings.source.uri:
        raise ConfigError(f"{where}: source.uri: no source given", "set [source] uri or pass SOURCE")
    segmenter, backend = bind_segmenter(registry, settings.model, where)
    adapters = build_adapters(registry, settings, segmenter, where)
    sinks: list[tuple[str, Any]] = []
    source = None
    processors: list[tuple[str, Any]] = []
    try:  # whatever was opened is closed again when a later part fails
        sinks = build_sinks(registry, settings.sinks, where) + list(extra_sinks)
        source = open_source(settings.source.uri, registry, source_id=settings.source.source_id,
                             live=settings.runtime.mode == "live", options=settings.source.options, where=where)
        info = {
            "drone_id": settings.runtime.drone_id,
            "source": settings.source.uri,
            "model": settings.model.name,
            "backend": backend,
            "threshold": settings.model.threshold,
            "adapter": settings.adapt.name,
            "source_fps": source.fps,
            # Plain dicts for the network sinks (outbox) and the geo processor (camera, telemetry).
            "outbox": settings.outbox.model_dump(mode="json", exclude_none=True),
            "camera": settings.camera.model_dump(exclude_none=True) if settings.camera else None,
            "telemetry": settings.telemetry.model_dump(mode="json", exclude_none=True) if settings.telemetry else None,
        }
        processors = build_processors(registry, processor_tables(settings, source), info, where)
        return Pipeline(source, segmenter, sinks, pipeline_options(settings, limit=limit), adapters=adapters,
                        processors=processors, hook=registry.hook(), info=info, observers=observers)
    except Exception:
        close_all([*adapters, *(sink for _, sink in sinks), *([source] if source is not None else []),
                   *(p for _, p in processors)])
        raise
