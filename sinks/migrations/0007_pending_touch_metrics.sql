-- 0007: /metrics counts the unreleased touches by channel and due bucket on
-- every worker every LEADFLOW_METRICS_DB_INTERVAL seconds (agents/web_metrics.py).
-- Without this index that count read the whole queue table, payloads and all
-- (about 1 s of Postgres CPU per poll with a million pending touches); with it
-- the count is an index-only scan and the near buckets are range scans per
-- channel (about 0.2 s). Building it locks pending_touches against writes for
-- about 2 s per million queued rows.
CREATE INDEX pending_touches_channel_due_idx
    ON pending_touches (channel, due_at) WHERE emitted_at IS NULL;
