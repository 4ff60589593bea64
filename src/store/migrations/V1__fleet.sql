-- Pharos' schema in PostgreSQL (the shared store of a fleet of replicas). Applied by `pharos` itself on
-- start (refinery, history in pharos_schema_history), under an advisory lock so replicas starting together
-- apply it once.

-- One row per bank incarnation: `uid` tells a bank deleted and created again under its name from the old one.
CREATE TABLE pharos_banks (
    uid        bigserial PRIMARY KEY,
    name       text      NOT NULL UNIQUE,
    kind       text      NOT NULL,
    created_ms bigint    NOT NULL,
    next_id    bigint    NOT NULL DEFAULT 0,   -- entries ever added = the next entry's id
    removed    bigint    NOT NULL DEFAULT 0,   -- entries removed so far
    policy     jsonb     NOT NULL              -- BankPolicy (negative, radius, min_quality, flood)
);

-- Every entry ever added. Removed entries stay as tombstones (hash kept, fields dropped): the matcher's row
-- number is the id, so a replica needs every row to place the later ones.
CREATE TABLE pharos_entries (
    bank           bigint NOT NULL REFERENCES pharos_banks (uid) ON DELETE CASCADE,
    id             bigint NOT NULL,
    hash           bytea  NOT NULL,            -- as the matcher packs it: PDQ/pHash little-endian u64 limbs, digests as is
    added_ms       bigint NOT NULL,            -- the partner's time when given, else the time of the add
    meta           jsonb,                      -- EntryMeta (label, external_id, source, tags, …); NULL when empty
    disabled_until bigint,                     -- NULL active; 9223372036854775807 disabled until enabled
    removed_ms     bigint,                     -- NULL while live
    PRIMARY KEY (bank, id)
);
CREATE INDEX pharos_entries_external_id ON pharos_entries (bank, (meta ->> 'external_id'))
    WHERE removed_ms IS NULL AND meta ? 'external_id';

-- The change log replicas follow. `seq` is taken from pharos_log_head by an UPDATE that is the last statement
-- of every write transaction: its row lock is held until commit, so sequence order is commit order and a
-- reader that has seen `seq` has seen every change before it.
CREATE TABLE pharos_log_head (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    seq bigint  NOT NULL
);
INSERT INTO pharos_log_head (one, seq) VALUES (true, 0);

CREATE TABLE pharos_changes (
    seq      bigint   PRIMARY KEY,
    time_ms  bigint   NOT NULL,
    bank_uid bigint   NOT NULL,
    bank     text     NOT NULL,
    op       text     NOT NULL,                -- created, deleted, policy, added, removed, updated
    first_id bigint,                           -- added: the first id
    count    bigint,                           -- added: how many
    ids      bigint[]                          -- removed, updated: which
);

-- The audit: matches, suppressions, flood events and bank changes, as JSON (AuditRecord).
CREATE TABLE pharos_audit (
    seq     bigserial PRIMARY KEY,
    time_ms bigint    NOT NULL,
    record  jsonb     NOT NULL
);
CREATE INDEX pharos_audit_time ON pharos_audit (time_ms, seq);
