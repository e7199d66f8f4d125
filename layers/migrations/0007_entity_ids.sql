-- One entity by its id (credit code) in any version, through an index: a grid worker's patrol
-- visit asks for one entity, and a province has a million (the partial unique index of 0001
-- covers current rows only).
CREATE INDEX entities_id ON entities (id);
