-- TimescaleDB layer for 0006: oi_totals as a hypertable with columnstore and retention.
SELECT hft_make_hypertable('oi_totals', 'underlying, expiry', INTERVAL '1 day');
