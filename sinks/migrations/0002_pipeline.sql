-- 0002: what the pipeline stages keep durably.

-- Deduplication within a campaign: the first lead to claim an identity owns it.
CREATE TABLE lead_identities (
    campaign_id  text        NOT NULL,
    identity_key text        NOT NULL,
    lead_id      text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, identity_key)
);

-- Enrichment results by hashed identity, reused until they are older than the TTL.
CREATE TABLE enrichment_cache (
    identity_key text        PRIMARY KEY,
    found        boolean     NOT NULL,
    data         jsonb       NOT NULL,
    fetched_at   timestamptz NOT NULL
);

-- The scheduler's durable queue: one row per (campaign, lead, touch). Released
-- rows keep emitted_at so a replayed schedule does not queue them again.
-- The partial index makes "what is due on my partitions" a range scan, however
-- many touches are pending.
CREATE TABLE pending_touches (
    campaign_id  text        NOT NULL,
    lead_id      text        NOT NULL,
    touch        integer     NOT NULL,
    kafka_partition integer  NOT NULL,
    channel      text        NOT NULL,
    priority     integer     NOT NULL,
    due_at       timestamptz NOT NULL,
    payload      bytea       NOT NULL,
    emitted_at   timestamptz,
    PRIMARY KEY (campaign_id, lead_id, touch)
);
CREATE INDEX pending_touches_due_idx
    ON pending_touches (kafka_partition, due_at) WHERE emitted_at IS NULL;

-- Channels that stopped working for a lead (a bounce, an invalid number).
CREATE TABLE channel_blocks (
    campaign_id  text        NOT NULL,
    lead_id      text        NOT NULL,
    channel      text        NOT NULL,
    reason       text        NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, lead_id, channel)
);

-- The campaign clock's anchor, shared by every worker and kept across restarts.
CREATE TABLE clock_anchor (
    id              integer     PRIMARY KEY CHECK (id = 1),
    wall_anchor     timestamptz NOT NULL,
    campaign_anchor timestamptz NOT NULL,
    scale           double precision NOT NULL
);

-- Inbound webhook events already handled (providers retry; event ids repeat).
CREATE TABLE inbound_events (
    event_id     text        PRIMARY KEY,
    kind         text        NOT NULL,
    campaign_id  text,
    lead_id      text,
    received_at  timestamptz NOT NULL DEFAULT now()
);
