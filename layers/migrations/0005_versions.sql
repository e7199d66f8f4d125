-- Versions say who and what changed; planners' drafts with their undo history; one plain
-- view per layer of its current rows (`<layer>_current`) for GIS tools (issue 11).

ALTER TABLE generations ADD COLUMN actor text NOT NULL DEFAULT '';
ALTER TABLE generations ADD COLUMN changes jsonb NOT NULL DEFAULT '{}';

-- A draft holds edits of the current layers (layers/versions.py) as JSON text: the same
-- statements serve both stores (layers/draft_sql.py). Drafts are work in progress, not the
-- record: the runtime role may save over them; publishing one is a generation and an audit
-- entry.
CREATE TABLE drafts (
    id bigserial PRIMARY KEY,
    layers text NOT NULL,
    base text NOT NULL,
    author text NOT NULL,
    created_at text NOT NULL,
    updated_at text NOT NULL,
    note text NOT NULL,
    status text NOT NULL CHECK (status IN ('draft', 'published', 'discarded')),
    revision integer NOT NULL,
    generation integer REFERENCES generations,
    content text NOT NULL
);
CREATE INDEX drafts_status ON drafts (status, id);

-- Previous contents of each draft, newest last (undo); trimmed to the newest 100.
CREATE TABLE draft_history (
    id bigserial PRIMARY KEY,
    draft_id bigint NOT NULL REFERENCES drafts (id),
    revision integer NOT NULL,
    layers text NOT NULL,
    base text NOT NULL,
    content text NOT NULL,
    saved_at text NOT NULL
);
CREATE INDEX draft_history_draft ON draft_history (draft_id, id);

-- What QGIS should show: the current rows only, next to the history tables (SELECT for the
-- runtime role comes with `GRANT SELECT ON ALL TABLES`, which covers views).
-- The unique index of precedence had the view's name.
ALTER INDEX precedence_current RENAME TO precedence_key_current;
CREATE VIEW counties_current AS
    SELECT fid, code, name, attrs, gen_from, geom FROM counties WHERE gen_to IS NULL;
CREATE VIEW townships_current AS
    SELECT fid, code, name, county_code, attrs, gen_from, geom FROM townships WHERE gen_to IS NULL;
CREATE VIEW parks_current AS
    SELECT fid, code, name, kind, county_code, attrs, gen_from, geom FROM parks WHERE gen_to IS NULL;
CREATE VIEW grids_current AS
    SELECT fid, code, name, township_code, kind, attrs, gen_from, geom FROM grids WHERE gen_to IS NULL;
CREATE VIEW sea_areas_current AS
    SELECT fid, code, name, county_code, attrs, gen_from, geom FROM sea_areas WHERE gen_to IS NULL;
CREATE VIEW bureaus_current AS
    SELECT fid, code, name, level, parent_code, county_code, park_code, attrs, gen_from FROM bureaus WHERE gen_to IS NULL;
CREATE VIEW jurisdictions_current AS
    SELECT fid, bureau_code, attrs, gen_from, geom FROM jurisdictions WHERE gen_to IS NULL;
CREATE VIEW workers_current AS
    SELECT fid, id, name, phone, grid_code, role, attrs, gen_from FROM workers WHERE gen_to IS NULL;
CREATE VIEW entities_current AS
    SELECT fid, id, name, industry, permit_class, attrs, gen_from, geom FROM entities WHERE gen_to IS NULL;
CREATE VIEW precedence_current AS
    SELECT fid, subject, key, rank, label_zh, attrs, gen_from FROM precedence WHERE gen_to IS NULL;
