"""Every error is one red line on stderr with exit code 2: no traceback, no password."""

from __future__ import annotations

import subprocess

from pigeon.errors import ConfigError
from tests.cli.conftest import Project


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    assert lines[0].startswith("error: ")
    return lines[0]


def test_an_unknown_url_scheme_is_one_line_without_the_password(project: Project) -> None:
    result = project.invoke("status", "--url", "bogus://ann:s3cret-pw@db.example/x")

    assert result.exit_code == 2
    line = one_line(result.stderr)
    assert "unknown backend URL 'bogus://ann:***@db.example/x'" in line
    assert "memory://" in line
    assert "sqlite://" in line
    assert "s3cret-pw" not in result.stdout + result.stderr


def test_a_missing_module_is_one_line(project: Project) -> None:
    result = project.invoke("send", "no_such_module_here:app", "add", "1")
    assert result.exit_code == 2
    assert "cannot import 'no_such_module_here': no module named" in one_line(result.stderr)


def test_a_missing_attribute_or_something_else_than_an_app_is_one_line(project: Project) -> None:
    module = project.module_name
    for spec, expected in [
        (f"{module}:nope", f"module '{module}' has no attribute 'nope'"),
        (f"{module}:add", f"{module}:add is a Task, not a pigeon.App"),
        (module, "APP must be module:attribute"),
    ]:
        result = project.invoke("status", spec)
        assert result.exit_code == 2, spec
        assert expected in one_line(result.stderr)


def test_a_module_that_fails_to_import_is_one_line(project: Project) -> None:
    (project.root / "broken_app.py").write_text("raise RuntimeError('no config file')\n")
    result = project.invoke("status", "broken_app:app")
    assert result.exit_code == 2
    assert "importing 'broken_app' failed: RuntimeError: no config file" in one_line(result.stderr)


def test_bad_json_kwargs_is_one_line(project: Project) -> None:
    bad = project.invoke("send", project.spec, "add", "1", "--kwargs", "{b: 2}")
    assert bad.exit_code == 2
    assert "--kwargs is not valid JSON" in one_line(bad.stderr)

    not_an_object = project.invoke("send", project.spec, "add", "1", "--kwargs", "[2]")
    assert not_an_object.exit_code == 2
    assert "--kwargs must be a JSON object" in one_line(not_an_object.stderr)


def test_app_and_url_together_is_one_line(project: Project) -> None:
    result = project.invoke("inspect", "x", "--app", project.spec, "--url", project.url)
    assert result.exit_code == 2
    assert "give APP or --url, not both" in one_line(result.stderr)


def test_debug_shows_the_original_exception(project: Project) -> None:
    result = project.invoke("--debug", "status", "--url", "bogus://x")
    assert isinstance(result.exception, ConfigError)


def test_the_real_command_prints_one_line_and_exits_2(project: Project) -> None:
    proc = project.pigeon(
        "status", "--url", "bogus://ann:s3cret-pw@x", stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert out == b""
    assert "unknown backend URL" in one_line(err.decode())
    assert b"s3cret-pw" not in err
