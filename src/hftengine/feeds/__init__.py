"""Feeds: where option-chain snapshots come from (simulator, DhanHQ, recorded files)."""
