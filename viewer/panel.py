"""The side panel: what the pipeline is doing (text + progress bar) and how much of the scene is drawn."""

from __future__ import annotations

from dataclasses import dataclass

from engine.events import PipelineEvent


@dataclass(frozen=True)
class Progress:
    text: str  # markdown, one or two lines
    fraction: float  # 0..1 of the whole run
    finished: bool = False


def progress_of(event: PipelineEvent) -> Progress:
    """One event -> the panel's status line and overall progress (views weigh equally, optimisation within
    a view fills its share step by step)."""
    total = max(1, event.total_views)
    k = event.view_index
    view = f"View {k + 1} of {event.total_views}"
    kind = event.kind
    if kind == "run_started":
        text, frac = f"Started: {event.total_views} views planned", 0.0
    elif kind == "view_started":
        text, frac = f"{view}: rendering, outpainting, completing depth", k / total
    elif kind == "view_added":
        text, frac = f"{view}: new Gaussians added, optimising", k / total
    elif kind == "optimize_step":
        steps = max(1, event.total_steps)
        loss = "" if event.loss is None else f", loss {event.loss:.4f}"
        text = f"{view}: optimising step {event.step}/{event.total_steps}{loss}"
        frac = (k + min(event.step, steps) / steps) / total
    elif kind == "view_finished":
        text, frac = f"{view}: done", (k + 1) / total
    elif kind == "run_finished":
        return Progress(_with_message(f"Finished: {event.total_views} views", event.message), 1.0, True)
    else:
        text, frac = kind, max(0, k) / total
    return Progress(_with_message(text, event.message), min(max(frac, 0.0), 1.0))


def _with_message(text: str, message: str) -> str:
    return f"**{text}**" + (f"  \n{message}" if message else "")


def splat_stats(total: int, shown: int, server_render: bool) -> str:
    if total == 0:
        return "No Gaussians yet."
    if shown >= total:
        return f"{total:,} Gaussians."
    note = " The server render shows all." if server_render else " Tick *Server render* to see all."
    return f"{total:,} Gaussians; drawing a {shown:,} sample in the browser.{note}"


class StatusPanel:
    def __init__(self, server, title: str = "Generation") -> None:
        gui = server.gui
        with gui.add_folder(title):
            self.status = gui.add_markdown("**Waiting for the pipeline…**")
            self.bar = gui.add_progress_bar(0.0, animated=True)
            self.stats = gui.add_markdown("No Gaussians yet.")

    def show(self, progress: Progress) -> None:
        self.status.content = progress.text
        self.bar.value = round(100.0 * progress.fraction, 1)
        self.bar.animated = not progress.finished

    def show_text(self, text: str, fraction: float = 1.0) -> None:
        self.show(Progress(text, fraction, finished=True))
