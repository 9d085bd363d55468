"""While the store checkpoints, the receiver's writer commits into a staging database beside it
(collector/checkpoint_staging.py) and moves the groups into the store afterwards: every
acknowledged span ends up stored once, a re-sent one counts as a duplicate, and groups a killed
receiver left staged are moved in when the next one starts. Real DuckDB files, a real CHECKPOINT."""

from __future__ import annotations

import os

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from choreoscope.collector import store
from choreoscope.collector.checkpoint_staging import Staging, staging_path
from choreoscope.collector.ingest import Ingester
from choreoscope.collector.metrics import ReceiverMetrics
from tests.test_ingest_json_typed import links, rows


def _store_with_a_long_checkpoint_due(path) -> None:
    """100k spans in small transactions, never checkpointed: a WAL of ~30 MB whose CHECKPOINT
    takes ~0.15 s here, against a few ms for a 200-span group commit."""
    con = store.connect(path)
    con.execute("SET checkpoint_threshold = '1000TB'")
    for i in range(50):
        with store.transaction(con):
            store.insert_arrow(con, rows(2_000, first=10_000_000 + i * 2_000), None, skip_duplicates=False)
    con.close()  # a close checkpoints: reopen with the threshold off, then add the WAL again
    con = store.connect(path)
    con.execute("SET checkpoint_threshold = '1000TB'")
    for i in range(50):
        with store.transaction(con):
            store.insert_arrow(con, rows(2_000, first=20_000_000 + i * 2_000), None, skip_duplicates=False)
    return con


def test_groups_commit_to_staging_during_a_checkpoint_and_are_stored_once(tmp_path):
    path = tmp_path / "s.duckdb"
    con = _store_with_a_long_checkpoint_due(path)
    assert os.path.getsize(str(path) + ".wal") > 1 << 20
    ingester = Ingester(con, checkpoint_bytes=1 << 20).start()
    batches = [rows(200, first=i * 200) for i in range(30)]
    for batch in batches:  # one at a time: each acknowledged before the next is sent
        assert ingester.submit_arrow(batch, links(batch)).result(timeout=30) == 200
    assert ingester.submit_arrow(batches[3], links(batches[3])).result(timeout=30) == 200  # a retry
    ingester.stop()
    assert ingester.checkpoints >= 1
    assert ingester.groups_staged >= 1  # some groups went to staging while the checkpoint ran
    scraped = {sample.name: sample.value for family in text_string_to_metric_families(
        generate_latest(ReceiverMetrics(ingester).registry).decode()) for sample in family.samples}
    assert scraped["choreoscope_checkpoints_total"] == ingester.checkpoints
    assert scraped["choreoscope_commits_staged_total"] == ingester.groups_staged
    stats = ingester.stats()
    assert (stats.spans_stored, stats.spans_duplicate) == (6_000, 200)
    ids = [f"{i + 1:032x}" for i in range(6_000)]
    assert store.scalar(con, "SELECT count(*) FROM spans WHERE trace_id IN (SELECT unnest(?))", [ids]) == 6_000
    assert store.scalar(con, "SELECT count(*) FROM span_links WHERE trace_id IN (SELECT unnest(?))", [ids]) == 6_000
    assert store.scalar(con, "SELECT count(*) - count(DISTINCT (trace_id, span_id)) FROM spans") == 0
    assert store.scalar(con, "SELECT count(*) FROM spans") == store.scalar(con, "SELECT count(*) FROM span_keys")
    assert not os.path.exists(staging_path(str(path)))  # emptied and removed on the way out
    con.close()


def test_groups_left_staged_by_a_killed_receiver_are_moved_in_at_the_next_writable_open(tmp_path, capsys):
    path = tmp_path / "s.duckdb"
    con = store.connect(path)
    with store.transaction(con):
        store.insert_arrow(con, rows(5), links(rows(5)))  # spans 0-4 reached the store before the kill
    cur = con.cursor()
    staging = Staging(cur, str(path))
    first, second = rows(10), rows(10, first=5)
    staging.commit(cur, store.as_json_typed(first), store.as_json_typed(links(first)))
    staging.commit(cur, second, links(second))
    cur.close()
    con.close()  # what a kill -9 leaves: both groups committed to the staging database, not moved
    assert os.path.exists(staging_path(str(path)))
    capsys.readouterr()

    con = store.connect(path, read_only=True)  # cannot move them: says they are not read
    assert "may hold acknowledged spans" in capsys.readouterr().err
    assert store.scalar(con, "SELECT count(*) FROM spans") == 5
    con.close()

    con = store.connect(path)
    assert "moving 2 group(s) of acknowledged spans" in capsys.readouterr().err
    assert store.scalar(con, "SELECT count(*) FROM spans") == 15  # spans 0-14, each once
    assert store.scalar(con, "SELECT count(*) FROM span_keys") == 15
    assert store.scalar(con, "SELECT count(*) FROM span_links") == 15  # the moved spans' links, once
    assert not os.path.exists(staging_path(str(path)))
    ingester = Ingester(con).start()  # and a receiver on it starts as on any store
    batch = rows(3, first=100)
    assert ingester.submit_arrow(batch, None).result(timeout=30) == 3
    ingester.stop()
    assert store.scalar(con, "SELECT count(*) FROM spans") == 18
    con.close()


def test_a_staging_file_that_cannot_be_read_is_named_and_the_store_opens_without_it(tmp_path):
    path = tmp_path / "s.duckdb"
    con = store.connect(path)
    with store.transaction(con):
        store.insert_arrow(con, rows(4), None)
    con.close()
    staged = staging_path(str(path))
    with open(staged, "wb") as fh:
        fh.write(b"not a database" * 1000)
    with pytest.raises(store.StoreError) as caught:
        store.connect(path)
    message = str(caught.value)
    assert staged in message and "Nothing stored is damaged" in message and "\n" not in message
    os.rename(staged, staged + ".moved-away")
    con = store.connect(path)
    assert store.scalar(con, "SELECT count(*) FROM spans") == 4
    con.close()
