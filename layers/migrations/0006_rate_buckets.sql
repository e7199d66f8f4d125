-- Rate limits shared by every process of a deployment (layers/ratelimit.py): the API's token
-- bucket per key, the login form's per client address. UNLOGGED: a crash may forget them.
CREATE UNLOGGED TABLE rate_buckets (
    name text PRIMARY KEY,
    tokens double precision NOT NULL,
    at double precision NOT NULL,  -- seconds since the epoch, the database's clock
    taken boolean NOT NULL
);
