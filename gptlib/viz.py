"""Figures the book shows again and again, and one call for explorable figures.

``explore(render, word=[...], temperature=[...])`` is the book's widget:

* in JupyterLab (a live kernel) it is an ipywidgets control panel: move a control and
  ``render`` runs again;
* on the static site (no kernel) and in tests it renders every setting up front and shows
  the frames behind a row of buttons made of plain HTML + CSS (radio inputs), so the page
  stays explorable with no JavaScript and no network.

Set ``GPTLIB_STATIC=1`` to force the static form (the Makefile does so for the site build
and the tests); ``GPTLIB_STATIC=0`` forces the live form.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import itertools
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

import matplotlib

if "MPLBACKEND" not in os.environ and not any("ipykernel" in m for m in __import__("sys").modules):
    matplotlib.use("Agg")  # scripts and tests: never try to open a window
import matplotlib.pyplot as plt

MAX_FRAMES = 48  # the static form embeds every frame as a PNG: keep pages light
# The book's Chinese terms in figures: a subset of Noto Sans CJK SC with the characters the book
# uses (scripts/subset_cjk_font.py; OFL, gptlib/fonts/OFL.txt). DejaVu Sans has no CJK glyphs.
CJK_FONT = Path(__file__).resolve().parent / "fonts" / "gpt-book-cjk.otf"
CJK_FAMILY = "GPT Book CJK"


def use_book_font() -> None:
    """Make matplotlib draw CJK characters with the bundled font (idempotent; run on import).

    The font is added as a *fallback* family after the default one: Latin text keeps its font,
    and only the glyphs DejaVu Sans lacks (Chinese) come from the subset, on any machine, with
    no "Glyph missing from font(s)" warnings.
    """
    from matplotlib import font_manager

    if not CJK_FONT.exists():  # a stripped install: figures fall back to boxes, not an error
        return
    if CJK_FAMILY not in {f.name for f in font_manager.fontManager.ttflist}:
        font_manager.fontManager.addfont(str(CJK_FONT))
        # The subset has one weight. Registered as bold too, so bold text (titles) finds it
        # without matplotlib logging "Failed to find font weight bold" into the chapter.
        regular = next(f for f in font_manager.fontManager.ttflist if f.name == CJK_FAMILY)
        font_manager.fontManager.ttflist.append(dataclasses.replace(regular, weight=700))
    families = list(matplotlib.rcParams["font.family"])
    if CJK_FAMILY not in families:
        matplotlib.rcParams["font.family"] = [*families, CJK_FAMILY]


use_book_font()


def is_live() -> bool:
    """True when figures can be interactive widgets (a Jupyter kernel, not forced static)."""
    forced = os.environ.get("GPTLIB_STATIC")
    if forced is not None:
        return forced.lower() not in {"1", "true", "yes"}
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def figure_to_png(fig, dpi: int = 100) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it (frees memory in long loops)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _render_png(render: Callable[..., Any], kwargs: dict) -> bytes:
    fig = render(**kwargs)
    if fig is None:  # render drew on the current figure instead of returning one
        fig = plt.gcf()
    return figure_to_png(fig)


def frames_html(frames: Sequence[tuple[str, bytes]], title: str = "", initial: int = 0) -> str:
    """HTML that shows one PNG frame at a time, chosen with buttons (radio inputs + CSS only)."""
    uid = "gf-" + uuid.uuid4().hex[:8]
    rules = "\n".join(
        f"#{uid} input:nth-of-type({i + 1}):checked ~ .gf-frames > .gf-frame:nth-of-type({i + 1})"
        "{display:block}"
        for i in range(len(frames))
    )
    style = (
        f"#{uid} .gf-frame{{display:none}} #{uid} input{{position:absolute;opacity:0;width:0}}"
        f"#{uid} label{{display:inline-block;padding:2px 9px;margin:2px;border:1px solid #999;"
        f"border-radius:4px;cursor:pointer;font-size:0.85em}}"
        f"#{uid} input:checked + label{{background:#2a6fdb;color:#fff;border-color:#2a6fdb}}"
        f"#{uid} img{{max-width:100%}}\n{rules}"
    )
    parts = [f'<div class="gptlib-frames" id="{uid}"><style>{style}</style>']
    if title:
        parts.append(f'<div class="gf-title"><b>{html.escape(title)}</b></div>')
    for i, (label, _) in enumerate(frames):
        checked = " checked" if i == initial else ""
        parts.append(
            f'<input type="radio" name="{uid}" id="{uid}-{i}"{checked}>'
            f'<label for="{uid}-{i}">{html.escape(label)}</label>'
        )
    parts.append('<div class="gf-frames">')
    for label, png in frames:
        data = base64.b64encode(png).decode("ascii")
        parts.append(
            f'<div class="gf-frame"><img src="data:image/png;base64,{data}" '
            f'alt="{html.escape(title + " " + label)}"></div>'
        )
    parts.append("</div></div>")
    return "".join(parts)


def _control(name: str, values: Sequence[Any]):
    import ipywidgets as w

    values = list(values)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric and len(values) > 3:
        return w.SelectionSlider(
            options=values, value=values[0], description=name, continuous_update=False
        )
    if len(values) <= 8:
        return w.ToggleButtons(options=values, value=values[0], description=name)
    return w.Dropdown(options=values, value=values[0], description=name)


def explore(render: Callable[..., Any], title: str = "", **controls: Sequence[Any]):
    """Show ``render(**setting)`` for every setting of ``controls``; explorable everywhere.

    ``render`` draws one matplotlib figure (return it, or draw on ``plt.gcf()``).
    Each keyword is a control: a list of the values the reader may choose.
    Returns the widget (live) or the HTML object (static); both display themselves.
    """
    if not controls:
        raise ValueError(
            "explore() needs at least one control, e.g. explore(draw, word=['a', 'b'])."
        )
    from IPython.display import HTML, display

    names = list(controls)
    if is_live():
        import ipywidgets as w

        widgets = {n: _control(n, controls[n]) for n in names}
        out = w.Output()

        def redraw(**kwargs):
            with out:
                out.clear_output(wait=True)
                fig = render(**kwargs) or plt.gcf()
                display(fig)
                plt.close(fig)

        w.interactive_output(redraw, widgets)
        box = w.VBox([w.HTML(f"<b>{html.escape(title)}</b>")] if title else [])
        box.children = (*box.children, *widgets.values(), out)
        return box

    settings = list(itertools.product(*(controls[n] for n in names)))
    if len(settings) > MAX_FRAMES:
        raise ValueError(
            f"explore(): {len(settings)} settings would embed {len(settings)} images in the page; "
            f"offer at most {MAX_FRAMES} (fewer values per control)."
        )
    frames = []
    for values in settings:
        kwargs = dict(zip(names, values))
        label = ", ".join(f"{v}" if len(names) == 1 else f"{n}={v}" for n, v in kwargs.items())
        frames.append((label, _render_png(render, kwargs)))
    return HTML(frames_html(frames, title=title))


def plot_attention(
    weights,
    xlabels: Sequence[str],
    ylabels: Sequence[str] | None = None,
    ax=None,
    title: str | None = None,
    cmap: str = "Blues",
    annotate: bool = True,
):
    """Heatmap of an attention matrix: row = query (who looks), column = key (looked at)."""
    import numpy as np

    w = np.asarray(weights.detach().cpu() if hasattr(weights, "detach") else weights, dtype=float)
    ylabels = list(xlabels) if ylabels is None else list(ylabels)
    if ax is None:
        size = max(3.0, 0.55 * len(xlabels) + 1.5)
        _, ax = plt.subplots(figsize=(size, size * len(ylabels) / max(1, len(xlabels))))
    ax.imshow(w, cmap=cmap, vmin=0.0, vmax=max(1e-9, float(w.max())))
    ax.set_xticks(range(len(xlabels)), list(xlabels), rotation=45, ha="right")
    ax.set_yticks(range(len(ylabels)), ylabels)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    if annotate and w.size <= 144:
        for i, j in itertools.product(range(w.shape[0]), range(w.shape[1])):
            ax.text(
                j,
                i,
                f"{w[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if w[i, j] > 0.6 * w.max() else "black",
            )
    if title:
        ax.set_title(title)
    return ax.figure


def plot_losses(history: Sequence[dict], ax=None, title: str = "loss", logy: bool = False):
    """Train (every logged step) and validation (every eval) loss from a training history."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    train = [(h["iter"], h["train_loss"]) for h in history if h.get("train_loss") is not None]
    val = [(h["iter"], h["val_loss"]) for h in history if h.get("val_loss") is not None]
    if train:
        ax.plot(*zip(*train), label="train", lw=1, alpha=0.8)
    if val:
        ax.plot(*zip(*val), "o-", label="validation", lw=1.5)
    ax.set_xlabel("iteration")
    ax.set_ylabel("cross-entropy (nats/token)")
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    return ax.figure


