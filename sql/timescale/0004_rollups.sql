-- TimescaleDB layer for 0004: the rollups as hierarchical continuous aggregates (1 m from the raw
-- hypertable, 5 m from 1 m, 1 h from 5 m, 1 d from 1 h) with real-time aggregation, so a query
-- sees the newest rows before the refresh policy has materialized them.  Same names and columns as
-- the plain-PostgreSQL tables of sql/0004_rollups.sql.

CREATE MATERIALIZED VIEW IF NOT EXISTS chain_metrics_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = false, timescaledb.create_group_indexes = false) AS
SELECT time_bucket(INTERVAL '1 minute', ts) AS ts,
       underlying, expiry,
       count(*) AS n_snapshots,
       min(ts) AS first_ts,
       max(ts) AS last_ts,
       first(spot, ts) AS spot_open,
       max(spot) AS spot_high,
       min(spot) AS spot_low,
       last(spot, ts) AS spot,
       last(forward, ts) AS forward,
       last(time_to_expiry, ts) AS time_to_expiry,
       last(pcr_oi, ts) AS pcr_oi,
       min(pcr_oi) AS pcr_oi_min,
       max(pcr_oi) AS pcr_oi_max,
       last(pcr_volume, ts) AS pcr_volume,
       last(pcr_doi, ts) AS pcr_doi,
       last(max_pain, ts) AS max_pain,
       last(total_gex, ts) AS total_gex,
       min(total_gex) AS total_gex_min,
       max(total_gex) AS total_gex_max,
       last(gamma_flip, ts) AS gamma_flip,
       last(call_wall, ts) AS call_wall,
       last(put_wall, ts) AS put_wall,
       last(atm_iv, ts) AS atm_iv,
       min(atm_iv) AS atm_iv_min,
       max(atm_iv) AS atm_iv_max,
       last(rr25, ts) AS rr25,
       last(bf25, ts) AS bf25,
       last(lot_size, ts) AS lot_size,
       last(n_contracts, ts) AS n_contracts,
       last(conventions_version, ts) AS conventions_version
FROM chain_metrics
GROUP BY time_bucket(INTERVAL '1 minute', ts), underlying, expiry
WITH NO DATA;
CREATE INDEX IF NOT EXISTS chain_metrics_1m_key_ts_idx ON chain_metrics_1m (underlying, expiry, ts);

CREATE MATERIALIZED VIEW IF NOT EXISTS chain_metrics_5m
WITH (timescaledb.continuous, timescaledb.materialized_only = false, timescaledb.create_group_indexes = false) AS
SELECT time_bucket(INTERVAL '5 minutes', ts) AS ts,
       underlying, expiry,
       sum(n_snapshots)::bigint AS n_snapshots,
       min(first_ts) AS first_ts,
       max(last_ts) AS last_ts,
       first(spot_open, first_ts) AS spot_open,
       max(spot_high) AS spot_high,
       min(spot_low) AS spot_low,
       last(spot, last_ts) AS spot,
       last(forward, last_ts) AS forward,
       last(time_to_expiry, last_ts) AS time_to_expiry,
       last(pcr_oi, last_ts) AS pcr_oi,
       min(pcr_oi_min) AS pcr_oi_min,
       max(pcr_oi_max) AS pcr_oi_max,
       last(pcr_volume, last_ts) AS pcr_volume,
       last(pcr_doi, last_ts) AS pcr_doi,
       last(max_pain, last_ts) AS max_pain,
       last(total_gex, last_ts) AS total_gex,
       min(total_gex_min) AS total_gex_min,
       max(total_gex_max) AS total_gex_max,
       last(gamma_flip, last_ts) AS gamma_flip,
       last(call_wall, last_ts) AS call_wall,
       last(put_wall, last_ts) AS put_wall,
       last(atm_iv, last_ts) AS atm_iv,
       min(atm_iv_min) AS atm_iv_min,
       max(atm_iv_max) AS atm_iv_max,
       last(rr25, last_ts) AS rr25,
       last(bf25, last_ts) AS bf25,
       last(lot_size, last_ts) AS lot_size,
       last(n_contracts, last_ts) AS n_contracts,
       last(conventions_version, last_ts) AS conventions_version
FROM chain_metrics_1m
GROUP BY time_bucket(INTERVAL '5 minutes', ts), underlying, expiry
WITH NO DATA;
CREATE INDEX IF NOT EXISTS chain_metrics_5m_key_ts_idx ON chain_metrics_5m (underlying, expiry, ts);

