"""Test-time adaptation adapters (issue 8). Registered through register_adapters."""
