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
