-- TimescaleDB layer for 0003 (applied only when the timescaledb extension, 2.13+, is available).

-- Hypertable with the dimension-builder API, columnstore (compression) segmented by the series key
-- and ordered by time, and the retention recorded in timeseries_tables.  Used by later layers too.
CREATE OR REPLACE FUNCTION hft_make_hypertable(p_table text, p_segmentby text, p_compress_after interval)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    version int[] := (regexp_match(
        (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'), '^(\d+)\.(\d+)'))::int[];
    chunk interval := CASE (SELECT partition_by FROM timeseries_tables WHERE table_name = p_table)
                          WHEN 'month' THEN INTERVAL '30 days' ELSE INTERVAL '1 day' END;
    keep interval := (SELECT retention FROM timeseries_tables WHERE table_name = p_table);
BEGIN
    PERFORM create_hypertable(p_table::regclass, by_range('ts', chunk),
                              create_default_indexes => FALSE, if_not_exists => TRUE);
    IF p_segmentby IS NOT NULL THEN
        IF version >= ARRAY[2, 18] THEN
            EXECUTE format('ALTER TABLE %I SET (timescaledb.enable_columnstore = true, '
                           'timescaledb.segmentby = %L, timescaledb.orderby = %L)',
                           p_table, p_segmentby, 'ts DESC');
            EXECUTE format('CALL add_columnstore_policy(%L::regclass, after => %L::interval, if_not_exists => true)',
                           p_table, p_compress_after);
        ELSE
            EXECUTE format('ALTER TABLE %I SET (timescaledb.compress, timescaledb.compress_segmentby = %L, '
                           'timescaledb.compress_orderby = %L)', p_table, p_segmentby, 'ts DESC');
            PERFORM add_compression_policy(p_table::regclass, compress_after => p_compress_after,
                                           if_not_exists => TRUE);
        END IF;
    END IF;
    IF keep IS NOT NULL THEN
        PERFORM add_retention_policy(p_table::regclass, drop_after => keep, if_not_exists => TRUE);
    END IF;
END $$;

SELECT hft_make_hypertable('chain_metrics', 'underlying, expiry', INTERVAL '1 day');
SELECT hft_make_hypertable('option_quotes', 'underlying, expiry, strike, option_type', INTERVAL '1 day');
-- option_quotes has no unique index (see sql/0003_chains.sql); chunks are read by time through BRIN.
CREATE INDEX IF NOT EXISTS option_quotes_ts_brin ON option_quotes USING brin (ts) WITH (pages_per_range = 32);
-- gex_profile is a view over option_quotes (sql/0003_chains.sql).
