"""Both scripts tell a user of a Python older than 3.10 which version they need."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

SCRIPTS = ["mail_checker.py", "tg_bot.py"]


def older_interpreters() -> list[tuple[str, str]]:
    """(path, "major.minor") of the Pythons older than 3.10 on this machine, on PATH or
    installed by pyenv, that run (a pyenv shim of an inactive version does not)."""
    candidates = {
        shutil.which(f"python{version}") for version in ("2.7", "3.6", "3.7", "3.8", "3.9")
    }
    pyenv = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates.update(glob.glob(f"{pyenv}/versions/[23].[0-9].*/bin/python"))  # not 3.10 and up
    found = []
    for path in sorted(filter(None, candidates)):
        probe = run_under(path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])")
        if probe.returncode == 0:
            found.append((path, probe.stdout.strip()))
    return found


def run_under(interpreter: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [interpreter, *arguments],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={"PATH": os.environ["PATH"]},
        timeout=60,
    )


@pytest.mark.parametrize("script", SCRIPTS)
def test_older_python_gets_one_line_before_any_import(script: str) -> None:
    # This interpreter, told it is 3.9 and unable to import the dependencies: the version
    # check must come first, and its line must be all there is.
    pretend = (
        "import runpy, sys; sys.version_info = (3, 9, 18, 'final', 0); "
        "sys.modules.update(dns=None, dotenv=None, idna=None, aiogram=None); "
        f"runpy.run_path({script!r}, run_name='__main__')"
    )
    run = run_under(sys.executable, "-c", pretend)
    assert (run.returncode, run.stdout) == (2, "")
    version = sys.version.split()[0]
    assert run.stderr == f"{script}: needs Python 3.10 or newer, not {version}\n"


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize(
    "interpreter",
    older_interpreters() or [None],
    ids=lambda interpreter: interpreter[1] if interpreter else "none",
)
def test_real_older_python_names_the_version_needed(
    interpreter: tuple[str, str] | None, script: str
) -> None:
    if interpreter is None:
        pytest.skip("no Python older than 3.10 on this machine")
    path, version = interpreter
    run = run_under(path, script, "--help")
    assert run.stdout == ""
    if version in ("3.8", "3.9"):
        assert run.returncode == 2
        assert run.stderr.startswith(f"{script}: needs Python 3.10 or newer, not {version}.")
        assert len(run.stderr.splitlines()) == 1
    else:  # it cannot parse the file: its SyntaxError stops on the line that names the version
        assert run.returncode != 0
        assert f'"{script}: needs Python 3.10 or newer, not"' in run.stderr


@pytest.mark.parametrize(
    ("script", "module"), [("mail_checker.py", "dns"), ("tg_bot.py", "dotenv")]
)
def test_missing_dependencies_get_one_line_naming_the_virtual_environment(
    script: str, module: str
) -> None:
    # -S: no site-packages, as for a user who forgot to activate the virtual environment.
    run = run_under(sys.executable, "-S", script, "--help")
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr.splitlines() == [
        f"{script}: the module {module!r} is not installed for {sys.executable}: activate the "
        "virtual environment (. .venv/bin/activate) or run pip install -r requirements.txt"
    ]


def test_tg_bot_without_aiogram_says_so_in_one_line_when_it_comes_to_send(
    tmp_path: Path,
) -> None:
    (tmp_path / "message.txt").write_text("hello\n")
    blocked = (
        "import runpy, sys; sys.modules['aiogram'] = None; "
        f"runpy.run_path({str(REPO_ROOT / 'tg_bot.py')!r}, run_name='__main__')"
    )
    run = subprocess.run(
        [sys.executable, "-c", blocked],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "API_TOKEN": "123456789:" + "A" * 35, "USER_ID": "42"},
        timeout=60,
    )
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr.splitlines() == [
        f"tg_bot.py: the module 'aiogram' is not installed for {sys.executable}: activate the "
        "virtual environment (. .venv/bin/activate) or run pip install -r requirements.txt"
    ]
