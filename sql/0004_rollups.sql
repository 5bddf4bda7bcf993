-- Rollups of chain_metrics and option_quotes per 1 minute, 5 minutes, 1 hour and 1 day bucket.
-- Public interface (docs/storage.md).  Every rollup row is one bucket [ts, ts + width) of one chain
-- (chain_metrics_*) or one contract (option_quotes_*); buckets are aligned like TimescaleDB's
-- time_bucket (to 2000-01-03 00:00 UTC: UTC days, hours at hh:30 IST).  The comment on each
-- column names its aggregate: first / last (the value at first_ts / last_ts), min, max (NULLs
-- ignored).  The column list must match hftengine.storage.rollups (tests check it).
--
-- Plain PostgreSQL: partitioned tables filled by the sink (see rollup_watermarks).
-- TimescaleDB: nothing here; sql/timescale/0004_rollups.sql creates continuous aggregates with the
-- same names and columns.

SELECT hft_create_timeseries_table('chain_metrics_1m', $cols$
    ts                   timestamptz NOT NULL,   -- bucket start
    underlying           text NOT NULL,
    expiry               date NOT NULL,
    n_snapshots          bigint NOT NULL,  -- raw rows in the bucket
    first_ts             timestamptz NOT NULL,
    last_ts              timestamptz NOT NULL,
    spot_open            double precision,  -- first: spot at first_ts
    spot_high            double precision,  -- max: highest spot
    spot_low             double precision,  -- min: lowest spot
    spot                 double precision,  -- last: chain_metrics.spot at last_ts
    forward              double precision,  -- last: chain_metrics.forward at last_ts
    time_to_expiry       double precision,  -- last: chain_metrics.time_to_expiry at last_ts
    pcr_oi               double precision,  -- last: chain_metrics.pcr_oi at last_ts
    pcr_oi_min           double precision,  -- min: lowest pcr_oi
    pcr_oi_max           double precision,  -- max: highest pcr_oi
    pcr_volume           double precision,  -- last: chain_metrics.pcr_volume at last_ts
    pcr_doi              double precision,  -- last: chain_metrics.pcr_doi at last_ts
    max_pain             double precision,  -- last: chain_metrics.max_pain at last_ts
    total_gex            double precision,  -- last: chain_metrics.total_gex at last_ts
    total_gex_min        double precision,  -- min: lowest total_gex
    total_gex_max        double precision,  -- max: highest total_gex
    gamma_flip           double precision,  -- last: chain_metrics.gamma_flip at last_ts
    call_wall            double precision,  -- last: chain_metrics.call_wall at last_ts
    put_wall             double precision,  -- last: chain_metrics.put_wall at last_ts
    atm_iv               double precision,  -- last: chain_metrics.atm_iv at last_ts
    atm_iv_min           double precision,  -- min: lowest atm_iv
    atm_iv_max           double precision,  -- max: highest atm_iv
    rr25                 double precision,  -- last: chain_metrics.rr25 at last_ts
    bf25                 double precision,  -- last: chain_metrics.bf25 at last_ts
    lot_size             integer,  -- last: chain_metrics.lot_size at last_ts
    n_contracts          integer,  -- last: chain_metrics.n_contracts at last_ts
    conventions_version  text,  -- last: chain_metrics.conventions_version at last_ts
    PRIMARY KEY (underlying, expiry, ts)
$cols$, 'rollup', 'day', INTERVAL '400 days',
    'chain_metrics per 1 minute bucket.');