CREATE MATERIALIZED VIEW IF NOT EXISTS chain_metrics_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false, timescaledb.create_group_indexes = false) AS
SELECT time_bucket(INTERVAL '1 hour', ts) AS ts,
       underlying, expiry,
       sum(n_snapshots)::bigint AS n_snapshots,
       min(first_ts) AS first_ts,
       max(last_ts) AS last_ts,
       first(spot_open, first_ts) AS spot_open,
       max(spot_high) AS spot_high,
       min(spot_low) AS spot_low,
       last(spot, last_ts) AS spot,
       last(forward, last_ts) AS forward,
       last(time_to_expiry, last_ts) AS time_to_expiry,
       last(pcr_oi, last_ts) AS pcr_oi,
       min(pcr_oi_min) AS pcr_oi_min,
       max(pcr_oi_max) AS pcr_oi_max,
       last(pcr_volume, last_ts) AS pcr_volume,
       last(pcr_doi, last_ts) AS pcr_doi,
       last(max_pain, last_ts) AS max_pain,
       last(total_gex, last_ts) AS total_gex,
       min(total_gex_min) AS total_gex_min,
       max(total_gex_max) AS total_gex_max,
       last(gamma_flip, last_ts) AS gamma_flip,
       last(call_wall, last_ts) AS call_wall,
       last(put_wall, last_ts) AS put_wall,
       last(atm_iv, last_ts) AS atm_iv,
       min(atm_iv_min) AS atm_iv_min,
       max(atm_iv_max) AS atm_iv_max,
       last(rr25, last_ts) AS rr25,
       last(bf25, last_ts) AS bf25,
       last(lot_size, last_ts) AS lot_size,
       last(n_contracts, last_ts) AS n_contracts,
       last(conventions_version, last_ts) AS conventions_version
FROM chain_metrics_5m
GROUP BY time_bucket(INTERVAL '1 hour', ts), underlying, expiry
WITH NO DATA;
CREATE INDEX IF NOT EXISTS chain_metrics_1h_key_ts_idx ON chain_metrics_1h (underlying, expiry, ts);

CREATE MATERIALIZED VIEW IF NOT EXISTS chain_metrics_1d
WITH (timescaledb.continuous, timescaledb.materialized_only = false, timescaledb.create_group_indexes = false) AS
SELECT time_bucket(INTERVAL '1 day', ts) AS ts,
       underlying, expiry,
       sum(n_snapshots)::bigint AS n_snapshots,
       min(first_ts) AS first_ts,
       max(last_ts) AS last_ts,
       first(spot_open, first_ts) AS spot_open,
       max(spot_high) AS spot_high,
       min(spot_low) AS spot_low,
       last(spot, last_ts) AS spot,
       last(forward, last_ts) AS forward,
       last(time_to_expiry, last_ts) AS time_to_expiry,
       last(pcr_oi, last_ts) AS pcr_oi,
       min(pcr_oi_min) AS pcr_oi_min,
       max(pcr_oi_max) AS pcr_oi_max,
       last(pcr_volume, last_ts) AS pcr_volume,
       last(pcr_doi, last_ts) AS pcr_doi,
       last(max_pain, last_ts) AS max_pain,
       last(total_gex, last_ts) AS total_gex,
       min(total_gex_min) AS total_gex_min,
       max(total_gex_max) AS total_gex_max,
       last(gamma_flip, last_ts) AS gamma_flip,
       last(call_wall, last_ts) AS call_wall,
       last(put_wall, last_ts) AS put_wall,
       last(atm_iv, last_ts) AS atm_iv,
       min(atm_iv_min) AS atm_iv_min,
       max(atm_iv_max) AS atm_iv_max,
       last(rr25, last_ts) AS rr25,
       last(bf25, last_ts) AS bf25,
       last(lot_size, last_ts) AS lot_size,
       last(n_contracts, last_ts) AS n_contracts,
       last(conventions_version, last_ts) AS conventions_version
FROM chain_metrics_1h
GROUP BY time_bucket(INTERVAL '1 day', ts), underlying, expiry
WITH NO DATA;
CREATE INDEX IF NOT EXISTS chain_metrics_1d_key_ts_idx ON chain_metrics_1d (underlying, expiry, ts);