class LiveLossPlot:
    """A training callback that redraws the loss curve in place while a model trains.

    Pass it as ``train(..., callback=LiveLossPlot())``. In JupyterLab the figure updates
    every ``every`` calls; elsewhere (site build, tests) it draws once, at ``.show()``.
    """

    def __init__(self, every: int = 25, title: str = "loss"):
        self.every, self.title = every, title
        self.history: list[dict] = []
        self._handle = None
        self._calls = 0

    def figure(self):
        """The figure drawn from ``self.history`` (subclasses plot other keys)."""
        return plot_losses(self.history, title=self.title)

    def __call__(self, entry: dict) -> None:
        self.history.append(dict(entry))
        self._calls += 1
        if is_live() and self._calls % self.every == 0:
            self._draw()

    def _draw(self) -> None:
        from IPython.display import display

        fig = self.figure()
        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)
        plt.close(fig)

    def show(self):
        """Draw the final curve (call once training has finished)."""
        if is_live() and self._handle is not None:
            self._draw()
            return None
        return self.figure()


# The book's stages: (chapters, name, year of the paper), drawn on the landing page and in
# the preface.
BOOK_STAGES = [
    ("1-2", "Attention &\nTransformer", "2017"),
    ("3", "Tokens\n(BPE)", "2016"),
    ("4", "GPT-1\npre-train +\nfine-tune", "2018"),
    ("5", "GPT-2\nzero-shot", "2019"),
    ("6-7", "GPT-3\nin-context\nlearning", "2020"),
    ("8-9", "Codex\ncode, pass@k", "2021"),
    ("10", "Embeddings\ncontrastive", "2022"),
    ("11-14", "InstructGPT\nSFT, RM, PPO\n\u2192 ChatGPT", "2022"),
    ("15", "Making it\nsmall", "2023"),
]


