"""Embedded services for the one-machine default: the Tansu broker and PostgreSQL."""
