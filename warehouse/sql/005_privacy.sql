-- CONTRACT §11: one row per erasure request, for a data-protection officer: when, by which
-- API key (its name, or `cli`), a salted hash of the id (HMAC-SHA256 with the salt in
-- $PULSE_HOME/erasure.salt; never the id) and how many rows of each kind went. A request
-- repeated finds nothing and is recorded with zero counts.
CREATE TABLE IF NOT EXISTS erasures (
    at DateTime64(3, 'UTC'),
    key_name String,
    id_hash String,
    events UInt64,
    orders UInt64,
    exposures UInt64,
    sessions UInt64,
    duplicates UInt64,
    flow_acknowledged UInt8          -- the running flow dropped the user's state first
) ENGINE = MergeTree
ORDER BY (at, id_hash)
;

-- PULSE_RETENTION (warehouse.retention): raw rows before `until` were dropped; the rollups'
-- minutes before it are never recomputed from raw rows again.
CREATE TABLE IF NOT EXISTS purged_until (
    until DateTime('UTC'),
    at DateTime64(3, 'UTC'),
    events UInt64,
    sessions UInt64,
    duplicates UInt64
) ENGINE = MergeTree
ORDER BY until
