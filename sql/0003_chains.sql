-- Time-series tables for enriched chains. Public interface: names are stable.
-- Primary keys are event time + identity, so the sink is idempotent.

CREATE TABLE IF NOT EXISTS chain_metrics (
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
);
CREATE INDEX IF NOT EXISTS chain_metrics_ts_brin ON chain_metrics USING brin (ts);

CREATE TABLE IF NOT EXISTS option_quotes (
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
    buildup              smallint NOT NULL DEFAULT 0,
    PRIMARY KEY (underlying, expiry, ts, strike, option_type)
);
CREATE INDEX IF NOT EXISTS option_quotes_ts_brin ON option_quotes USING brin (ts);

-- Latest snapshot per (underlying, expiry): the API reads this instead of scanning history.
CREATE TABLE IF NOT EXISTS chain_latest (
    underlying  text NOT NULL,
    expiry      date NOT NULL,
    ts          timestamptz NOT NULL,
    PRIMARY KEY (underlying, expiry)
);
