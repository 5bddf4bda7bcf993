-- TimescaleDB layer for 0003 (applied only when the timescaledb extension is available, 2.13+).
SELECT create_hypertable('chain_metrics', by_range('ts', INTERVAL '1 day'), if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('option_quotes', by_range('ts', INTERVAL '1 hour'), if_not_exists => TRUE, migrate_data => TRUE);
