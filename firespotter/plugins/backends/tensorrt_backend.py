"""tensorrt: torch-tensorrt ahead-of-time compiled engines (issue 6). Optional."""
