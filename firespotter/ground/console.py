"""The ground station's table in a terminal: a live `rich` table on a TTY, plain text lines otherwise."""

from __future__ import annotations

from .station import GroundStation

COLUMNS = ["drone", "state", "fps", "alert", "fires", "regions", "area", "outbox", "last seen"]


def rich_table(gs: GroundStation, where: str):
    from rich.markup import escape
    from rich.table import Table

    link = "" if gs.link["connected"] else f" [bold red]NOT CONNECTED: {escape(str(gs.link['error'] or 'connecting'))}[/]"
    t = Table(title=f"firespotter listen ({escape(where)}){link}", caption=gs.summary())
    for c in COLUMNS:
        t.add_column(c)
    for row in gs.table_rows():
        t.add_row(*row)
    return t


def plain_table(gs: GroundStation) -> str:
    rows = gs.table_rows()
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    lines.append(gs.summary())
    return "\n".join(lines)


def print_plain(gs: GroundStation) -> None:
    print(plain_table(gs), flush=True)