CREATE MATERIALIZED VIEW IF NOT EXISTS option_quotes_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = false, timescaledb.create_group_indexes = false) AS
SELECT time_bucket(INTERVAL '1 minute', ts) AS ts,
       underlying, expiry, strike, option_type,
       count(*) AS n_snapshots,
       min(ts) AS first_ts,
       max(ts) AS last_ts,
       last(security_id, ts) AS security_id,
       last(spot, ts) AS spot,
       first(last_price, ts) AS last_price_open,
       max(last_price) AS last_price_high,
       min(last_price) AS last_price_low,
       last(last_price, ts) AS last_price,
       last(bid, ts) AS bid,
       last(ask, ts) AS ask,
       last(bid_qty, ts) AS bid_qty,
       last(ask_qty, ts) AS ask_qty,
       last(volume, ts) AS volume,
       first(oi, ts) AS oi_open,
       last(oi, ts) AS oi,
       last(prev_oi, ts) AS prev_oi,
       last(prev_close, ts) AS prev_close,
       last(avg_price, ts) AS avg_price,
       last(broker_iv, ts) AS broker_iv,
       last(iv, ts) AS iv,
       min(iv) AS iv_min,
       max(iv) AS iv_max,
       last(delta, ts) AS delta,
       last(gamma, ts) AS gamma,
       last(theta, ts) AS theta,
       last(vega, ts) AS vega,
       last(rho, ts) AS rho,
       last(vanna, ts) AS vanna,
       last(charm, ts) AS charm,
       last(gex, ts) AS gex,
       last(buildup, ts) AS buildup
FROM option_quotes
GROUP BY time_bucket(INTERVAL '1 minute', ts), underlying, expiry, strike, option_type
WITH NO DATA;
CREATE INDEX IF NOT EXISTS option_quotes_1m_key_ts_idx ON option_quotes_1m (underlying, expiry, strike, option_type, ts);

CREATE MATERIALIZED VIEW IF NOT EXISTS option_quotes_5m
WITH (timescaledb.continuous, timescaledb.materialized_only = false, timescaledb.create_group_indexes = false) AS
SELECT time_bucket(INTERVAL '5 minutes', ts) AS ts,
       underlying, expiry, strike, option_type,
       sum(n_snapshots)::bigint AS n_snapshots,
       min(first_ts) AS first_ts,
       max(last_ts) AS last_ts,
       last(security_id, last_ts) AS security_id,
       last(spot, last_ts) AS spot,
       first(last_price_open, first_ts) AS last_price_open,
       max(last_price_high) AS last_price_high,
       min(last_price_low) AS last_price_low,
       last(last_price, last_ts) AS last_price,
       last(bid, last_ts) AS bid,
       last(ask, last_ts) AS ask,
       last(bid_qty, last_ts) AS bid_qty,
       last(ask_qty, last_ts) AS ask_qty,
       last(volume, last_ts) AS volume,
       first(oi_open, first_ts) AS oi_open,
       last(oi, last_ts) AS oi,
       last(prev_oi, last_ts) AS prev_oi,
       last(prev_close, last_ts) AS prev_close,
       last(avg_price, last_ts) AS avg_price,
       last(broker_iv, last_ts) AS broker_iv,
       last(iv, last_ts) AS iv,
       min(iv_min) AS iv_min,
       max(iv_max) AS iv_max,
       last(delta, last_ts) AS delta,
       last(gamma, last_ts) AS gamma,
       last(theta, last_ts) AS theta,
       last(vega, last_ts) AS vega,
       last(rho, last_ts) AS rho,
       last(vanna, last_ts) AS vanna,
       last(charm, last_ts) AS charm,
       last(gex, last_ts) AS gex,
       last(buildup, last_ts) AS buildup
FROM option_quotes_1m
GROUP BY time_bucket(INTERVAL '5 minutes', ts), underlying, expiry, strike, option_type
WITH NO DATA;
CREATE INDEX IF NOT EXISTS option_quotes_5m_key_ts_idx ON option_quotes_5m (underlying, expiry, strike, option_type, ts);

CREATE MATERIALIZED VIEW IF NOT EXISTS option_quotes_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false, timescaledb.create_group_indexes = false) AS
SELECT time_bucket(INTERVAL '1 hour', ts) AS ts,
       underlying, expiry, strike, option_type,
       sum(n_snapshots)::bigint AS n_snapshots,
       min(first_ts) AS first_ts,
       max(last_ts) AS last_ts,
       last(security_id, last_ts) AS security_id,
       last(spot, last_ts) AS spot,
       first(last_price_open, first_ts) AS last_price_open,
       max(last_price_high) AS last_price_high,
       min(last_price_low) AS last_price_low,
       last(last_price, last_ts) AS last_price,
       last(bid, last_ts) AS bid,
       last(ask, last_ts) AS ask,
       last(bid_qty, last_ts) AS bid_qty,
       last(ask_qty, last_ts) AS ask_qty,
       last(volume, last_ts) AS volume,
       first(oi_open, first_ts) AS oi_open,
       last(oi, last_ts) AS oi,
       last(prev_oi, last_ts) AS prev_oi,
       last(prev_close, last_ts) AS prev_close,
       last(avg_price, last_ts) AS avg_price,
       last(broker_iv, last_ts) AS broker_iv,
       last(iv, last_ts) AS iv,
       min(iv_min) AS iv_min,
       max(iv_max) AS iv_max,
       last(delta, last_ts) AS delta,
       last(gamma, last_ts) AS gamma,
       last(theta, last_ts) AS theta,
       last(vega, last_ts) AS vega,
       last(rho, last_ts) AS rho,
       last(vanna, last_ts) AS vanna,
       last(charm, last_ts) AS charm,
       last(gex, last_ts) AS gex,
       last(buildup, last_ts) AS buildup
