"""firespotter: onboard wildfire detection. `firespotter.open(...)` and `firespotter.pipeline(...)` are the
Python API (docs/api.md); they load on first use so that `import firespotter` stays cheap for the CLI."""

__version__ = "0.1.0"

_API = ("open", "pipeline", "Results", "LivePipeline")


def __getattr__(name):
    if name in _API:
        from firespotter import api

        return getattr(api, name)
    raise AttributeError(f"module 'firespotter' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_API))
