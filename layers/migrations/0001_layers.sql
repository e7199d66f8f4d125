-- gridmap schema, version 1: versioned layers, stable identities, routing parts, incidents.
-- Applied by `gridmap db init` inside one transaction, recorded in gridmap.schema_migrations.

CREATE EXTENSION IF NOT EXISTS postgis;
CREATE SCHEMA IF NOT EXISTS gridmap;
SET LOCAL search_path = gridmap, public;

-- Every import or edit is one generation; rows carry the first and last generation they
-- belong to (gen_to NULL while current), so every past state can be read back.
CREATE TABLE generations (
    id integer PRIMARY KEY CHECK (id > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    layers text[] NOT NULL,
    note text NOT NULL DEFAULT '',
    source text NOT NULL DEFAULT ''
);

-- Codes are stable identities that outlive any one version of a boundary: references between
-- versioned layers are real foreign keys to these.
CREATE TABLE county_codes (code text PRIMARY KEY);
CREATE TABLE township_codes (code text PRIMARY KEY);
CREATE TABLE park_codes (code text PRIMARY KEY);
CREATE TABLE grid_codes (code text PRIMARY KEY);
CREATE TABLE bureau_codes (code text PRIMARY KEY);

CREATE TABLE counties (
    fid bigserial PRIMARY KEY,
    code text NOT NULL REFERENCES county_codes,
    name text NOT NULL,
    attrs jsonb NOT NULL DEFAULT '{}',
    gen_from integer NOT NULL REFERENCES generations,
    gen_to integer REFERENCES generations,
    geom geometry(MultiPolygon, 4490) NOT NULL CHECK (ST_IsValid(geom)),
    CHECK (gen_to IS NULL OR gen_to >= gen_from)
);

CREATE TABLE townships (
    fid bigserial PRIMARY KEY,
    code text NOT NULL REFERENCES township_codes,
    name text NOT NULL,
    county_code text NOT NULL REFERENCES county_codes,
    attrs jsonb NOT NULL DEFAULT '{}',
    gen_from integer NOT NULL REFERENCES generations,
    gen_to integer REFERENCES generations,
    geom geometry(MultiPolygon, 4490) NOT NULL CHECK (ST_IsValid(geom)),
    CHECK (gen_to IS NULL OR gen_to >= gen_from)
);

CREATE TABLE parks (
    fid bigserial PRIMARY KEY,
    code text NOT NULL REFERENCES park_codes,
    name text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('chemical_park', 'dev_zone_national', 'dev_zone_provincial', 'other')),
    county_code text NOT NULL REFERENCES county_codes,
    attrs jsonb NOT NULL DEFAULT '{}',
    gen_from integer NOT NULL REFERENCES generations,
    gen_to integer REFERENCES generations,
    geom geometry(MultiPolygon, 4490) NOT NULL CHECK (ST_IsValid(geom)),
    CHECK (gen_to IS NULL OR gen_to >= gen_from)
);

CREATE TABLE grids (
    fid bigserial PRIMARY KEY,
    code text NOT NULL REFERENCES grid_codes,
    name text NOT NULL,
    township_code text NOT NULL REFERENCES township_codes,
    kind text NOT NULL CHECK (kind IN ('comprehensive', 'park', 'dedicated')),
    attrs jsonb NOT NULL DEFAULT '{}',
    gen_from integer NOT NULL REFERENCES generations,
    gen_to integer REFERENCES generations,
    geom geometry(MultiPolygon, 4490) NOT NULL CHECK (ST_IsValid(geom)),
    CHECK (gen_to IS NULL OR gen_to >= gen_from)
);

CREATE TABLE sea_areas (
    fid bigserial PRIMARY KEY,
    code text NOT NULL,
    name text NOT NULL,
    county_code text NOT NULL REFERENCES county_codes,
    attrs jsonb NOT NULL DEFAULT '{}',
    gen_from integer NOT NULL REFERENCES generations,
    gen_to integer REFERENCES generations,
    geom geometry(MultiPolygon, 4490) NOT NULL CHECK (ST_IsValid(geom)),
    CHECK (gen_to IS NULL OR gen_to >= gen_from)
);