FROM option_quotes_5m
GROUP BY time_bucket(INTERVAL '1 hour', ts), underlying, expiry, strike, option_type
WITH NO DATA;
CREATE INDEX IF NOT EXISTS option_quotes_1h_key_ts_idx ON option_quotes_1h (underlying, expiry, strike, option_type, ts);

CREATE MATERIALIZED VIEW IF NOT EXISTS option_quotes_1d
WITH (timescaledb.continuous, timescaledb.materialized_only = false, timescaledb.create_group_indexes = false) AS
SELECT time_bucket(INTERVAL '1 day', ts) AS ts,
       underlying, expiry, strike, option_type,
       sum(n_snapshots)::bigint AS n_snapshots,
       min(first_ts) AS first_ts,
       max(last_ts) AS last_ts,
       last(security_id, last_ts) AS security_id,
       last(spot, last_ts) AS spot,
       first(last_price_open, first_ts) AS last_price_open,
       max(last_price_high) AS last_price_high,
       min(last_price_low) AS last_price_low,
       last(last_price, last_ts) AS last_price,
       last(bid, last_ts) AS bid,
       last(ask, last_ts) AS ask,
       last(bid_qty, last_ts) AS bid_qty,
       last(ask_qty, last_ts) AS ask_qty,
       last(volume, last_ts) AS volume,
       first(oi_open, first_ts) AS oi_open,
       last(oi, last_ts) AS oi,
       last(prev_oi, last_ts) AS prev_oi,
       last(prev_close, last_ts) AS prev_close,
       last(avg_price, last_ts) AS avg_price,
       last(broker_iv, last_ts) AS broker_iv,
       last(iv, last_ts) AS iv,
       min(iv_min) AS iv_min,
       max(iv_max) AS iv_max,
       last(delta, last_ts) AS delta,
       last(gamma, last_ts) AS gamma,
       last(theta, last_ts) AS theta,
       last(vega, last_ts) AS vega,
       last(rho, last_ts) AS rho,
       last(vanna, last_ts) AS vanna,
       last(charm, last_ts) AS charm,
       last(gex, last_ts) AS gex,
       last(buildup, last_ts) AS buildup
FROM option_quotes_1h
GROUP BY time_bucket(INTERVAL '1 day', ts), underlying, expiry, strike, option_type
WITH NO DATA;
CREATE INDEX IF NOT EXISTS option_quotes_1d_key_ts_idx ON option_quotes_1d (underlying, expiry, strike, option_type, ts);
-- Refresh policies: each level is refreshed a little after its parent; the windows span several
-- buckets.  Retention per level comes from timeseries_tables.
SELECT add_continuous_aggregate_policy(v.name::regclass, start_offset => v.start_offset,
                                       end_offset => v.end_offset, schedule_interval => v.every,
                                       if_not_exists => TRUE)
FROM (VALUES
    ('chain_metrics_1m', INTERVAL '3 hours', INTERVAL '1 minute', INTERVAL '1 minute'),
    ('chain_metrics_5m', INTERVAL '12 hours', INTERVAL '5 minutes', INTERVAL '5 minutes'),
    ('chain_metrics_1h', INTERVAL '3 days', INTERVAL '1 hour', INTERVAL '30 minutes'),
    ('chain_metrics_1d', INTERVAL '10 days', INTERVAL '1 day', INTERVAL '1 hour'),
    ('option_quotes_1m', INTERVAL '3 hours', INTERVAL '1 minute', INTERVAL '1 minute'),
    ('option_quotes_5m', INTERVAL '12 hours', INTERVAL '5 minutes', INTERVAL '5 minutes'),
    ('option_quotes_1h', INTERVAL '3 days', INTERVAL '1 hour', INTERVAL '30 minutes'),
    ('option_quotes_1d', INTERVAL '10 days', INTERVAL '1 day', INTERVAL '1 hour')
) AS v(name, start_offset, end_offset, every);

SELECT add_retention_policy(table_name::regclass, drop_after => retention, if_not_exists => TRUE)
FROM timeseries_tables WHERE kind = 'rollup' AND retention IS NOT NULL;
