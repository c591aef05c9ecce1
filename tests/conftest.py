import contextlib
import getpass
import os
import shutil
import tempfile

import pytest

from tests.vmm_harness import VmmFactory


def pytest_unconfigure(config):
    """pyproject's tmp_path_retention_policy = "none" removes this run's tmp_path dirs;
    this removes the per-user dir pytest made them in, once no other run uses it."""
    with contextlib.suppress(OSError):
        os.rmdir(os.path.join(tempfile.gettempdir(), f"pytest-of-{getpass.getuser()}"))


@pytest.fixture
def vmm(tmp_path):
    """Launch real computed-vmm processes; every one is killed at teardown."""
    factory = VmmFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.fixture
def short_tmp():
    """A temp dir with a short path: unix socket paths must fit in 108 bytes."""
    path = tempfile.mkdtemp(prefix="cd-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
