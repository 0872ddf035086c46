"""The ladder diagram as an SVG file, drawn with matplotlib (--svg).

Draws the same Ladder as the terminal (tracer/display/ladder.py: steps built from the
annotated timeline, worded by words.py): the two lifelines, the packets as slanted
arrows with their labels along them, each side's steps beside its line, user space
across both. Several ladders (--scenario all, a watch) are stacked in one file, each
under its own title, which names the scenario, the kernel and the backend.

matplotlib is imported here only, so that only --svg pays for it, and only its SVG
backend is used (a Figure without pyplot: no display, no global backend). Text stays
text in the file (svg.fonttype "none") and every step is a group with an id
(`l0-packet-5-label`, `l0-note-7-0`, ...): a browser can search the picture, and tests
read it back with an XML parser.
"""
from __future__ import annotations

import math
from pathlib import Path

from tracer.display.ladder import CALL, LEFT, NOTE, PACKET, RECEIVED, RIGHT, Ladder, Line, plain, wrap

# The timeline's colours (console.LADDER_STYLE) on white: the client strong, the server
# grey, times cyan, user space blue, results green or red, placements magenta.
COLOR = {"title": "#000000", "subtitle": "#555555", "header": "#000000", "time": "#0a7a86", "client": "#000000",
         "server": "#666666", "call": "#000000", "ok": "#1a7f37", "error": "#cf222e", "reason": "#222222",
         "where": "#8a3ea8", "packet": "#000000", "mark": "#0550ae", "other": "#888888", "teardown": "#999999"}
BOLD = {"title", "header", "client", "call", "ok", "error"}

# Sizes in inches (the axes' data units are inches, so the geometry is the drawing's).
WIDTH = 12.0
TIME_X = 0.75  # the times end here
LEFT_X = 5.0  # the left line
RIGHT_X = 7.9  # the right line
GAP = 0.09  # between a line and its notes
ROW = 0.19  # one line of 8-point text
FONT = 8.0
CHARS_PER_INCH = 15.5  # of 8-point DejaVu Sans, with room: where notes wrap
HEAD = 0.95  # title, subtitle, the columns' names
FOOT = 0.25
SLANT = 0.75  # how far (in rows) a packet falls while it crosses: the textbooks' ladder


def _line_style(line: Line) -> tuple[str, str]:
    """One colour and weight for a line of spans: its last span's (a call's result)."""
    roles = [s.role for s in line if s.text.strip()]
    role = roles[-1] if roles else "reason"
    return COLOR.get(role, "#000000"), "bold" if any(r in BOLD for r in roles) else "normal"


def _layout(ld: Ladder) -> tuple[list[tuple[object, float, list[Line]]], float]:
    """(step, its top in rows, its wrapped lines) for each step, and the rows in all."""
    widths = {LEFT: int((LEFT_X - GAP - TIME_X - 0.1) * CHARS_PER_INCH),
              RIGHT: int((WIDTH - 0.2 - RIGHT_X - GAP) * CHARS_PER_INCH)}
    across = int((WIDTH - TIME_X - 0.4) * CHARS_PER_INCH)
    out, row = [], 0.0
    for s in ld.steps:
        if s.kind in (NOTE, CALL) and s.column is not None:
            lines = [w for line in s.lines for w in wrap(line, widths[s.column])]
            height = len(lines)
        elif s.kind in (PACKET, RECEIVED):
            lines = list(s.lines)
            height = 1 + SLANT
        else:
            lines = [w for line in s.lines for w in wrap(line, across)]
            height = len(lines)
        out.append((s, row, lines))
        row += height + 0.25
    return out, row


def _text(ax, x, y, text, role, gid, **kw) -> None:
    color, weight = COLOR.get(role, "#000000"), "bold" if role in BOLD else "normal"
    ax.text(x, y, text, color=color, fontweight=weight, fontsize=kw.pop("size", FONT), gid=gid,
            va=kw.pop("va", "center"), **kw)


