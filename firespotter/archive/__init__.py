"""Replaying a footage archive: many recorded flights, each into its own folder exactly as a single replay,
spread over local worker processes or a Ray cluster, resumable, with an archive-wide index and fire map.

plan.py     inputs -> flights (globs, ids, input hashes), the config hash, the done-marker and skip rule
flight.py   one flight in a worker: threads, the replay itself, its index row, outputs packed for the driver
local.py    the local pool (`--jobs N`): worker processes
cluster.py  Ray tasks (`--ray [ADDRESS]`): resources per flight, shared storage or outputs through the driver
driver.py   submit, retry a bounded number of times, progress over flights and frames, Ctrl-C, the summary
index.py    DIR/index.json, DIR/index.html, DIR/firemap.geojson and DIR/firemap.kml
"""
