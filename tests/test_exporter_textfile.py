"""exporter --textfile never replaces what is not a regular file (a FIFO, a device, a symlink)."""
import os
import stat

import pytest
from typer.testing import CliRunner

from ctkit.cli import app


def _export(path):
    return CliRunner().invoke(app, ["exporter", "--textfile", str(path)])


def test_fifo_is_refused_and_kept(tmp_path):
    fifo = tmp_path / "metrics.prom"
    os.mkfifo(fifo)
    result = _export(fifo)
    assert result.exit_code == 2 and "FIFO" in result.output
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_symlink_is_refused_and_target_untouched(tmp_path):
    target = tmp_path / "target"
    target.write_text("keep\n")
    link = tmp_path / "metrics.prom"
    link.symlink_to(target)
    result = _export(link)
    assert result.exit_code == 2 and "symlink" in result.output
    assert os.path.islink(link) and target.read_text() == "keep\n"


def test_device_is_refused(tmp_path):
    dev = tmp_path / "null"
    try:
        os.mknod(dev, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    except OSError:
        pytest.skip("cannot create a device node here")
    result = _export(dev)
    assert result.exit_code == 2 and "device" in result.output
    assert stat.S_ISCHR(os.lstat(dev).st_mode)


def test_directory_is_refused(tmp_path):
    result = _export(tmp_path)
    assert result.exit_code == 2
