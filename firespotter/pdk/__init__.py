"""The plugin development kit: `firespotter pdk new` scaffolds a plugin package, `firespotter.pdk.testing`
holds the conformance suites and fixtures (a pytest plugin, loaded through the `pytest11` entry point)."""
