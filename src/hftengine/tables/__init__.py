"""Faust tables of the stateful analytics (RocksDB stores with Kafka changelogs) and their codec."""
