"""Checks on a finished CLI run (a subprocess.CompletedProcess)."""

from __future__ import annotations


def one_error_line(r, *needles: str) -> str:
    """Exit 2, no traceback, exactly one `error:` line on stderr, holding every needle; returns that line."""
    assert r.returncode == 2, (r.returncode, r.stdout[-1000:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    err = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1, r.stderr[-2000:]
    for n in needles:
        assert n in err[0], err[0]
    return err[0]
