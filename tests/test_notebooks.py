"""The tutorial notebooks run top to bottom, and the committed copies carry their outputs."""

import nbformat
import pytest

from tests._notebooks import NOTEBOOKS, execute


def test_there_are_five_notebooks_committed_with_outputs():
    assert len(NOTEBOOKS) == 5
    for path in NOTEBOOKS:
        book = nbformat.read(path, as_version=4)
        code = [c for c in book.cells if c.cell_type == "code"]
        assert code and all(c.execution_count for c in code), f"{path.name} is not executed"
        errors = [o for c in code for o in c.outputs if o.output_type == "error"]
        assert not errors, f"{path.name} was committed with an error"
        images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
        assert images, f"{path.name} shows no plot"


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path):
    execute(path)  # raises CellExecutionError on the first failing cell