SELECT hft_create_timeseries_table('chain_metrics_5m', $cols$
    ts                   timestamptz NOT NULL,   -- bucket start
    underlying           text NOT NULL,
    expiry               date NOT NULL,
    n_snapshots          bigint NOT NULL,  -- raw rows in the bucket
    first_ts             timestamptz NOT NULL,
    last_ts              timestamptz NOT NULL,
    spot_open            double precision,  -- first: spot at first_ts
    spot_high            double precision,  -- max: highest spot
    spot_low             double precision,  -- min: lowest spot
    spot                 double precision,  -- last: chain_metrics.spot at last_ts
    forward              double precision,  -- last: chain_metrics.forward at last_ts
    time_to_expiry       double precision,  -- last: chain_metrics.time_to_expiry at last_ts
    pcr_oi               double precision,  -- last: chain_metrics.pcr_oi at last_ts
    pcr_oi_min           double precision,  -- min: lowest pcr_oi
    pcr_oi_max           double precision,  -- max: highest pcr_oi
    pcr_volume           double precision,  -- last: chain_metrics.pcr_volume at last_ts
    pcr_doi              double precision,  -- last: chain_metrics.pcr_doi at last_ts
    max_pain             double precision,  -- last: chain_metrics.max_pain at last_ts
    total_gex            double precision,  -- last: chain_metrics.total_gex at last_ts
    total_gex_min        double precision,  -- min: lowest total_gex
    total_gex_max        double precision,  -- max: highest total_gex
    gamma_flip           double precision,  -- last: chain_metrics.gamma_flip at last_ts
    call_wall            double precision,  -- last: chain_metrics.call_wall at last_ts
    put_wall             double precision,  -- last: chain_metrics.put_wall at last_ts
    atm_iv               double precision,  -- last: chain_metrics.atm_iv at last_ts
    atm_iv_min           double precision,  -- min: lowest atm_iv
    atm_iv_max           double precision,  -- max: highest atm_iv
    rr25                 double precision,  -- last: chain_metrics.rr25 at last_ts
    bf25                 double precision,  -- last: chain_metrics.bf25 at last_ts
    lot_size             integer,  -- last: chain_metrics.lot_size at last_ts
    n_contracts          integer,  -- last: chain_metrics.n_contracts at last_ts
    conventions_version  text,  -- last: chain_metrics.conventions_version at last_ts
    PRIMARY KEY (underlying, expiry, ts)
$cols$, 'rollup', 'month', INTERVAL '400 days',
    'chain_metrics per 5 minutes bucket.');

SELECT hft_create_timeseries_table('chain_metrics_1h', $cols$
    ts                   timestamptz NOT NULL,   -- bucket start
    underlying           text NOT NULL,
    expiry               date NOT NULL,
    n_snapshots          bigint NOT NULL,  -- raw rows in the bucket
    first_ts             timestamptz NOT NULL,
    last_ts              timestamptz NOT NULL,
    spot_open            double precision,  -- first: spot at first_ts
    spot_high            double precision,  -- max: highest spot
    spot_low             double precision,  -- min: lowest spot
    spot                 double precision,  -- last: chain_metrics.spot at last_ts
    forward              double precision,  -- last: chain_metrics.forward at last_ts
    time_to_expiry       double precision,  -- last: chain_metrics.time_to_expiry at last_ts
    pcr_oi               double precision,  -- last: chain_metrics.pcr_oi at last_ts
    pcr_oi_min           double precision,  -- min: lowest pcr_oi
    pcr_oi_max           double precision,  -- max: highest pcr_oi
    pcr_volume           double precision,  -- last: chain_metrics.pcr_volume at last_ts
    pcr_doi              double precision,  -- last: chain_metrics.pcr_doi at last_ts
    max_pain             double precision,  -- last: chain_metrics.max_pain at last_ts
    total_gex            double precision,  -- last: chain_metrics.total_gex at last_ts
    total_gex_min        double precision,  -- min: lowest total_gex
    total_gex_max        double precision,  -- max: highest total_gex
    gamma_flip           double precision,  -- last: chain_metrics.gamma_flip at last_ts
    call_wall            double precision,  -- last: chain_metrics.call_wall at last_ts
    put_wall             double precision,  -- last: chain_metrics.put_wall at last_ts
    atm_iv               double precision,  -- last: chain_metrics.atm_iv at last_ts
    atm_iv_min           double precision,  -- min: lowest atm_iv
    atm_iv_max           double precision,  -- max: highest atm_iv
    rr25                 double precision,  -- last: chain_metrics.rr25 at last_ts
    bf25                 double precision,  -- last: chain_metrics.bf25 at last_ts
    lot_size             integer,  -- last: chain_metrics.lot_size at last_ts
    n_contracts          integer,  -- last: chain_metrics.n_contracts at last_ts
    conventions_version  text,  -- last: chain_metrics.conventions_version at last_ts
    PRIMARY KEY (underlying, expiry, ts)
$cols$, 'rollup', 'month', NULL,
    'chain_metrics per 1 hour bucket.');

