"""Avro encoding in the Confluent wire format, registry clients and the built-in registry."""
