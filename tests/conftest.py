import shutil
import tempfile

import pytest

from tests.vmm_harness import VmmFactory


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