SELECT hft_create_timeseries_table('chain_metrics_1d', $cols$
    ts                   timestamptz NOT NULL,   -- bucket start
    underlying           text NOT NULL,
    expiry               date NOT NULL,
    n_snapshots          bigint NOT NULL,  -- raw rows in the bucket
    first_ts             timestamptz NOT NULL,
    last_ts              timestamptz NOT NULL,
    spot_open            double precision,  -- first: spot at first_ts
    spot_high            double precision,  -- max: highest spot
    spot_low             double precision,  -- min: lowest spot
    spot                 double precision,  -- last: chain_metrics.spot at last_ts
    forward              double precision,  -- last: chain_metrics.forward at last_ts
    time_to_expiry       double precision,  -- last: chain_metrics.time_to_expiry at last_ts
    pcr_oi               double precision,  -- last: chain_metrics.pcr_oi at last_ts
    pcr_oi_min           double precision,  -- min: lowest pcr_oi
    pcr_oi_max           double precision,  -- max: highest pcr_oi
    pcr_volume           double precision,  -- last: chain_metrics.pcr_volume at last_ts
    pcr_doi              double precision,  -- last: chain_metrics.pcr_doi at last_ts
    max_pain             double precision,  -- last: chain_metrics.max_pain at last_ts
    total_gex            double precision,  -- last: chain_metrics.total_gex at last_ts
    total_gex_min        double precision,  -- min: lowest total_gex
    total_gex_max        double precision,  -- max: highest total_gex
    gamma_flip           double precision,  -- last: chain_metrics.gamma_flip at last_ts
    call_wall            double precision,  -- last: chain_metrics.call_wall at last_ts
    put_wall             double precision,  -- last: chain_metrics.put_wall at last_ts
    atm_iv               double precision,  -- last: chain_metrics.atm_iv at last_ts
    atm_iv_min           double precision,  -- min: lowest atm_iv
    atm_iv_max           double precision,  -- max: highest atm_iv
    rr25                 double precision,  -- last: chain_metrics.rr25 at last_ts
    bf25                 double precision,  -- last: chain_metrics.bf25 at last_ts
    lot_size             integer,  -- last: chain_metrics.lot_size at last_ts
    n_contracts          integer,  -- last: chain_metrics.n_contracts at last_ts
    conventions_version  text,  -- last: chain_metrics.conventions_version at last_ts
    PRIMARY KEY (underlying, expiry, ts)
$cols$, 'rollup', 'month', NULL,
    'chain_metrics per 1 day bucket.');

SELECT hft_create_timeseries_table('option_quotes_1m', $cols$
    ts               timestamptz NOT NULL,   -- bucket start
    underlying       text NOT NULL,
    expiry           date NOT NULL,
    strike           double precision NOT NULL,
    option_type      char(2) NOT NULL,
    n_snapshots      bigint NOT NULL,  -- raw rows in the bucket
    first_ts         timestamptz NOT NULL,
    last_ts          timestamptz NOT NULL,
    security_id      bigint,  -- last: option_quotes.security_id at last_ts
    spot             double precision,  -- last: option_quotes.spot at last_ts
    last_price_open  double precision,  -- first: last_price at first_ts
    last_price_high  double precision,  -- max: highest last_price
    last_price_low   double precision,  -- min: lowest last_price
    last_price       double precision,  -- last: option_quotes.last_price at last_ts
    bid              double precision,  -- last: option_quotes.bid at last_ts
    ask              double precision,  -- last: option_quotes.ask at last_ts
    bid_qty          bigint,  -- last: option_quotes.bid_qty at last_ts
    ask_qty          bigint,  -- last: option_quotes.ask_qty at last_ts
    volume           bigint,  -- last: option_quotes.volume at last_ts
    oi_open          bigint,  -- first: oi at first_ts
    oi               bigint,  -- last: option_quotes.oi at last_ts
    prev_oi          bigint,  -- last: option_quotes.prev_oi at last_ts
    prev_close       double precision,  -- last: option_quotes.prev_close at last_ts
    avg_price        double precision,  -- last: option_quotes.avg_price at last_ts
    broker_iv        double precision,  -- last: option_quotes.broker_iv at last_ts
    iv               double precision,  -- last: option_quotes.iv at last_ts
    iv_min           double precision,  -- min: lowest iv
    iv_max           double precision,  -- max: highest iv
    delta            double precision,  -- last: option_quotes.delta at last_ts
    gamma            double precision,  -- last: option_quotes.gamma at last_ts
    theta            double precision,  -- last: option_quotes.theta at last_ts
    vega             double precision,  -- last: option_quotes.vega at last_ts
    rho              double precision,  -- last: option_quotes.rho at last_ts
    vanna            double precision,  -- last: option_quotes.vanna at last_ts
    charm            double precision,  -- last: option_quotes.charm at last_ts
    gex              double precision,  -- last: option_quotes.gex at last_ts
    buildup          smallint,  -- last: option_quotes.buildup at last_ts
    PRIMARY KEY (underlying, expiry, strike, option_type, ts)
$cols$, 'rollup', 'day', INTERVAL '90 days',
    'option_quotes per 1 minute bucket.');

