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

-- The instant each case entered its current state (Unix seconds): deadlines are this plus the
-- state's limit, sorted and filtered with arithmetic and an index.
ALTER TABLE incident_state ADD COLUMN since_epoch double precision;
UPDATE incident_state SET since_epoch = extract(epoch FROM status_since::timestamptz);
CREATE INDEX incident_state_deadline ON incident_state (status, since_epoch);
