"""Execute the tutorial notebooks: ``python -m tests._notebooks`` rewrites them in place."""

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
TIMEOUT_S = 900  # per cell


def execute(path: Path) -> nbformat.NotebookNode:
    """Run ``path`` top to bottom in a fresh kernel; raises on the first failing cell."""
    book = nbformat.read(path, as_version=4)
    client = NotebookClient(
        book,
        timeout=TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    return book


def main(names: list[str]) -> None:
    for path in NOTEBOOKS:
        if names and path.name not in names:
            continue
        start = time.perf_counter()
        book = execute(path)
        nbformat.write(book, path)
        print(f"{path.name}: {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