SELECT hft_create_timeseries_table('option_quotes_5m', $cols$
    ts               timestamptz NOT NULL,   -- bucket start
    underlying       text NOT NULL,
    expiry           date NOT NULL,
    strike           double precision NOT NULL,
    option_type      char(2) NOT NULL,
    n_snapshots      bigint NOT NULL,  -- raw rows in the bucket
    first_ts         timestamptz NOT NULL,
    last_ts          timestamptz NOT NULL,
    security_id      bigint,  -- last: option_quotes.security_id at last_ts
    spot             double precision,  -- last: option_quotes.spot at last_ts
    last_price_open  double precision,  -- first: last_price at first_ts
    last_price_high  double precision,  -- max: highest last_price
    last_price_low   double precision,  -- min: lowest last_price
    last_price       double precision,  -- last: option_quotes.last_price at last_ts
    bid              double precision,  -- last: option_quotes.bid at last_ts
    ask              double precision,  -- last: option_quotes.ask at last_ts
    bid_qty          bigint,  -- last: option_quotes.bid_qty at last_ts
    ask_qty          bigint,  -- last: option_quotes.ask_qty at last_ts
    volume           bigint,  -- last: option_quotes.volume at last_ts
    oi_open          bigint,  -- first: oi at first_ts
    oi               bigint,  -- last: option_quotes.oi at last_ts
    prev_oi          bigint,  -- last: option_quotes.prev_oi at last_ts
    prev_close       double precision,  -- last: option_quotes.prev_close at last_ts
    avg_price        double precision,  -- last: option_quotes.avg_price at last_ts
    broker_iv        double precision,  -- last: option_quotes.broker_iv at last_ts
    iv               double precision,  -- last: option_quotes.iv at last_ts
    iv_min           double precision,  -- min: lowest iv
    iv_max           double precision,  -- max: highest iv
    delta            double precision,  -- last: option_quotes.delta at last_ts
    gamma            double precision,  -- last: option_quotes.gamma at last_ts
    theta            double precision,  -- last: option_quotes.theta at last_ts
    vega             double precision,  -- last: option_quotes.vega at last_ts
    rho              double precision,  -- last: option_quotes.rho at last_ts
    vanna            double precision,  -- last: option_quotes.vanna at last_ts
    charm            double precision,  -- last: option_quotes.charm at last_ts
    gex              double precision,  -- last: option_quotes.gex at last_ts
    buildup          smallint,  -- last: option_quotes.buildup at last_ts
    PRIMARY KEY (underlying, expiry, strike, option_type, ts)
$cols$, 'rollup', 'month', INTERVAL '400 days',
    'option_quotes per 5 minutes bucket.');

