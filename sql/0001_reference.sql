-- Reference tables: underlyings and dead letters.
-- Idempotent: every statement can run twice.

CREATE TABLE IF NOT EXISTS underlyings (
    symbol        text PRIMARY KEY,
    security_id   bigint NOT NULL,
    segment       text NOT NULL,
    exchange      text NOT NULL DEFAULT 'NSE',
    lot_size      integer,
    first_seen    timestamptz NOT NULL DEFAULT now(),
    last_seen     timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS underlyings_security_id_segment_idx ON underlyings (security_id, segment);

CREATE TABLE IF NOT EXISTS dead_letters (
    id                bigserial PRIMARY KEY,
    failed_ts         timestamptz NOT NULL,
    stage             text NOT NULL,
    error_type        text NOT NULL,
    reason            text NOT NULL,
    source_topic      text,
    source_partition  integer,
    source_offset     bigint,
    schema_id         integer,
    underlying        text,
    key               bytea,
    value             bytea,
    dlq_partition     integer,            -- position of the record in the dead-letter topic
    dlq_offset        bigint,
    stored_ts         timestamptz NOT NULL DEFAULT now()
);
-- A dead letter re-read from the same dead-letter-topic position is stored once.
CREATE UNIQUE INDEX IF NOT EXISTS dead_letters_dlq_position_idx
    ON dead_letters (dlq_partition, dlq_offset);
CREATE INDEX IF NOT EXISTS dead_letters_failed_ts_idx ON dead_letters (failed_ts);
