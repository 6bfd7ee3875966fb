"""``imgtools lab``'s working folder: the shipped notebooks are copied in once, a user's edits
are never overwritten, and the package's own folder is never a working folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgtools.cli import main as cli_main
from imgtools.lab import lab_argv, notebooks_dir, prepare_folder


def test_a_new_folder_gets_the_notebooks_and_edits_are_kept(tmp_path: Path) -> None:
    shipped = sorted(p.name for p in notebooks_dir().glob("*.ipynb"))
    assert len(shipped) == 4
    target = prepare_folder(tmp_path / "lab")
    assert target == tmp_path / "lab" / "notebooks"
    assert sorted(p.name for p in target.glob("*.ipynb")) == shipped
    edited, removed = target / shipped[0], target / shipped[1]
    edited.write_text('{"mine": true}')
    removed.unlink()
    assert prepare_folder(tmp_path / "lab") == target
    assert edited.read_text() == '{"mine": true}'
    assert removed.read_bytes() == (notebooks_dir() / shipped[1]).read_bytes()


def test_the_checkout_is_its_own_working_folder() -> None:
    # `make lab` runs `imgtools lab .` at the top of the checkout: nothing to copy.
    assert prepare_folder(notebooks_dir().parent).resolve() == notebooks_dir().resolve()


def test_the_package_folder_is_refused(tmp_path: Path) -> None:
    import imgtools

    package = Path(imgtools.__file__).parent
    with pytest.raises(ValueError, match="name a working folder of yours"):
        prepare_folder(package / "lab")
    assert not (package / "lab").exists()
    assert cli_main(["lab", str(package / "lab")]) == 2


def test_lab_opens_on_the_notebooks() -> None:
    argv = lab_argv("/work", port=9999, default_url="/lab/tree/notebooks")
    assert "--ServerApp.root_dir=/work" in argv and "--port=9999" in argv
    assert "--ServerApp.default_url=/lab/tree/notebooks" in argv