SELECT hft_create_timeseries_table('option_quotes_1h', $cols$
    ts               timestamptz NOT NULL,   -- bucket start
    underlying       text NOT NULL,
    expiry           date NOT NULL,
    strike           double precision NOT NULL,
    option_type      char(2) NOT NULL,
    n_snapshots      bigint NOT NULL,  -- raw rows in the bucket
    first_ts         timestamptz NOT NULL,
    last_ts          timestamptz NOT NULL,
    security_id      bigint,  -- last: option_quotes.security_id at last_ts
    spot             double precision,  -- last: option_quotes.spot at last_ts
    last_price_open  double precision,  -- first: last_price at first_ts
    last_price_high  double precision,  -- max: highest last_price
    last_price_low   double precision,  -- min: lowest last_price
    last_price       double precision,  -- last: option_quotes.last_price at last_ts
    bid              double precision,  -- last: option_quotes.bid at last_ts
    ask              double precision,  -- last: option_quotes.ask at last_ts
    bid_qty          bigint,  -- last: option_quotes.bid_qty at last_ts
    ask_qty          bigint,  -- last: option_quotes.ask_qty at last_ts
    volume           bigint,  -- last: option_quotes.volume at last_ts
    oi_open          bigint,  -- first: oi at first_ts
    oi               bigint,  -- last: option_quotes.oi at last_ts
    prev_oi          bigint,  -- last: option_quotes.prev_oi at last_ts
    prev_close       double precision,  -- last: option_quotes.prev_close at last_ts
    avg_price        double precision,  -- last: option_quotes.avg_price at last_ts
    broker_iv        double precision,  -- last: option_quotes.broker_iv at last_ts
    iv               double precision,  -- last: option_quotes.iv at last_ts
    iv_min           double precision,  -- min: lowest iv
    iv_max           double precision,  -- max: highest iv
    delta            double precision,  -- last: option_quotes.delta at last_ts
    gamma            double precision,  -- last: option_quotes.gamma at last_ts
    theta            double precision,  -- last: option_quotes.theta at last_ts
    vega             double precision,  -- last: option_quotes.vega at last_ts
    rho              double precision,  -- last: option_quotes.rho at last_ts
    vanna            double precision,  -- last: option_quotes.vanna at last_ts
    charm            double precision,  -- last: option_quotes.charm at last_ts
    gex              double precision,  -- last: option_quotes.gex at last_ts
    buildup          smallint,  -- last: option_quotes.buildup at last_ts
    PRIMARY KEY (underlying, expiry, strike, option_type, ts)
$cols$, 'rollup', 'month', NULL,
    'option_quotes per 1 hour bucket.');

SELECT hft_create_timeseries_table('option_quotes_1d', $cols$
    ts               timestamptz NOT NULL,   -- bucket start
    underlying       text NOT NULL,
    expiry           date NOT NULL,
    strike           double precision NOT NULL,
    option_type      char(2) NOT NULL,
    n_snapshots      bigint NOT NULL,  -- raw rows in the bucket
    first_ts         timestamptz NOT NULL,
    last_ts          timestamptz NOT NULL,
    security_id      bigint,  -- last: option_quotes.security_id at last_ts
    spot             double precision,  -- last: option_quotes.spot at last_ts
    last_price_open  double precision,  -- first: last_price at first_ts
    last_price_high  double precision,  -- max: highest last_price
    last_price_low   double precision,  -- min: lowest last_price
    last_price       double precision,  -- last: option_quotes.last_price at last_ts
    bid              double precision,  -- last: option_quotes.bid at last_ts
    ask              double precision,  -- last: option_quotes.ask at last_ts
    bid_qty          bigint,  -- last: option_quotes.bid_qty at last_ts
    ask_qty          bigint,  -- last: option_quotes.ask_qty at last_ts
    volume           bigint,  -- last: option_quotes.volume at last_ts
    oi_open          bigint,  -- first: oi at first_ts
    oi               bigint,  -- last: option_quotes.oi at last_ts
    prev_oi          bigint,  -- last: option_quotes.prev_oi at last_ts
    prev_close       double precision,  -- last: option_quotes.prev_close at last_ts
    avg_price        double precision,  -- last: option_quotes.avg_price at last_ts
    broker_iv        double precision,  -- last: option_quotes.broker_iv at last_ts
    iv               double precision,  -- last: option_quotes.iv at last_ts
    iv_min           double precision,  -- min: lowest iv
    iv_max           double precision,  -- max: highest iv
    delta            double precision,  -- last: option_quotes.delta at last_ts
    gamma            double precision,  -- last: option_quotes.gamma at last_ts
    theta            double precision,  -- last: option_quotes.theta at last_ts
    vega             double precision,  -- last: option_quotes.vega at last_ts
    rho              double precision,  -- last: option_quotes.rho at last_ts
    vanna            double precision,  -- last: option_quotes.vanna at last_ts
    charm            double precision,  -- last: option_quotes.charm at last_ts
    gex              double precision,  -- last: option_quotes.gex at last_ts
    buildup          smallint,  -- last: option_quotes.buildup at last_ts
    PRIMARY KEY (underlying, expiry, strike, option_type, ts)
$cols$, 'rollup', 'month', NULL,
    'option_quotes per 1 day bucket.');
