-- TimescaleDB layer for 0005: hypertables with columnstore and retention (hft_make_hypertable, 0003).
SELECT hft_make_hypertable('cumulative_oi', 'underlying, expiry, strike, option_type', INTERVAL '1 day');
SELECT hft_make_hypertable('velocity', 'underlying, expiry, strike, option_type', INTERVAL '1 day');
SELECT hft_make_hypertable('levels', 'underlying, expiry', INTERVAL '7 days');
SELECT hft_make_hypertable('pattern_events', 'underlying', INTERVAL '7 days');
SELECT hft_make_hypertable('flow_events', 'underlying, expiry', INTERVAL '7 days');
SELECT hft_make_hypertable('api_usage', 'tenant_id', INTERVAL '7 days');