def _draw(fig, ld: Ladder, index: int, top: float, height: float) -> None:
    """One ladder in the band of the figure from `top` (inches from the figure's top) down."""
    from matplotlib.patches import FancyArrowPatch

    fig_h = fig.get_figheight()
    ax = fig.add_axes((0, (fig_h - top - height) / fig_h, 1, height / fig_h))
    ax.set_xlim(0, WIDTH)
    ax.set_ylim(height, 0)  # inches down from the band's top
    ax.set_axis_off()
    prefix = f"l{index}"
    _text(ax, 0.15, 0.22, ld.title, "title", f"{prefix}-title", size=11)
    if ld.subtitle:
        _text(ax, 0.15, 0.45, ld.subtitle, "subtitle", f"{prefix}-subtitle", size=9)
    _text(ax, LEFT_X, HEAD - 0.18, ld.columns[LEFT], "header", f"{prefix}-column-0", ha="right", size=9)
    _text(ax, RIGHT_X, HEAD - 0.18, ld.columns[RIGHT], "header", f"{prefix}-column-1", ha="left", size=9)
    _text(ax, TIME_X, HEAD - 0.18, "ms", "time", f"{prefix}-ms", ha="right")
    steps, rows = _layout(ld)
    bottom = HEAD + rows * ROW + 0.1
    for x, column in ((LEFT_X, LEFT), (RIGHT_X, RIGHT)):
        ax.plot([x, x], [HEAD - 0.05, bottom], color="#444444", linewidth=1.2, gid=f"{prefix}-line-{column}")
    for i, (s, row, lines) in enumerate(steps):
        y = HEAD + (row + 0.5) * ROW
        gid = f"{prefix}-{s.kind}-{i}"
        _text(ax, TIME_X, y, f"{s.t_ns / 1e6:.3f}", "time", f"{gid}-time", ha="right", size=7)
        if s.kind in (PACKET, RECEIVED):
            _arrow(ax, s, y, gid, FancyArrowPatch)
        elif s.kind in (NOTE, CALL) and s.column is not None:
            x = LEFT_X - GAP if s.column == LEFT else RIGHT_X + GAP
            line_x = LEFT_X if s.column == LEFT else RIGHT_X
            ax.plot([line_x], [y], marker="o", markersize=3.5, color=COLOR["client" if s.column == LEFT else "server"],
                    gid=f"{gid}-tick")
            for j, line in enumerate(lines):
                color, weight = _line_style(line)
                ax.text(x, y + j * ROW, plain(line), color=COLOR["teardown"] if s.teardown else color,
                        fontweight=weight, fontsize=FONT, va="center", ha="right" if s.column == LEFT else "left",
                        gid=f"{gid}-{j}")
        else:  # MARK, or a socket of neither side: across both lines, on a dotted rule
            ax.plot([TIME_X + 0.1, WIDTH - 0.2], [y, y], color=COLOR["mark"], linewidth=0.6, linestyle=":",
                    gid=f"{gid}-rule")
            for j, line in enumerate(lines):
                color, _ = _line_style(line)
                ax.text((LEFT_X + RIGHT_X) / 2, y + j * ROW, plain(line), color=color, fontsize=FONT, va="center",
                        ha="center", gid=f"{gid}-{j}",
                        bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.0})


def _arrow(ax, s, y: float, gid: str, arrow_patch) -> None:
    """A packet from its sender's line to the other, falling SLANT rows on the way; its label
    along it. A segment seen only where it was received (no packet traced) is dashed."""
    x0, x1 = (LEFT_X, RIGHT_X) if s.column == LEFT else (RIGHT_X, LEFT_X)
    y1 = y + SLANT * ROW
    color = COLOR["teardown"] if s.teardown else COLOR["packet"]
    ax.add_patch(arrow_patch((x0, y), (x1, y1), arrowstyle="-|>", mutation_scale=9, linewidth=1.0, color=color,
                             linestyle="-" if s.kind == PACKET else "--", shrinkA=0, shrinkB=0, gid=f"{gid}-arrow"))
    # The label's angle on the page: y grows downwards here, and both axes are in inches.
    angle = -math.degrees(math.atan2(y1 - y, x1 - x0)) if x1 > x0 else math.degrees(math.atan2(y1 - y, x0 - x1))
    ax.text((x0 + x1) / 2, (y + y1) / 2 - 0.035, plain(s.lines[0]), color=color, fontsize=FONT, ha="center",
            va="bottom", rotation=angle, rotation_mode="anchor", gid=f"{gid}-label", family="DejaVu Sans Mono")


def write(ladders: list[Ladder], path: str | Path) -> None:
    """Draw the ladders, stacked, into the SVG file at path (OSError when it cannot be written)."""
    import matplotlib
    from matplotlib.figure import Figure

    heights = [HEAD + _layout(ld)[1] * ROW + 0.1 + FOOT for ld in ladders] or [HEAD]
    # Fixed ids and no date: the same ladders give the same file.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "trace-halfclose",
                                "font.family": "DejaVu Sans"}):
        fig = Figure(figsize=(WIDTH, sum(heights)), facecolor="white")
        top = 0.0
        for i, (ld, h) in enumerate(zip(ladders, heights)):
            _draw(fig, ld, i, top, h)
            top += h
        fig.savefig(path, format="svg", metadata={"Title": "; ".join(ld.title for ld in ladders), "Date": None,
                                                  "Creator": "trace-halfclose"})
