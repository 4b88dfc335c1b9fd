"""Deliver queued per-photo outcomes (the outbox) to HO in batches. HO down loses nothing."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from photo_sync import protocol
from photo_sync.edge.client import HOClient
from photo_sync.edge.settings import EdgeSettings
from photo_sync.edge.store import EdgeStore

BATCH = 500


@dataclass
class ReportResult:
    """What a delivery did: reports delivered, reports still queued."""

    reported: int
    pending: int

    @property
    def changed(self) -> bool:
        """True when a report was delivered."""
        return self.reported > 0


def deliver(settings: EdgeSettings, dry_run: bool = False, client: HOClient | None = None
            ) -> ReportResult:
    """Send the outbox to HO in batches, dropping each entry HO acknowledged; with dry_run
    only count it."""
    store = EdgeStore.from_settings(settings)
    own_client = client is None
    client = client or HOClient.from_settings(settings, pool_size=2)
    reported = 0
    try:
        store.check_schema()
        if dry_run:
            return ReportResult(0, store.pending_report_count())
        batch_size = min(BATCH, protocol.REPORT_BATCH_MAX)
        while True:
            rows = store.pending_reports(batch_size)
            if not rows:
                break
            client.report([{
                "photo_id": str(r["photo_id"]), "status": r["status"], "version": r["version"],
                "synced_at": r["synced_at"].isoformat() if r["synced_at"] else None,
                "error": r["error"]} for r in rows])
            store.drop_reports(rows)
            reported += len(rows)
            if len(rows) < batch_size:
                break
        return ReportResult(reported, store.pending_report_count())
    except psycopg.Error as exc:
        raise store.error(exc) from None
    finally:
        store.close()
        if own_client:
            client.close()
