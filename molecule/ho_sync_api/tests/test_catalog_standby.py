"""The catalog's streaming standby as the role makes it (ho_sync_api_catalog_standby_of):
a hot standby in recovery that refuses writes, streaming from its own slot on the
catalog host, and a row committed there appears on it."""

import time
import uuid

import testinfra

testinfra_hosts = ["ansible://psync-mol-ho-standby"]

PRIMARY = "psync-mol-ho"


def sql(host, query, database="postgres"):
    return host.run(f"runuser -u postgres -- psql -X -At -d {database} -c \"{query}\"")


def primary(host):
    return testinfra.get_host(f"ansible://{PRIMARY}",
                              ansible_inventory=host.backend.ansible_inventory)


def test_the_standby_is_in_recovery_and_refuses_writes(host):
    assert sql(host, "SELECT pg_is_in_recovery()").stdout.strip() == "t"
    refused = sql(host, "CREATE TABLE nothing_here (id int)")
    assert refused.rc != 0
    assert "read-only transaction" in refused.stderr


def test_the_standby_holds_the_catalog(host):
    databases = sql(host, "SELECT datname FROM pg_database").stdout.split()
    assert "photo_sync_ho" in databases
    stores = sql(host, "SELECT count(*) FROM sync_store", "photo_sync_ho")
    assert stores.rc == 0, stores.stderr
    assert int(stores.stdout) >= 2


def test_the_catalog_host_streams_to_the_standby_slot(host):
    slots = sql(primary(host), "SELECT slot_name || ':' || active::text FROM pg_replication_slots")
    assert "psync_mol_ho_standby:true" in slots.stdout.split()
    role = sql(primary(host), "SELECT rolreplication::text || rolsuper::text FROM pg_roles "
                              "WHERE rolname = 'photo_sync_replicator'")
    assert role.stdout.strip() == "truefalse"


def test_a_row_committed_on_the_catalog_host_appears_on_the_standby(host):
    marker = str(uuid.uuid4())
    head = primary(host)
    made = sql(head, "CREATE TABLE IF NOT EXISTS molecule_replication_probe (marker text); "
                     f"INSERT INTO molecule_replication_probe VALUES ('{marker}')")
    assert made.rc == 0, made.stderr
    query = f"SELECT count(*) FROM molecule_replication_probe WHERE marker = '{marker}'"
    for _ in range(60):  # replay is usually within milliseconds; wait up to 30 s
        seen = sql(host, query)
        if seen.rc == 0 and seen.stdout.strip() == "1":
            break
        time.sleep(0.5)
    assert seen.rc == 0 and seen.stdout.strip() == "1", seen.stderr
