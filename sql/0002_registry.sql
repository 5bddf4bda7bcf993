-- Built-in schema registry (Confluent Schema Registry REST subset).
-- Idempotent: every statement can run twice.

-- One row per distinct schema (by type and canonical form); ids are the global
-- schema ids of the Confluent wire format and are never reused.
CREATE TABLE IF NOT EXISTS registry_schemas (
    id              serial PRIMARY KEY,
    schema_type     text NOT NULL DEFAULT 'AVRO',
    schema_text     text NOT NULL,
    canonical_text  text NOT NULL,
    canonical_hash  text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT registry_schemas_type_hash_key UNIQUE (schema_type, canonical_hash)
);

-- Versions of a subject.  A soft-deleted version keeps its row (deleted = true)
-- until it is permanently deleted; version numbers are never reused while a
-- row for them exists.
CREATE TABLE IF NOT EXISTS registry_subject_versions (
    subject        text NOT NULL,
    version        integer NOT NULL CHECK (version > 0),
    schema_id      integer NOT NULL REFERENCES registry_schemas (id),
    deleted        boolean NOT NULL DEFAULT false,
    registered_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subject, version)
);
-- A schema is live at most once per subject (a soft-deleted one may be registered again).
CREATE UNIQUE INDEX IF NOT EXISTS registry_subject_versions_live_schema_idx
    ON registry_subject_versions (subject, schema_id) WHERE NOT deleted;
CREATE INDEX IF NOT EXISTS registry_subject_versions_schema_id_idx
    ON registry_subject_versions (schema_id);

-- Compatibility level per subject; subject '' holds the global level.
CREATE TABLE IF NOT EXISTS registry_config (
    subject        text PRIMARY KEY,
    compatibility  text NOT NULL CHECK (compatibility IN (
        'NONE', 'BACKWARD', 'BACKWARD_TRANSITIVE', 'FORWARD', 'FORWARD_TRANSITIVE', 'FULL', 'FULL_TRANSITIVE')),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
