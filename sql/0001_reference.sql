-- Reference tables and the storage machinery every later migration uses.
-- Public interface: table and column names are stable (see docs/storage.md).
-- Idempotent: every statement can run twice.

-- ---------------------------------------------------------------- reference data
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

-- One row per option contract ever seen (written by the sink when a chain's strike set changes).
CREATE TABLE IF NOT EXISTS instruments (
    underlying    text NOT NULL,
    expiry        date NOT NULL,
    strike        double precision NOT NULL,
    option_type   char(2) NOT NULL CHECK (option_type IN ('CE', 'PE')),
    security_id   bigint NOT NULL,
    lot_size      integer NOT NULL,
    first_seen    timestamptz NOT NULL,           -- exchange time of the first snapshot listing it
    PRIMARY KEY (underlying, expiry, strike, option_type)
);
CREATE INDEX IF NOT EXISTS instruments_security_id_idx ON instruments (security_id);

-- Expiries per underlying, derived from instruments.
CREATE OR REPLACE VIEW expiries AS
    SELECT underlying, expiry, count(DISTINCT strike) AS n_strikes, count(*) AS n_contracts,
           max(lot_size) AS lot_size, min(first_seen) AS first_seen
    FROM instruments GROUP BY underlying, expiry;

-- API customers.  Tier limits (rate, history window) come from settings unless overridden here.
CREATE TABLE IF NOT EXISTS tenants (
    id                   bigserial PRIMARY KEY,
    name                 text NOT NULL UNIQUE,
    tier                 text NOT NULL DEFAULT 'free' CHECK (tier IN ('free', 'basic', 'pro', 'enterprise')),
    rate_limit_per_min   integer CHECK (rate_limit_per_min > 0),     -- NULL: the tier's default
    history_days         integer CHECK (history_days >= 0),          -- NULL: the tier's default
    created_at           timestamptz NOT NULL DEFAULT now(),
    disabled_at          timestamptz
);

-- API keys are stored hashed (the key is shown once); key_prefix identifies a key in listings.
CREATE TABLE IF NOT EXISTS api_keys (
    id            bigserial PRIMARY KEY,
    tenant_id     bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name          text NOT NULL DEFAULT '',
    key_prefix    text NOT NULL,
    key_hash      text NOT NULL UNIQUE,           -- hex digest (algorithm recorded in hash_algorithm)
    hash_algorithm text NOT NULL DEFAULT 'sha256',
    scopes        text[] NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX IF NOT EXISTS api_keys_tenant_id_idx ON api_keys (tenant_id);

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

-- ------------------------------------------------------------ storage machinery
-- Written by the migration runner before any migration runs (feature 'timescaledb' = version or
-- 'absent'; feature 'layout' = 'timescaledb' or 'partitioned', fixed when the first migration ran).
CREATE TABLE IF NOT EXISTS storage_features (
    feature text PRIMARY KEY, value text, detected_at timestamptz NOT NULL DEFAULT now());

-- Catalog of time-series tables and rollups with their partitioning and retention.
-- Edit `retention` to change what apply_retention() keeps (TimescaleDB: see docs/storage.md).
CREATE TABLE IF NOT EXISTS timeseries_tables (
    table_name    text PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('raw', 'rollup', 'analytics', 'usage')),
    partition_by  text NOT NULL CHECK (partition_by IN ('day', 'month')),
    retention     interval,                       -- NULL: keep forever
    description   text NOT NULL
);

CREATE OR REPLACE FUNCTION hft_storage_layout() RETURNS text
    LANGUAGE sql STABLE AS
$$ SELECT coalesce((SELECT value FROM storage_features WHERE feature = 'layout'), 'partitioned') $$;

-- Create a time-series table (column list as SQL text) and register it in timeseries_tables.
-- Plain PostgreSQL: range-partitioned on ts (partitions made by hft_ensure_partitions) with BRIN on ts
-- (p_brin_pages_per_range: the BRIN granularity, NULL = PostgreSQL's default of 128 pages).
-- TimescaleDB: an ordinary table that the timescale layer turns into a hypertable; rollups are
-- continuous aggregates there, so for kind 'rollup' nothing is created.
CREATE OR REPLACE FUNCTION hft_create_timeseries_table(
    p_table text, p_columns text, p_kind text, p_partition_by text, p_retention interval, p_description text,
    p_brin_pages_per_range integer DEFAULT NULL
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    partitioned boolean := hft_storage_layout() = 'partitioned';
BEGIN
    INSERT INTO timeseries_tables (table_name, kind, partition_by, retention, description)
    VALUES (p_table, p_kind, p_partition_by, p_retention, p_description)
    ON CONFLICT (table_name) DO UPDATE SET description = EXCLUDED.description;
    IF p_kind = 'rollup' AND NOT partitioned THEN
        RETURN;
    END IF;
    EXECUTE format('CREATE TABLE IF NOT EXISTS %I (%s)%s', p_table, p_columns,
                   CASE WHEN partitioned THEN ' PARTITION BY RANGE (ts)' ELSE '' END);
    IF partitioned THEN
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I USING brin (ts)%s', p_table || '_ts_brin', p_table,
                       CASE WHEN p_brin_pages_per_range IS NULL THEN ''
                            ELSE format(' WITH (pages_per_range = %s)', p_brin_pages_per_range) END);
    END IF;
END $$;

-- Plain PostgreSQL: create the missing partitions of every partitioned time-series table so that
-- [p_from, p_to) is covered.  Returns the names created.  There is no DEFAULT partition: a row for a
-- day without a partition is refused, never silently parked.
CREATE OR REPLACE FUNCTION hft_ensure_partitions(p_from timestamptz, p_to timestamptz)
RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    t record;
    lo timestamp;
    hi timestamp;
    part text;
BEGIN
    IF hft_storage_layout() <> 'partitioned' THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('hft_ensure_partitions'));
    FOR t IN
        SELECT s.table_name, s.partition_by FROM timeseries_tables s
        JOIN pg_partitioned_table p ON p.partrelid = to_regclass(s.table_name)
        ORDER BY s.table_name
    LOOP
        lo := date_trunc(t.partition_by, p_from AT TIME ZONE 'UTC');
        WHILE lo AT TIME ZONE 'UTC' < p_to LOOP
            hi := lo + ('1 ' || t.partition_by)::interval;
            part := t.table_name || '_p'
                    || to_char(lo, CASE t.partition_by WHEN 'day' THEN 'YYYYMMDD' ELSE 'YYYYMM' END);
            IF to_regclass(part) IS NULL THEN
                EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                               part, t.table_name, (lo AT TIME ZONE 'UTC')::text,
                               (hi AT TIME ZONE 'UTC')::text);
                RETURN NEXT part;
            END IF;
            lo := hi;
        END LOOP;
    END LOOP;
END $$;

-- Plain PostgreSQL: drop the partitions of p_table that hold only rows older than p_before.
CREATE OR REPLACE FUNCTION hft_drop_partitions(p_table text, p_before timestamptz)
RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    r record;
    upper_bound timestamptz;
BEGIN
    FOR r IN
        SELECT c.oid::regclass::text AS part, pg_get_expr(c.relpartbound, c.oid) AS bound
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = to_regclass(p_table)
        ORDER BY 1
    LOOP
        upper_bound := (regexp_match(r.bound, 'TO \(''([^'']+)''\)'))[1]::timestamptz;
        IF upper_bound IS NOT NULL AND upper_bound <= p_before THEN
            EXECUTE format('DROP TABLE %s', r.part);
            RETURN NEXT r.part;
        END IF;
    END LOOP;
END $$;
