"""A directory-tree browser for path questions (no GUI dialogs: works over SSH).

Lists folders and only the files a question accepts. Enter on a file picks
it; for a folder question Enter picks the highlighted folder (Space opens
it); Backspace moves the tree up one folder. Returns the path or None.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from easytrain.tui.base import WizardModal
from textual.widgets import DirectoryTree, Footer, Static

from easytrain.tui.paths import shows_entry, wants_files


class FilteredTree(DirectoryTree):
    # Plain symbols instead of emoji: they line up in every terminal font.
    ICON_NODE = "> "
    ICON_NODE_EXPANDED = "v "
    ICON_FILE = "  "

    def __init__(self, path: Path, kind: str, extensions: Iterable[str], **kwargs) -> None:
        self.kind = kind
        self.extensions = tuple(extensions)
        super().__init__(path, **kwargs)

    def filter_paths(self, paths: Iterable[Path]) -> Iterable[Path]:
        return [p for p in paths if not p.name.startswith(".") and shows_entry(p, self.kind, self.extensions)]


def start_folder(typed: str, base_dir: Path) -> Path:
    """The folder to open: the typed path's nearest existing folder, else ``base_dir``."""
    path = Path(os.path.expanduser(typed)) if typed else base_dir
    if not path.is_absolute():
        path = base_dir / path
    while not path.is_dir() and path != path.parent:
        path = path.parent
    return path if path.is_dir() else base_dir


class PathBrowser(WizardModal[Optional[str]]):
    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("backspace", "up", "Up a folder"),
        Binding("u", "use_folder", "Use folder", show=False),
    ]

    def __init__(self, kind: str, extensions: Iterable[str], typed: str, base_dir: Path) -> None:
        super().__init__(classes="browser")
        self.kind = kind
        self.extensions = tuple(extensions)
        self.base_dir = base_dir
        self.root = start_folder(typed, base_dir)

    def compose(self) -> ComposeResult:
        if self.kind == "folder":
            how = "Enter picks the highlighted folder, Space opens it"
        elif self.kind == "model":
            how = "Enter picks a file, Space opens a folder, u picks a diffusers folder"
        else:
            how = "Enter picks a file, Space opens a folder"
        shown = " or ".join(self.extensions) if wants_files(self.kind) and self.extensions else "folders"
        with Vertical(id="browser-box"):
            yield Static(f"Browse ({shown})", id="browser-title", markup=False)
            yield Static(how + "; Backspace goes up, Esc cancels", id="browser-help", markup=False)
            yield FilteredTree(self.root, self.kind, self.extensions, id="tree")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#tree").focus()

    def _answer(self, path: Path) -> str:
        """Relative to the working folder when inside it (shorter, and what people type)."""
        try:
            return str(path.resolve().relative_to(self.base_dir.resolve())) or "."
        except ValueError:
            return str(path)

    @on(DirectoryTree.FileSelected)
    def _file(self, event: DirectoryTree.FileSelected) -> None:
        if wants_files(self.kind):
            self.finish(self._answer(event.path))

    @on(DirectoryTree.DirectorySelected)
    def _folder(self, event: DirectoryTree.DirectorySelected) -> None:
        if self.kind == "folder":
            self.finish(self._answer(event.path))

    def action_use_folder(self) -> None:
        node = self.query_one(FilteredTree).cursor_node
        if node is not None and node.data is not None and Path(node.data.path).is_dir():
            self.finish(self._answer(Path(node.data.path)))

    def action_up(self) -> None:
        tree = self.query_one(FilteredTree)
        parent = Path(tree.path).resolve().parent
        tree.path = parent

    def action_cancel(self) -> None:
        self.finish(None)
