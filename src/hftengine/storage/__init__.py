"""Storage: numbered SQL migrations, the idempotent COPY sink and the query layer."""