def chapter_map():
    """The map of the book: one box per stage, with its chapters and the year of its paper."""
    stages = BOOK_STAGES
    fig, ax = plt.subplots(figsize=(12, 2.6))
    for i, (chapters, name, year) in enumerate(stages):
        ax.add_patch(
            plt.Rectangle((i * 1.2, 0), 1.0, 1.0, color=plt.cm.viridis(i / len(stages)), alpha=0.85)
        )
        ax.text(
            i * 1.2 + 0.5,
            0.5,
            name,
            ha="center",
            va="center",
            fontsize=7.5,
            color="white",
            weight="bold",
        )
        ax.text(i * 1.2 + 0.5, 1.12, f"ch. {chapters}", ha="center", fontsize=8)
        ax.text(i * 1.2 + 0.5, -0.15, year, ha="center", fontsize=8, color="gray")
        if i:
            ax.annotate(
                "", xy=(i * 1.2, 0.5), xytext=(i * 1.2 - 0.2, 0.5), arrowprops=dict(arrowstyle="->")
            )
    ax.set_xlim(-0.1, len(stages) * 1.2)
    ax.set_ylim(-0.3, 1.3)
    ax.axis("off")
    ax.set_title("From attention to RLHF: the chapters of this book", fontsize=11)
    return fig