CREATE TABLE bureaus (
    fid bigserial PRIMARY KEY,
    code text NOT NULL REFERENCES bureau_codes,
    name text NOT NULL,
    level text NOT NULL CHECK (level IN ('municipal', 'county', 'numbered', 'park')),
    parent_code text REFERENCES bureau_codes,
    county_code text REFERENCES county_codes,
    park_code text REFERENCES park_codes,
    attrs jsonb NOT NULL DEFAULT '{}',
    gen_from integer NOT NULL REFERENCES generations,
    gen_to integer REFERENCES generations,
    CHECK (gen_to IS NULL OR gen_to >= gen_from),
    CHECK (level <> 'county' OR county_code IS NOT NULL),
    CHECK (level <> 'park' OR park_code IS NOT NULL),
    CHECK (level <> 'numbered' OR parent_code IS NOT NULL)
);

CREATE TABLE jurisdictions (
    fid bigserial PRIMARY KEY,
    bureau_code text NOT NULL REFERENCES bureau_codes,
    attrs jsonb NOT NULL DEFAULT '{}',
    gen_from integer NOT NULL REFERENCES generations,
    gen_to integer REFERENCES generations,
    geom geometry(MultiPolygon, 4490) NOT NULL CHECK (ST_IsValid(geom)),
    CHECK (gen_to IS NULL OR gen_to >= gen_from)
);

CREATE TABLE workers (
    fid bigserial PRIMARY KEY,
    id text NOT NULL,
    name text NOT NULL,
    phone text NOT NULL,
    grid_code text NOT NULL REFERENCES grid_codes,
    role text NOT NULL CHECK (role IN ('worker', 'leader')),
    attrs jsonb NOT NULL DEFAULT '{}',
    gen_from integer NOT NULL REFERENCES generations,
    gen_to integer REFERENCES generations,
    CHECK (gen_to IS NULL OR gen_to >= gen_from)
);

CREATE TABLE entities (
    fid bigserial PRIMARY KEY,
    id text NOT NULL CHECK (id ~ '^[0-9A-HJ-NPQRTUWXY]{2}[0-9]{6}[0-9A-HJ-NPQRTUWXY]{10}$'),
    name text NOT NULL,
    industry text NOT NULL,
    permit_class text NOT NULL,
    attrs jsonb NOT NULL DEFAULT '{}',
    gen_from integer NOT NULL REFERENCES generations,
    gen_to integer REFERENCES generations,
    geom geometry(Point, 4490) NOT NULL,
    CHECK (gen_to IS NULL OR gen_to >= gen_from)
);

-- The rules are data, versioned with the layers they are applied to.
CREATE TABLE precedence (
    fid bigserial PRIMARY KEY,
    subject text NOT NULL,
    key text NOT NULL,
    rank integer NOT NULL,
    label_zh text NOT NULL,
    attrs jsonb NOT NULL DEFAULT '{}',
    gen_from integer NOT NULL REFERENCES generations,
    gen_to integer REFERENCES generations,
    CHECK (gen_to IS NULL OR gen_to >= gen_from)
);

