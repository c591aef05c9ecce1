import pytest

from computed.errors import AlreadyExists, Invalid, NotFound
from computed.store.records import FlavorRecord
from scheduler.catalog import DEFAULT_FLAVORS, Catalog

pytestmark = pytest.mark.integration


def test_default_flavors_are_seeded_once_and_edits_survive(store):
    catalog = Catalog(store)
    catalog.seed_flavors()
    catalog.delete_flavor("m1.large")
    catalog.seed_flavors()  # a second scheduler starting: create-if-absent only
    assert [f.name for f in catalog.flavors()] == ["m1.tiny", "m1.small", "m1.medium"]
    assert catalog.flavor("m1.small") == DEFAULT_FLAVORS[1]


def test_flavor_create_validate_conflict_and_not_found(store):
    catalog = Catalog(store)
    assert catalog.create_flavor(FlavorRecord("c1.big", 2, 1024)).vcpus == 2
    with pytest.raises(AlreadyExists):
        catalog.create_flavor(FlavorRecord("c1.big", 2, 1024))
    with pytest.raises(Invalid, match="vcpus"):
        catalog.create_flavor(FlavorRecord("c1.zero", 0, 64))
    with pytest.raises(NotFound):
        catalog.flavor("nope")
    with pytest.raises(NotFound):
        catalog.flavor("../etc")


def test_images_include_the_bundled_guests(store):
    catalog = Catalog(store)
    names = [i.name for i in catalog.images()]
    assert {"hello", "heartbeat", "burn"} <= set(names)
    assert catalog.image("heartbeat").path == ""
    with pytest.raises(NotFound):
        catalog.image("windows")


def test_server_groups(store):
    catalog = Catalog(store)
    group = catalog.create_group("web", "anti-affinity", soft=False)
    assert catalog.group("web")[0] == catalog.group(group.id)[0] == group
    with pytest.raises(AlreadyExists):
        catalog.create_group("web", "affinity", soft=False)
    with pytest.raises(Invalid, match="policy"):
        catalog.create_group("db", "nearby", soft=False)
    catalog.delete_group("web")
    with pytest.raises(NotFound):
        catalog.group("web")
