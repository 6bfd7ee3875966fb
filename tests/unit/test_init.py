"""The public surface: every name in ``imgtools.__all__`` is there, and the pandas side loads
only when it is used."""

import subprocess
import sys

import imgtools


def test_every_public_name_resolves() -> None:
    assert imgtools.__all__ == sorted(imgtools.__all__)
    for name in imgtools.__all__:
        assert getattr(imgtools, name) is not None, name


def test_importing_imgtools_does_not_load_pandas() -> None:
    code = ("import sys, imgtools, imgtools.cli; "
            "print('pandas' in sys.modules); imgtools.tasks_frame; print('pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "True"]
