-- Accounts, sessions, the audit chain and the incidents' current state (issue: who may do what).

CREATE TABLE users (
    login text PRIMARY KEY,
    role text NOT NULL,
    name text NOT NULL,
    worker_id text NOT NULL,
    bureau_code text NOT NULL,
    password_hash text NOT NULL,
    disabled boolean NOT NULL,
    failed_count integer NOT NULL,
    locked_until text NOT NULL,
    created_at text NOT NULL,
    updated_at text NOT NULL
);

CREATE TABLE sessions (
    token_hash text PRIMARY KEY,
    login text NOT NULL REFERENCES users (login),
    created_at text NOT NULL,
    expires_at text NOT NULL,
    last_seen text NOT NULL,
    client text NOT NULL
);
CREATE INDEX sessions_login ON sessions (login);

-- The audit trail: a hash chain (layers/audit.py), append-only.
CREATE TABLE audit_log (
    seq bigint PRIMARY KEY,
    at text NOT NULL,
    actor text NOT NULL,
    actor_role text NOT NULL,
    via text NOT NULL,
    action text NOT NULL,
    target text NOT NULL,
    detail text NOT NULL,
    prev_hash text NOT NULL,
    hash text NOT NULL
);
CREATE INDEX audit_log_actor ON audit_log (actor, seq);
CREATE INDEX audit_log_target ON audit_log (target, seq);
CREATE INDEX audit_log_action ON audit_log (action, seq);
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
CREATE TRIGGER incidents_no_truncate BEFORE TRUNCATE ON incidents
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
CREATE TRIGGER incident_events_no_truncate BEFORE TRUNCATE ON incident_events
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();

-- Each case's current state, projected from its events in the same transaction (rebuildable).
CREATE TABLE incident_state (
    incident_id text PRIMARY KEY REFERENCES incidents (id),
    status text NOT NULL,
    status_since text NOT NULL,
    updated_at text NOT NULL,
    grid_code text,
    bureau_code text,
    reported_utc text NOT NULL,
    category text NOT NULL,
    lon double precision NOT NULL,
    lat double precision NOT NULL
);
CREATE INDEX incident_state_status ON incident_state (status);
CREATE INDEX incident_state_grid ON incident_state (grid_code);
CREATE INDEX incident_state_bureau ON incident_state (bureau_code);
CREATE INDEX incident_state_reported ON incident_state (reported_utc);
CREATE INDEX incident_state_lonlat ON incident_state (lon, lat);

-- The runtime role does not own routing_parts, so it cannot ANALYZE it itself.
CREATE FUNCTION analyze_routing_parts() RETURNS void LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = gridmap, pg_temp AS $$
BEGIN
    ANALYZE gridmap.routing_parts;
END $$;
REVOKE ALL ON FUNCTION analyze_routing_parts() FROM PUBLIC;
