-- Time-series tables of the stateful analytics (written through PostgresChainStore.write_rows) and
-- API usage.  Public interface: names are stable (docs/storage.md).  Primary keys are identity +
-- event time, so rewriting the same rows is a no-op (ON CONFLICT DO NOTHING).

SELECT hft_create_timeseries_table('cumulative_oi', $cols$
    ts                 timestamptz NOT NULL,
    underlying         text NOT NULL,
    expiry             date NOT NULL,
    strike             double precision NOT NULL,
    option_type        char(2) NOT NULL CHECK (option_type IN ('CE', 'PE')),
    oi                 bigint NOT NULL,              -- in the chain's oi_unit
    oi_session_open    bigint,                       -- OI at the first snapshot of the session
    oi_change          bigint,                       -- oi - oi_session_open
    oi_change_pct      double precision,             -- oi_change / oi_session_open
    price_change       double precision,             -- last_price - last_price at session open
    buildup            smallint NOT NULL DEFAULT 0,  -- 1 long build-up, 2 short build-up, 3 short covering, 4 long unwinding, 0 none
    PRIMARY KEY (underlying, expiry, ts, strike, option_type)
$cols$, 'analytics', 'day', INTERVAL '30 days', 'Cumulative OI change per contract since the session open.');

SELECT hft_create_timeseries_table('velocity', $cols$
    ts                 timestamptz NOT NULL,
    underlying         text NOT NULL,
    expiry             date NOT NULL,
    strike             double precision NOT NULL,
    option_type        char(2) NOT NULL CHECK (option_type IN ('CE', 'PE')),
    window_seconds     integer NOT NULL CHECK (window_seconds > 0),
    oi_velocity        double precision,             -- OI change per minute over the window
    volume_velocity    double precision,             -- traded volume per minute over the window
    price_velocity     double precision,             -- last_price change per minute
    iv_velocity        double precision,             -- iv change (decimal) per minute
    PRIMARY KEY (underlying, expiry, ts, strike, option_type, window_seconds)
$cols$, 'analytics', 'day', INTERVAL '30 days', 'Rates of change per contract over a trailing window.');

SELECT hft_create_timeseries_table('levels', $cols$
    ts                 timestamptz NOT NULL,
    underlying         text NOT NULL,
    expiry             date NOT NULL,
    level_type         text NOT NULL,                -- support, resistance, call_wall, put_wall, max_pain, gamma_flip, ...
    price              double precision NOT NULL,
    strength           double precision,             -- 0..1, the detector's confidence
    source             text NOT NULL DEFAULT '',     -- what produced it (oi, gex, price_action, ...)
    payload            jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (underlying, expiry, ts, level_type, price)
$cols$, 'analytics', 'day', INTERVAL '400 days', 'Support/resistance and other price levels per chain.');

SELECT hft_create_timeseries_table('pattern_events', $cols$
    ts                 timestamptz NOT NULL,
    underlying         text NOT NULL,
    expiry             date,                         -- NULL: an underlying-level event
    strike             double precision,
    option_type        char(2) CHECK (option_type IN ('CE', 'PE')),
    event_type         text NOT NULL,                -- e.g. long_buildup, oi_spike, iv_crush, gamma_flip_cross
    event_key          text NOT NULL DEFAULT '',     -- distinguishes events of one type at one ts
    severity           smallint NOT NULL DEFAULT 0 CHECK (severity BETWEEN 0 AND 3),  -- 0 info .. 3 high
    payload            jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (underlying, ts, event_type, event_key)
$cols$, 'analytics', 'day', INTERVAL '400 days', 'Detected patterns (OI build-ups, spikes, crossings).');

SELECT hft_create_timeseries_table('flow_events', $cols$
    ts                 timestamptz NOT NULL,
    underlying         text NOT NULL,
    expiry             date NOT NULL,
    strike             double precision NOT NULL,
    option_type        char(2) NOT NULL CHECK (option_type IN ('CE', 'PE')),
    event_type         text NOT NULL,                -- e.g. block, sweep, unusual_volume
    event_key          text NOT NULL DEFAULT '',
    side               text NOT NULL DEFAULT 'unknown' CHECK (side IN ('buy', 'sell', 'unknown')),
    quantity           bigint,                       -- in the chain's oi_unit
    price              double precision,
    premium            double precision,             -- rupees
    iv                 double precision,
    severity           smallint NOT NULL DEFAULT 0 CHECK (severity BETWEEN 0 AND 3),
    payload            jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (underlying, ts, expiry, strike, option_type, event_type, event_key)
$cols$, 'analytics', 'day', INTERVAL '400 days', 'Notable option flow (blocks, sweeps, unusual volume).');

SELECT hft_create_timeseries_table('api_usage', $cols$
    ts                 timestamptz NOT NULL,         -- request start
    request_id         uuid NOT NULL,
    tenant_id          bigint,
    api_key_id         bigint,
    method             text NOT NULL,
    route              text NOT NULL,                -- route template, e.g. /v1/option-chain/{underlying}/latest
    status             smallint NOT NULL,
    duration_ms        real NOT NULL,
    response_bytes     bigint,
    PRIMARY KEY (ts, request_id)
$cols$, 'usage', 'day', INTERVAL '400 days', 'One row per API request (metering, tier limits).');
CREATE INDEX IF NOT EXISTS api_usage_tenant_ts_idx ON api_usage (tenant_id, ts);
