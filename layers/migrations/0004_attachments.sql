-- Patrol visits (巡查) to supervised entities: append-only.
CREATE TABLE visits (
    id bigserial PRIMARY KEY,
    entity_id text NOT NULL,
    grid_code text,
    worker_id text,
    actor text NOT NULL,
    visited_at text NOT NULL,
    visited_epoch double precision NOT NULL,
    lon double precision,
    lat double precision,
    accuracy_m double precision,
    distance_m double precision,
    checklist text NOT NULL,
    note text NOT NULL,
    result text NOT NULL,
    incident_id text REFERENCES incidents (id),
    created_at text NOT NULL
);
CREATE INDEX visits_entity ON visits (entity_id, visited_epoch);
CREATE INDEX visits_grid ON visits (grid_code, visited_epoch);

-- Files kept with case steps or visits (photos from the site, documents), with their SHA-256.
-- Append-only: the runtime role may insert and read, never change or delete.
CREATE TABLE attachments (
    id bigserial PRIMARY KEY,
    incident_id text REFERENCES incidents (id),
    visit_id bigint REFERENCES visits (id),
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
CREATE INDEX attachments_visit ON attachments (visit_id, id);

-- The instant each case entered its current state (Unix seconds): deadlines are this plus the
-- state's limit, sorted and filtered with arithmetic and an index. And what the performance
-- figures (layers/case_facts.py) need of each case, so that they read one row per case and
-- neither events nor records: the report time (Unix seconds), the longest finished stint per
-- state in seconds ({"reported": 1200.0, …}: the keys are also the states the case went
-- through), the times it was sent back to its first state, and the township it was routed to
-- at intake (no event changes it). `migrate` (layers/postgis.py) rebuilds every state row from
-- the events after this file, which fills them.
ALTER TABLE incident_state ADD COLUMN since_epoch double precision;
ALTER TABLE incident_state ADD COLUMN reported_epoch double precision;
ALTER TABLE incident_state ADD COLUMN stays jsonb NOT NULL DEFAULT '{}';
ALTER TABLE incident_state ADD COLUMN returns integer NOT NULL DEFAULT 0;
ALTER TABLE incident_state ADD COLUMN township_code text;
CREATE INDEX incident_state_deadline ON incident_state (status, since_epoch);
