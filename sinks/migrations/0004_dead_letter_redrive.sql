-- 0004: which dead letters `leadflow dlq redrive` has republished, so running
-- it twice redrives nothing twice (unless --again). A dead letter is named by
-- where it sits on the dead-letter topic (topic, partition, offset); the
-- original coordinates and failed_at are kept too, so a row left over from a
-- deleted and re-created dead-letter topic is recognised as stale and ignored.
-- The least-privilege app role gets row access through sinks/migrate.py, as
-- for every table.

CREATE TABLE dead_letter_redrives (
    dlq_topic          text        NOT NULL,
    dlq_partition      integer     NOT NULL,
    dlq_offset         bigint      NOT NULL,
    original_topic     text        NOT NULL,
    original_partition integer     NOT NULL,
    original_offset    bigint      NOT NULL,
    stage              text        NOT NULL,
    reason             text        NOT NULL,
    -- The attempt number the redriven record carries (the dead letter's + 1).
    attempt            integer     NOT NULL,
    campaign_id        text,
    lead_id            text,
    failed_at          timestamptz NOT NULL,
    redrive_count      integer     NOT NULL DEFAULT 1,
    first_redriven_at  timestamptz NOT NULL DEFAULT now(),
    redriven_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dlq_topic, dlq_partition, dlq_offset)
);
CREATE INDEX dead_letter_redrives_campaign_idx ON dead_letter_redrives (campaign_id, redriven_at);
