-- The shared store's schema: append-only, hash-chained record streams per project.
-- Applied once, in order, by `custodian store init` (stores.postgres.migrate_schema) as
-- a role that may create schemas and roles (the DBA). Nothing here grants UPDATE,
-- DELETE or TRUNCATE to anyone, and triggers refuse them even to the table owner.

CREATE SCHEMA custodian;

-- One row per project sharing this database, and the two roles that may reach it.
CREATE TABLE custodian.projects (
    project text PRIMARY KEY CHECK (project ~ '^[a-z0-9_]{1,40}$'),
    writer_role name NOT NULL,
    reviewer_role name NOT NULL
);

-- One row per record line. (project, stream, seq) is the chain position: a second
-- writer racing for the same position fails on the primary key, so a chain never forks.
CREATE TABLE custodian.records (
    project text NOT NULL REFERENCES custodian.projects,
    stream text NOT NULL CHECK (stream ~ '^[a-z0-9_-]{1,64}$'),
    seq bigint NOT NULL CHECK (seq >= 0),
    prev text NOT NULL CHECK (prev ~ '^[0-9a-f]{64}$'),
    sha256 text NOT NULL,
    line bytea NOT NULL CHECK (position('\x0a'::bytea in line) = 0),
    written timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (project, stream, seq)
);

-- The server checks the chain on insert: sha256 is the line's hash, seq has no gap and
-- prev is the hash of the line before it. The owner's own records repeat seq and prev,
-- and its verifier checks them again on every read.
CREATE FUNCTION custodian.check_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    before text;
BEGIN
    IF NEW.sha256 IS DISTINCT FROM encode(sha256(NEW.line), 'hex') THEN
        RAISE EXCEPTION 'record % of %/% : sha256 is not the hash of its line',
            NEW.seq, NEW.project, NEW.stream;
    END IF;
    IF NEW.seq = 0 THEN
        before := repeat('0', 64);
    ELSE
        SELECT r.sha256 INTO before FROM custodian.records r
         WHERE r.project = NEW.project AND r.stream = NEW.stream AND r.seq = NEW.seq - 1;
    END IF;
    IF before IS NULL OR NEW.prev <> before THEN
        RAISE EXCEPTION 'record % of %/% does not follow the chain (prev %)',
            NEW.seq, NEW.project, NEW.stream, NEW.prev;
    END IF;
    NEW.written := clock_timestamp();
    RETURN NEW;
END $$;

CREATE TRIGGER records_chain BEFORE INSERT ON custodian.records
    FOR EACH ROW EXECUTE FUNCTION custodian.check_chain();

CREATE FUNCTION custodian.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'custodian.% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER records_append_only BEFORE UPDATE OR DELETE ON custodian.records
    FOR EACH ROW EXECUTE FUNCTION custodian.refuse_change();
CREATE TRIGGER records_no_truncate BEFORE TRUNCATE ON custodian.records
    FOR EACH STATEMENT EXECUTE FUNCTION custodian.refuse_change();
CREATE TRIGGER projects_append_only BEFORE UPDATE OR DELETE ON custodian.projects
    FOR EACH ROW EXECUTE FUNCTION custodian.refuse_change();
CREATE TRIGGER projects_no_truncate BEFORE TRUNCATE ON custodian.projects
    FOR EACH STATEMENT EXECUTE FUNCTION custodian.refuse_change();

-- Group roles: every project's writer and reviewer roles are members of these.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'custodian_writer') THEN
        CREATE ROLE custodian_writer NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'custodian_reviewer') THEN
        CREATE ROLE custodian_reviewer NOLOGIN;
    END IF;
END $$;

REVOKE ALL ON ALL TABLES IN SCHEMA custodian FROM PUBLIC;
GRANT USAGE ON SCHEMA custodian TO custodian_writer, custodian_reviewer;
GRANT SELECT ON custodian.projects TO custodian_writer, custodian_reviewer;
GRANT SELECT, INSERT ON custodian.records TO custodian_writer;
GRANT SELECT ON custodian.records TO custodian_reviewer;

-- Row-level security: a role sees a project's records only through that project's
-- writer or reviewer role, and only the writer role may add to them.
ALTER TABLE custodian.records ENABLE ROW LEVEL SECURITY;
ALTER TABLE custodian.records FORCE ROW LEVEL SECURITY;

CREATE POLICY members_read ON custodian.records FOR SELECT USING (
    EXISTS (
        SELECT 1 FROM custodian.projects p
         WHERE p.project = records.project
           AND (pg_has_role(current_user, p.writer_role, 'USAGE')
                OR pg_has_role(current_user, p.reviewer_role, 'USAGE'))
    )
);
CREATE POLICY writers_insert ON custodian.records FOR INSERT WITH CHECK (
    EXISTS (
        SELECT 1 FROM custodian.projects p
         WHERE p.project = records.project
           AND pg_has_role(current_user, p.writer_role, 'USAGE')
    )
);

-- Which migrations have run (stores.postgres.migrate_schema adds a row per file).
CREATE TABLE custodian.migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT ON custodian.migrations TO custodian_writer, custodian_reviewer;
