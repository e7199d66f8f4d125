-- Client request ids of the API's idempotent POST: a retried request finds its case.
CREATE TABLE request_keys (
    request_key text PRIMARY KEY,
    incident_id text NOT NULL REFERENCES incidents (id)
);
