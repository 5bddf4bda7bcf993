-- Stateful intraday analytics (docs/analytics.md): columns the analytics sink fills beyond 0005, and
-- chain totals of cumulative OI.  Idempotent: every statement can run twice.

-- OI change against the previous snapshot of the session (NULL for the first snapshot of a session).
ALTER TABLE cumulative_oi ADD COLUMN IF NOT EXISTS oi_change_prev bigint;

-- Velocity normalised by the strike's OI, acceleration and the window actually spanned.
ALTER TABLE velocity ADD COLUMN IF NOT EXISTS oi_velocity_pct double precision;     -- fraction of OI per minute
ALTER TABLE velocity ADD COLUMN IF NOT EXISTS oi_acceleration double precision;     -- OI units per minute^2
ALTER TABLE velocity ADD COLUMN IF NOT EXISTS price_acceleration double precision;  -- rupees per minute^2
ALTER TABLE velocity ADD COLUMN IF NOT EXISTS span_seconds double precision;        -- W <= span <= W + 2W/k

-- One row per chain snapshot: cumulative OI totals of the chain (sums over present legs).
SELECT hft_create_timeseries_table('oi_totals', $cols$
    ts                 timestamptz NOT NULL,
    underlying         text NOT NULL,
    expiry             date NOT NULL,
    session            date NOT NULL,                -- IST trading date of ts
    session_open_ts    timestamptz NOT NULL,         -- first snapshot of the session (the baseline)
    spot               double precision NOT NULL,
    ce_oi              double precision NOT NULL,    -- in the chain's oi_unit
    pe_oi              double precision NOT NULL,
    ce_oi_open         double precision NOT NULL,
    pe_oi_open         double precision NOT NULL,
    ce_change_open     double precision NOT NULL,
    pe_change_open     double precision NOT NULL,
    ce_change_prev     double precision,             -- NULL for the first snapshot of a session
    pe_change_prev     double precision,
    pcr_oi             double precision,             -- PE OI / CE OI
    pcr_change_open    double precision,             -- PE change_open / CE change_open
    oi_unit            text NOT NULL,
    lot_size           integer NOT NULL,
    analytics_version  text NOT NULL,
    PRIMARY KEY (underlying, expiry, ts)
$cols$, 'analytics', 'day', INTERVAL '400 days', 'Cumulative OI totals per chain snapshot (stateful analytics).');
