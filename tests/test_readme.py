"""The README's example must run as written."""

import re
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_example_runs(capsys):
    blocks = _python_blocks()
    assert blocks, "README has no python example"
    for code in blocks:
        exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    assert "nn__net__module__hidden" in capsys.readouterr().out
