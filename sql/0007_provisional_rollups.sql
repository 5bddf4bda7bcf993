-- Provisional option_quotes_1m rows (plain PostgreSQL layout; see hftengine.storage.provisional).
-- The sink writes a chain's 1 minute quote rollup from memory when the chain's snapshots move
-- into a later minute, with one row here saying how many snapshots it folded.  Whoever then
-- materializes that minute (the scheduled refresh, or the inline sink) keeps those rows instead of
-- recomputing them from raw rows when n_snapshots equals the chain's chain_metrics rows in the
-- minute; otherwise it recomputes them.  Rows below a chain's watermark are deleted as it moves.
-- TimescaleDB computes rollups with continuous aggregates and never writes this table.
CREATE TABLE IF NOT EXISTS rollup_provisional (
    underlying   text NOT NULL,
    expiry       date NOT NULL,
    ts           timestamptz NOT NULL,             -- minute (bucket start of option_quotes_1m)
    n_snapshots  bigint NOT NULL,                  -- chain snapshots the writer folded into the rows
    written_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (underlying, expiry, ts)
);
