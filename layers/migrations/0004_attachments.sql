-- Files kept with case steps (photos from the site, documents), with their SHA-256.
-- Append-only: the runtime role may insert and read, never change or delete.
CREATE TABLE attachments (
    id bigserial PRIMARY KEY,
    incident_id text NOT NULL REFERENCES incidents (id),
    event_at text NOT NULL,
    name text NOT NULL,
    mime text NOT NULL,
    size integer NOT NULL,
    sha256 text NOT NULL,
    created_at text NOT NULL,
    created_by text NOT NULL,
    data bytea NOT NULL
);
CREATE INDEX attachments_incident ON attachments (incident_id, id);
