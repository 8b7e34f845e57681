"""Post-processing plugins: geo-referencing (geo.py) and the telemetry readers it uses (telemetry.py)."""
