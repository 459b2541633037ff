"""Run one docs page's code blocks in order, in one fresh namespace, as a script would.

Used by ``test_samples.py`` in a subprocess of its own: ``python run_blocks.py BLOCKS.json``,
where the file holds the page's path and its blocks as ``[line, code]`` pairs. Each block is
compiled under the name ``PAGE:LINE``, so a traceback points at the line of the docs page.
"""

from __future__ import annotations

import json
import sys


def main(path: str) -> None:
    with open(path, encoding="utf-8") as f:
        spec = json.load(f)
    namespace: dict[str, object] = {"__name__": "__main__"}
    for line, code in spec["blocks"]:
        # Pad with blank lines so that the line numbers of a traceback are the page's own.
        source = "\n" * line + code
        exec(compile(source, spec["page"], "exec"), namespace)


if __name__ == "__main__":
    main(sys.argv[1])
