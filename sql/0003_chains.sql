-- Time-series tables for enriched chains.  Public interface: names are stable (docs/storage.md).
-- chain_metrics' primary key (identity + event time) is what makes the sink idempotent: the sink
-- inserts a snapshot's chain_metrics row with ON CONFLICT DO NOTHING and writes its option_quotes
-- only when that row is new, in the same transaction.  So option_quotes carries no unique index:
-- (underlying, expiry, ts, strike, option_type) is unique by construction of the write path, and a
-- per-row btree would be the dominant cost of ingest.  It is read by time (BRIN on ts) and per
-- contract through the rollups (option_quotes_1m, ...), which keep their btree keys.

SELECT hft_create_timeseries_table('chain_metrics', $cols$
    ts                   timestamptz NOT NULL,        -- exchange time of the snapshot
    underlying           text NOT NULL,
    expiry               date NOT NULL,
    spot                 double precision NOT NULL,
    forward              double precision,
    time_to_expiry       double precision NOT NULL,   -- years, ACT/365, to 15:30 IST
    pcr_oi               double precision,
    pcr_volume           double precision,
    pcr_doi              double precision,
    max_pain             double precision,
    total_gex            double precision,
    gamma_flip           double precision,
    call_wall            double precision,
    put_wall             double precision,
    atm_iv               double precision,
    rr25                 double precision,
    bf25                 double precision,
    quality_flags        text[] NOT NULL DEFAULT '{}',
    conventions_version  text NOT NULL,
    source               text NOT NULL,
    lot_size             integer NOT NULL,
    oi_unit              text NOT NULL,
    n_contracts          integer NOT NULL,
    received_ts          timestamptz NOT NULL,
    enriched_ts          timestamptz NOT NULL,
    stored_ts            timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (underlying, expiry, ts)
$cols$, 'raw', 'day', INTERVAL '90 days', 'Chain-level analytics per snapshot (one row per underlying, expiry, ts).');

SELECT hft_create_timeseries_table('option_quotes', $cols$
    ts                   timestamptz NOT NULL,
    underlying           text NOT NULL,
    expiry               date NOT NULL,
    strike               double precision NOT NULL,
    option_type          char(2) NOT NULL CHECK (option_type IN ('CE', 'PE')),
    security_id          bigint NOT NULL,
    spot                 double precision NOT NULL,
    last_price           double precision NOT NULL,
    bid                  double precision NOT NULL,
    ask                  double precision NOT NULL,
    bid_qty              bigint NOT NULL,
    ask_qty              bigint NOT NULL,
    volume               bigint NOT NULL,
    oi                   bigint NOT NULL,            -- in oi_unit of the chain (see chain_metrics.oi_unit)
    prev_oi              bigint NOT NULL,
    prev_close           double precision NOT NULL,
    avg_price            double precision NOT NULL,
    broker_iv            double precision,           -- source-reported IV, percent
    iv                   double precision,           -- engine-solved IV, decimal
    delta                double precision,
    gamma                double precision,
    theta                double precision,           -- per year
    vega                 double precision,           -- per 1.00 vol
    rho                  double precision,
    vanna                double precision,
    charm                double precision,
    gex                  double precision,           -- rupees per 1 % move, sign per conventions
    buildup              smallint NOT NULL DEFAULT 0
    -- no primary key: unique (underlying, expiry, ts, strike, option_type) through the sink (see above)
$cols$, 'raw', 'day', INTERVAL '30 days', 'Every contract of every chain snapshot (quotes, OI, IV, Greeks, GEX).',
    32);

-- GEX profile per strike per snapshot: a view over option_quotes (each leg's gex), so the sink writes
-- no separate per-strike rows.  net_gex = call + put (a missing or NULL leg counts as 0; NULL when both
-- are), which is the analytics kernel's per-strike value.  Strikes without any listed leg have no row.
CREATE OR REPLACE VIEW gex_profile AS
    SELECT ts, underlying, expiry, strike,
           max(spot) AS spot,
           sum(gex) AS net_gex,
           sum(gex) FILTER (WHERE option_type = 'CE') AS call_gex,
           sum(gex) FILTER (WHERE option_type = 'PE') AS put_gex
    FROM option_quotes
    GROUP BY ts, underlying, expiry, strike;

-- Latest snapshot per (underlying, expiry): the API reads this instead of scanning history.
CREATE TABLE IF NOT EXISTS chain_latest (
    underlying  text NOT NULL,
    expiry      date NOT NULL,
    ts          timestamptz NOT NULL,
    PRIMARY KEY (underlying, expiry)
);

-- Plain PostgreSQL layout only (empty under TimescaleDB): rollup buckets of a chain that end at or
-- before materialized_until are stored in the rollup tables; later ones are computed on read.
CREATE TABLE IF NOT EXISTS rollup_watermarks (
    underlying          text NOT NULL,
    expiry              date NOT NULL,
    materialized_until  timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (underlying, expiry)
);
