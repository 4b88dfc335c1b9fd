"""A store's own disk and clock (issue 19 part 2): what a store operator notices when the
database's file system fills mid-sync, and when the store's clock is off HO's.

- Disk full: the store's photo table sits on a small tmpfs (a tablespace), a full sync of
  more bytes than fit runs out of space mid-run. The run fails with exit 2 and a message
  naming the cause and the fix, no photo is left with bytes that are not its own, the run
  history and the metrics textfile say it failed, and once the volume is grown the next
  run completes. Needs root (mount); skipped otherwise.
- Clock skew: the agent's clock 10 minutes ahead of or behind HO's still gets a token,
  pulls and reports; the token HO issued stays short-lived.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from pathlib import Path

import pytest

from conftest import assert_edge_matches_ho, assert_no_bad_bytes, ho_live_photos
from photo_sync.edge import cli
from photo_sync.edge.client import HOClient
from support import disks, testbed
from support.textfile import samples as _metrics


def _photos(folder: Path, sizes_kb: list[int], seed: int, product: uuid.UUID | None = None
            ) -> Path:
    """JPEGs of these sizes in one product's folder (re-run with another seed: same paths,
    new bytes, so an import bumps their versions)."""
    product = product or uuid.UUID(int=seed, version=4)
    for index, kb in enumerate(sizes_kb):
        testbed.make_jpeg(folder / str(product) / f"photo-{index:03d}.jpg", kb * 1024,
                          seed * 1000 + index)
    return folder


# Disk full ----------------------------------------------------------------------------

def test_disk_full_mid_sync_fails_cleanly_and_the_next_run_completes(
        ho_stack, make_edge, pg, bed_root):
    """The store's photo table on a 1 MB file system; HO changes the 2 photos the store
    holds and adds 6 more (about 1.5 MB in all): the full sync fails once the disk is full,
    keeps every photo's old good bytes or none, records the failure; grown, the next run
    completes."""
    disks.need_root()
    ho = ho_stack("disks")
    root = bed_root / f"disks-{uuid.uuid4().hex[:8]}"
    old = _photos(root / "old", [60, 60], seed=1)
    ho.import_dir(old)
    metrics_file = root / "textfile" / "photo_sync.prom"
    # Pages of 2: each page's photos commit on their own, so the disk fills mid-run.
    edge = make_edge(ho, page_size=2, concurrency=2, metrics_file=str(metrics_file))
    first, _ = edge.pull("full")
    assert first.returncode == 0, first.stderr
    held_before = edge.photos()

    with disks.small_disk(root / "small", 1, pg.url(), edge.database_url) as disk:
        disk.move_table(edge.database_url)
        # HO: new bytes for the two photos the store holds, and six new photos.
        _photos(root / "old", [150, 150], seed=2, product=uuid.UUID(int=1, version=4))
        ho.import_dir(root / "old")
        ho.import_dir(_photos(root / "new", [200] * 6, seed=3))

        result, summary = edge.pull("full")
        assert result.returncode == 2, (result.stdout, result.stderr)
        assert summary is None and "Traceback" not in result.stderr
        message = result.stderr
        assert "No space left on device" in message, message
        assert "free space on the file system" in message, message
        # No photo holds bytes that are not the ones its checksum names, and the two the
        # store held have their old bytes (and old version) or HO's new ones.
        assert_no_bad_bytes(edge)
        held = edge.photos()
        live = ho_live_photos(ho)
        for photo_id, (version, checksum, status, _) in held.items():
            assert status in ("synced", "failed", "pending"), (photo_id, status)
            if status == "synced":
                assert (version, checksum) == live[photo_id] or (
                    held_before.get(photo_id, (None, None))[:2] == (version, checksum)), photo_id
        for photo_id, before in held_before.items():
            data = held[photo_id][3]
            assert data is not None, f"{photo_id} lost its bytes"
            assert hashlib.md5(data).hexdigest() in (before[1], live[photo_id][1]), photo_id
        assert len(held) < len(live), "the disk did not fill: the test proves nothing"

        # The run history and `status` say the run failed and why; nothing left 'running'.
        status = json.loads(edge.cli("status", "--json").stdout)
        last = status["last_runs"][0]
        assert last["mode"] == "full" and last["status"] == "failed", last
        assert "No space left on device" in last["error"], last
        assert not [r for r in status["last_runs"] if r["status"] == "running"]
        # Every 'synced' report queued for HO describes a row the store really holds.
        with edge.db() as conn:
            queued = conn.execute("SELECT o.photo_id::text, o.version, p.version "
                                  "FROM photo_sync_outbox o LEFT JOIN product_photo p "
                                  "ON p.id = o.photo_id WHERE o.status = 'synced'").fetchall()
        assert all(row[1] == row[2] for row in queued), queued

        # The textfile the alerts read: the last run failed, the last success stays the
        # first run's (PhotoSyncNotCompleted fires from it once an hour has passed).
        samples = _metrics(metrics_file)
        assert samples['photo_sync_last_run_success{mode="full"}'] == 0
        success = [v for k, v in samples.items()
                   if k.startswith("photo_sync_last_success_timestamp_seconds")]
        ended = samples['photo_sync_last_run_timestamp_seconds{mode="full"}']
        assert success and success[0] < ended

        # The operator grows the volume; the next run completes and matches HO.
        disk.grow(32)
        again, summary = edge.pull("full")
        assert again.returncode == 0, again.stderr
        assert summary["status"] == "ok"
        assert_edge_matches_ho(edge, ho)
        assert _metrics(metrics_file)['photo_sync_last_run_success{mode="full"}'] == 1


# Clock skew ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def short_token_ho(ho_stack, photo_factory):
    """An HO whose tokens live 5 minutes: shorter than the skew, so an agent that judged
    HO's `exp` by its own clock would see every token expired (store ahead) or keep one
    past its end (store behind)."""
    ho = ho_stack("skew", extra_env={"PHOTO_SYNC_HO_TOKEN_TTL": "300"})
    ho.import_dir(photo_factory(3, seed=71, min_kb=20, max_kb=40, mean_kb=30))
    return ho


def _claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@pytest.mark.parametrize("skew", [600, -600], ids=["store-10min-ahead", "store-10min-behind"])
def test_store_clock_off_by_ten_minutes_still_pulls_and_reports(
        short_token_ho, make_edge, monkeypatch, capsys, skew):
    """The agent runs in this process with its clock `skew` seconds off HO's: a full pull
    and a report succeed with one token each, the tokens are HO's short-lived ones, and HO
    records the store's reports (stamped with the store's own clock)."""
    ho = short_token_ho
    edge = make_edge(ho)
    for key, value in edge.env.items():
        monkeypatch.setenv(key, value)
    tokens: list[str] = []
    real_authenticate = HOClient.authenticate

    def counting(client):
        real_authenticate(client)
        tokens.append(client._token)

    monkeypatch.setattr(HOClient, "authenticate", counting)
    disks.skew_clock(monkeypatch, skew)
    store_now = time.time()

    assert cli.main(["pull", "--mode", "full", "--json", "--no-report"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "ok" and summary["downloaded"] == 3, summary
    assert cli.main(["report", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == {"reported": 3, "pending": 0, "changed": True}, report
    monkeypatch.undo()

    assert_edge_matches_ho(edge, ho)
    # One token per command: none was thrown away as "expired" by the store's clock.
    assert len(tokens) == 2, tokens
    for token in tokens:
        claims = _claims(token)
        assert claims["exp"] - claims["iat"] == 300, claims
        # Issued by HO's clock, not the store's.
        assert abs(claims["iat"] - (store_now - skew)) < 120, (claims, skew)
    with ho.catalog() as conn:
        rows = conn.execute("SELECT status, synced_at FROM photo_sync_status "
                            "WHERE store_id = %s", (edge.store_id,)).fetchall()
    assert [r["status"] for r in rows] == ["synced"] * 3
    # The store's clock is the one in its reports: the skew really was in effect.
    for row in rows:
        assert abs(row["synced_at"].timestamp() - store_now) < 120, (row, skew)
