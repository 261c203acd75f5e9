-- 0001: campaigns, per-lead state and timeline, the send ledger, opt-outs,
-- dead letters and campaign stats. Contact details never appear here in clear:
-- identities are SHA-256 hashes of the normalised phone or email.

CREATE TABLE campaigns (
    campaign_id  text PRIMARY KEY,
    name         text        NOT NULL,
    status       text        NOT NULL DEFAULT 'active'
                 CHECK (status IN ('active', 'paused', 'cancelled', 'completed', 'archived')),
    config       jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- The current state of every lead (mirrors the Faust state table).
CREATE TABLE leads (
    campaign_id  text        NOT NULL REFERENCES campaigns (campaign_id) ON DELETE CASCADE,
    lead_id      text        NOT NULL,
    state        text        NOT NULL,
    touch        integer     NOT NULL DEFAULT 0,
    identity_key text,
    tier         text,
    score        double precision,
    timezone     text,
    reason       text,
    version      bigint      NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, lead_id)
);
CREATE INDEX leads_campaign_state_idx ON leads (campaign_id, state);
CREATE INDEX leads_identity_idx ON leads (identity_key);

-- Every state change, in order: a lead's timeline. Upserts on the key make
-- replays harmless.
CREATE TABLE lead_transitions (
    campaign_id  text        NOT NULL,
    lead_id      text        NOT NULL,
    version      bigint      NOT NULL,
    from_state   text,
    to_state     text        NOT NULL,
    touch        integer     NOT NULL DEFAULT 0,
    reason       text,
    occurred_at  timestamptz NOT NULL,
    PRIMARY KEY (campaign_id, lead_id, version)
);

-- At most one provider call per (campaign, lead, touch): the claim is this row.
CREATE TABLE send_ledger (
    campaign_id         text        NOT NULL,
    lead_id             text        NOT NULL,
    touch               integer     NOT NULL,
    channel             text        NOT NULL,
    idempotency_key     text        NOT NULL UNIQUE,
    status              text        NOT NULL
                        CHECK (status IN ('claimed', 'accepted', 'failed', 'ambiguous', 'skipped')),
    provider            text,
    provider_message_id text,
    cost_units          double precision NOT NULL DEFAULT 0,
    attempts            integer     NOT NULL DEFAULT 0,
    error               text,
    campaign_clock      timestamptz,
    claimed_at          timestamptz NOT NULL DEFAULT now(),
    completed_at        timestamptz,
    PRIMARY KEY (campaign_id, lead_id, touch)
);
CREATE INDEX send_ledger_status_idx ON send_ledger (campaign_id, status);

-- Opt-outs hold across campaigns: keyed on the hashed contact identity.
CREATE TABLE opt_outs (
    identity_key text        NOT NULL,
    channel      text        NOT NULL DEFAULT 'all',
    source       text        NOT NULL,
    campaign_id  text,
    lead_id      text,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (identity_key, channel)
);

CREATE TABLE dead_letters (
    id                 bigserial   PRIMARY KEY,
    original_topic     text        NOT NULL,
    original_partition integer     NOT NULL,
    original_offset    bigint      NOT NULL,
    original_key       bytea,
    stage              text        NOT NULL,
    reason             text        NOT NULL,
    error_class        text        NOT NULL,
    error_message      text        NOT NULL,
    attempt            integer     NOT NULL,
    campaign_id        text,
    lead_id            text,
    payload            bytea       NOT NULL,
    failed_at          timestamptz NOT NULL,
    redriven_at        timestamptz,
    UNIQUE (original_topic, original_partition, original_offset, attempt)
);
CREATE INDEX dead_letters_filter_idx ON dead_letters (stage, reason, failed_at);

CREATE TABLE campaign_stats (
    campaign_id  text        NOT NULL,
    metric       text        NOT NULL,
    value        double precision NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (campaign_id, metric)
);
