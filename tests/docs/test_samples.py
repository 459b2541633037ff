"""Every code sample of the documentation site runs, and the site builds.

Conventions in the pages (``docs/index.md`` and ``docs/site/*.md``):

- Each fenced ``python`` block without a title is part of the page's script: a page's blocks
  run in order, in one fresh namespace, in a process of their own (``run_blocks.py``), in a
  fresh directory, with ``PIGEON_URL`` pointing at a fresh SQLite file there.
- A fenced block with ``title="NAME"`` (any language) is a file the reader would write: it
  is written as ``NAME`` into that directory before anything runs, so that the script (and
  the worker) can import it. ``test_*.py`` files are then run with pytest there, as the
  reader would run them (the ``pigeon.testing`` plugin is what they use).
- ``<!-- docs-test: worker ARGS -->`` in a page starts a real ``pigeon worker ARGS`` process
  on that SQLite file for the page's script; it must exit 0 on SIGTERM afterwards.
- ``<!-- no-run: REASON -->`` on the line before a ``python`` block leaves it out (a sample
  that needs a server the test cannot assume); the reason is required.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "docs" / "index.md", *sorted((ROOT / "docs" / "site").glob("*.md"))]
FENCE = re.compile(r"^```(?P<lang>[\w+-]*)(?P<attrs>[^\n]*)$")
TITLE = re.compile(r'title="(?P<title>[^"]+)"')
NO_RUN = re.compile(r"^<!-- no-run: (?P<reason>\S.*?) -->$")
WORKER = re.compile(r"^<!-- docs-test: worker (?P<args>.+?) -->$", re.MULTILINE)
IMPORTS = re.compile(r"^\s*(?:from|import)\s+(\w+)", re.MULTILINE)


@dataclass
class Page:
    """What a docs page holds for this test: its script, its files, the workers it needs."""

    path: Path
    blocks: list[tuple[int, str]] = field(default_factory=list)  # (line, code), in order
    files: dict[str, str] = field(default_factory=dict)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)
    workers: list[list[str]] = field(default_factory=list)


def parse(path: Path) -> Page:
    page = Page(path)
    text = path.read_text(encoding="utf-8")
    page.workers = [m["args"].split() for m in WORKER.finditer(text)]
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence is None:
            assert not re.match(r"^\s+```python", lines[i]), (
                f"{path.name}:{i + 1}: an indented python block; put samples at the left margin"
                " so that this test sees them"
            )
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j] == "```")
        code = "\n".join(lines[i + 1 : end]) + "\n"
        title = TITLE.search(fence["attrs"])
        before = NO_RUN.match(lines[i - 1]) if i else None
        if title is not None:
            page.files[title["title"]] = code
        elif fence["lang"] == "python":
            if before is not None:
                page.skipped.append((i + 1, before["reason"]))
            else:
                page.blocks.append((i + 1, code))  # the code starts on the line after the fence
        i = end + 1
    return page


def environment(directory: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIGEON_")}
    env["PIGEON_URL"] = f"sqlite:///{directory / 'pigeon.db'}"
    env["PYTHONPATH"] = str(directory)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run(args: list[str], directory: Path, env: dict[str, str], what: str) -> None:
    done = subprocess.run(args, cwd=directory, env=env, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, (
        f"{what} failed (exit {done.returncode})\n--- stdout\n{done.stdout}\n"
        f"--- stderr\n{done.stderr}"
    )


def test_every_page_has_samples_and_few_exceptions() -> None:
    pages = [parse(p) for p in PAGES]
    assert len(pages) > 1, "no pages under docs/site/"
    skipped = [(p.path.name, line, why) for p in pages for line, why in p.skipped]
    ran = sum(len(p.blocks) for p in pages)
    assert len(skipped) <= 3, f"too many samples left out: {skipped}"
    assert ran >= 10, f"only {ran} python blocks run"


def test_every_module_a_page_writes_is_used() -> None:
    for page in map(parse, PAGES):
        used = {name for _, code in page.blocks for name in IMPORTS.findall(code)}
        used |= {name for code in page.files.values() for name in IMPORTS.findall(code)}
        used |= {args[0].split(":")[0] for args in page.workers}
        for name in page.files:
            module = name.removesuffix(".py")
            if name.endswith(".py") and name != "conftest.py" and not name.startswith("test_"):
                assert module in used, f"{page.path.name}: {name} is written but never imported"


SAMPLED = [p for p in PAGES if parse(p).blocks or parse(p).files]  # api.md has none


@pytest.mark.parametrize("path", SAMPLED, ids=[p.stem for p in SAMPLED])
def test_page_samples_run(path: Path, tmp_path: Path) -> None:
    page = parse(path)
    for name, code in page.files.items():
        assert "/" not in name, f"{path.name}: title {name!r} must be a file name"
        (tmp_path / name).write_text(code, encoding="utf-8")
    env = environment(tmp_path)
    workers = []
    for n, args in enumerate(page.workers):
        with (tmp_path / f"worker-{n}.log").open("wb") as log:
            command = [sys.executable, "-m", "pigeon", "worker", *args]
            workers.append(subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=log))
    try:
        if page.blocks:
            spec = tmp_path / "blocks.json"
            rel = str(path.relative_to(ROOT))
            spec.write_text(json.dumps({"page": rel, "blocks": page.blocks}), encoding="utf-8")
            runner = Path(__file__).with_name("run_blocks.py")
            run([sys.executable, str(runner), str(spec)], tmp_path, env, f"{rel}'s samples")
        tests = [name for name in page.files if name.startswith("test_") and name.endswith(".py")]
        if tests:
            command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests]
            run(command, tmp_path, env, f"pytest on {path.name}'s {', '.join(tests)}")
    finally:
        for n, worker in enumerate(workers):
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
            try:
                code = worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
                code = None
            log = (tmp_path / f"worker-{n}.log").read_text(errors="replace")
            assert code == 0, f"worker {page.workers[n]} exited {code}; its log:\n{log}"


def test_site_builds_strict(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("mkdocs is not installed (it is in the dev extra)")
        pytest.skip("mkdocs is not installed: pip install -e '.[dev]'")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-q"]
    run([*command, "--site-dir", str(tmp_path / "site")], ROOT, env, "mkdocs build --strict")