-- Unique codes among the current rows; GiST on every geometry; fast generation filters.
CREATE UNIQUE INDEX counties_code_current ON counties (code) WHERE gen_to IS NULL;
CREATE UNIQUE INDEX townships_code_current ON townships (code) WHERE gen_to IS NULL;
CREATE UNIQUE INDEX parks_code_current ON parks (code) WHERE gen_to IS NULL;
CREATE UNIQUE INDEX grids_code_current ON grids (code) WHERE gen_to IS NULL;
CREATE UNIQUE INDEX sea_areas_code_current ON sea_areas (code) WHERE gen_to IS NULL;
CREATE UNIQUE INDEX bureaus_code_current ON bureaus (code) WHERE gen_to IS NULL;
CREATE UNIQUE INDEX entities_id_current ON entities (id) WHERE gen_to IS NULL;
CREATE UNIQUE INDEX precedence_current ON precedence (subject, key) WHERE gen_to IS NULL;
CREATE INDEX counties_geom ON counties USING gist (geom);
CREATE INDEX townships_geom ON townships USING gist (geom);
CREATE INDEX parks_geom ON parks USING gist (geom);
CREATE INDEX grids_geom ON grids USING gist (geom);
CREATE INDEX sea_areas_geom ON sea_areas USING gist (geom);
CREATE INDEX jurisdictions_geom ON jurisdictions USING gist (geom);
CREATE INDEX entities_geom ON entities USING gist (geom);
CREATE INDEX workers_grid ON workers (grid_code) WHERE gen_to IS NULL;
CREATE INDEX townships_county ON townships (county_code);
CREATE INDEX grids_township ON grids (township_code);
CREATE INDEX parks_county ON parks (county_code);
CREATE INDEX sea_areas_county ON sea_areas (county_code);
CREATE INDEX bureaus_parent ON bureaus (parent_code);
CREATE INDEX bureaus_county ON bureaus (county_code);
CREATE INDEX bureaus_park ON bureaus (park_code);
CREATE INDEX jurisdictions_bureau ON jurisdictions (bureau_code);
CREATE INDEX workers_grid_all ON workers (grid_code);

-- Routing looks points up in these: every polygon of the routing layers, cut by ST_Subdivide
-- into pieces of at most 128 vertices, so that a point-in-polygon test never walks a
-- 3,000-vertex county ring. Derived from the layer tables, in the same transaction.
CREATE TABLE routing_layers (id smallint PRIMARY KEY, name text NOT NULL UNIQUE);
INSERT INTO routing_layers VALUES
    (0, 'counties'), (1, 'townships'), (2, 'grids'), (3, 'parks'), (4, 'sea_areas'),
    (5, 'jurisdictions');
CREATE TABLE routing_parts (
    layer smallint NOT NULL REFERENCES routing_layers,
    fid bigint NOT NULL,
    gen_from integer NOT NULL REFERENCES generations,
    gen_to integer REFERENCES generations,
    geom geometry(Polygon, 4490) NOT NULL
);
CREATE INDEX routing_parts_geom ON routing_parts USING gist (geom);
CREATE INDEX routing_parts_fid ON routing_parts (layer, fid);

-- Incidents: written once at intake; everything afterwards is an appended event.
CREATE TABLE incidents (
    fid bigserial PRIMARY KEY,
    id text NOT NULL UNIQUE,
    reported_at text NOT NULL,
    source text,
    category text NOT NULL,
    description text,
    reporter text,
    given_x double precision,
    given_y double precision,
    given_crs text,
    accuracy_m double precision,
    extent_wkt text,
    generation integer NOT NULL REFERENCES generations,
    route_status text NOT NULL CHECK (route_status IN ('ok', 'ambiguous', 'outside')),
    county_code text REFERENCES county_codes,
    township_code text REFERENCES township_codes,
    grid_code text REFERENCES grid_codes,
    park_code text REFERENCES park_codes,
    bureau_code text REFERENCES bureau_codes,
    answer jsonb NOT NULL,
    created_at text NOT NULL,
    created_by text NOT NULL,
    geom geometry(Point, 4490) NOT NULL
);
CREATE INDEX incidents_geom ON incidents USING gist (geom);

CREATE TABLE incident_events (
    seq bigserial PRIMARY KEY,
    incident_id text NOT NULL REFERENCES incidents (id),
    at text NOT NULL,
    actor text NOT NULL,
    action text NOT NULL,
    status text NOT NULL,
    grid_code text REFERENCES grid_codes,
    bureau_code text REFERENCES bureau_codes,
    reason text,
    data text
);
CREATE INDEX incident_events_incident ON incident_events (incident_id);

-- 干预留痕: the record of a case is append-only, enforced by the database.
CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% 只能追加，不能修改或删除', TG_TABLE_NAME;
END $$;
CREATE TRIGGER incidents_append_only BEFORE UPDATE OR DELETE ON incidents
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER incident_events_append_only BEFORE UPDATE OR DELETE ON incident_events
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
