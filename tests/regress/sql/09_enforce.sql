-- quota.enforce(): limits on app tables that clients cannot walk past.
SELECT quota.create_plan('app', '{"projects": {"limit": 3, "per": "lifetime"},
                                  "exports": {"limit": 20, "per": "month"},
                                  "storage_mb": {"limit": 100, "per": "lifetime"}}');
SELECT quota.assign_plan(s(n), 'app') FROM generate_series(90, 93) AS n;
CREATE TABLE public.projects (id serial PRIMARY KEY, user_id uuid NOT NULL, name text);
CREATE TABLE public.exports (id serial PRIMARY KEY, owner uuid, size_mb int);
SELECT quota.enforce_on('public.projects', 'projects');
SELECT quota.enforce_on('public.exports', 'exports', subject_column => 'owner');
SELECT quota.enforce_on('public.exports', 'storage_mb', subject_column => 'owner', amount => 'size_mb');
SELECT tgname FROM pg_trigger WHERE tgrelid IN ('public.projects'::regclass, 'public.exports'::regclass) ORDER BY 1;

-- At most 3 projects: the fourth insert fails with PT429 (HTTP 429 through PostgREST).
INSERT INTO projects (user_id, name) VALUES (s(90), 'a'), (s(90), 'b'), (s(90), 'c');
SELECT try($$INSERT INTO projects (user_id, name) VALUES (s(90), 'd')$$);
-- Deleting one frees its slot; a row inserted and deleted in one transaction costs nothing.
DELETE FROM projects WHERE name = 'c';
SELECT used FROM quota.usage(s(90)) WHERE metric = 'projects';
BEGIN;
INSERT INTO projects (user_id, name) VALUES (s(90), 'temp');
DELETE FROM projects WHERE name = 'temp';
COMMIT;
SELECT used FROM quota.usage(s(90)) WHERE metric = 'projects';
INSERT INTO projects (user_id, name) VALUES (s(90), 'c2');
-- A rolled-back insert consumes nothing; a savepoint rolls back exactly its rows.
BEGIN;
DELETE FROM projects WHERE name = 'c2';
SAVEPOINT s1;
INSERT INTO projects (user_id, name) VALUES (s(90), 'x');
ROLLBACK TO SAVEPOINT s1;
SELECT used FROM quota.usage(s(90)) WHERE metric = 'projects';
ROLLBACK;
SELECT used, (SELECT count(*) FROM projects WHERE user_id = s(90)) AS live_rows
  FROM quota.usage(s(90)) WHERE metric = 'projects';

-- Multi-row statements are all or nothing: 4 rows for a user with room for 3 insert none.
SELECT try($$INSERT INTO projects (user_id, name) SELECT s(91), 'p' || n FROM generate_series(1, 4) AS n$$);
SELECT count(*) AS rows_of_91, (SELECT used FROM quota.usage(s(91)) WHERE metric = 'projects') AS used FROM projects WHERE user_id = s(91);
-- COPY goes through the same trigger.
COPY projects (user_id, name) FROM STDIN;
00000000-0000-0000-0000-000000000091	copied-1
00000000-0000-0000-0000-000000000091	copied-2
\.
SELECT count(*) AS rows_of_91 FROM projects WHERE user_id = s(91);

-- An UPDATE that moves a project to another user moves the unit (and needs room there).
UPDATE projects SET user_id = s(91) WHERE name = 'a';
SELECT metric, used FROM quota.usage(s(90)) WHERE metric = 'projects'
UNION ALL SELECT metric, used FROM quota.usage(s(91)) WHERE metric = 'projects';
SELECT try($$UPDATE projects SET user_id = s(91) WHERE name = 'b'$$);
UPDATE projects SET name = 'renamed' WHERE name = 'b';

-- 20 exports a month: a monthly limit does not come back on delete.
INSERT INTO exports (owner, size_mb) SELECT s(92), 1 FROM generate_series(1, 20);
SELECT regexp_replace(try($$INSERT INTO exports (owner, size_mb) VALUES (s(92), 1)$$), '\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00', '<reset>');
DELETE FROM exports WHERE owner = s(92);
SELECT metric, used FROM quota.usage(s(92)) WHERE metric IN ('exports', 'storage_mb') ORDER BY 1;
-- The amount can come from a column: 100 MB of storage in total, given back on delete.
INSERT INTO exports (owner, size_mb) VALUES (s(93), 60);
SELECT try($$INSERT INTO exports (owner, size_mb) VALUES (s(93), 41)$$);
INSERT INTO exports (owner, size_mb) VALUES (s(93), 40), (s(93), NULL), (s(93), 0);
SELECT metric, used FROM quota.usage(s(93)) WHERE metric IN ('exports', 'storage_mb') ORDER BY 1;

-- Wrong arguments fail when attaching, or on first use, with a clear message.
SELECT try($$SELECT quota.enforce_on('public.projects', 'nope')$$);
SELECT try($$SELECT quota.enforce_on('public.projects', 'projects', 'owner')$$);
SELECT try($$SELECT quota.enforce_on('public.projects', 'projects', 'name')$$);
SELECT try($$SELECT quota.enforce_on('public.exports', 'exports', 'owner', 'nosuch')$$);
SELECT try($$SELECT quota.enforce_on('public.projects', 'projects', 'user_id', 'name')$$);
SELECT try($$SELECT quota.enforce_on('public.nosuchtable', 'projects')$$);
CREATE TABLE public.notes (id serial, author uuid, body text);
CREATE TRIGGER by_hand AFTER INSERT ON notes FOR EACH ROW EXECUTE FUNCTION quota.enforce('projects');
SELECT try($$INSERT INTO notes (author, body) VALUES (s(90), 'x')$$);
DROP TRIGGER by_hand ON notes;
CREATE TRIGGER by_hand AFTER INSERT ON notes FOR EACH ROW EXECUTE FUNCTION quota.enforce('projects', 'body');
SELECT try($$INSERT INTO notes (author, body) VALUES (s(90), 'not a uuid')$$);
DROP TRIGGER by_hand ON notes;
CREATE TRIGGER by_hand AFTER INSERT ON notes FOR EACH STATEMENT EXECUTE FUNCTION quota.enforce('projects', 'author');
SELECT try($$INSERT INTO notes (author, body) VALUES (s(90), 'x')$$);
DROP TRIGGER by_hand ON notes;
CREATE TRIGGER by_hand AFTER INSERT ON notes FOR EACH ROW EXECUTE FUNCTION quota.enforce('nope', 'author');
SELECT try($$INSERT INTO notes (author, body) VALUES (s(90), 'x')$$);
SELECT try($$INSERT INTO exports (owner, size_mb) VALUES (NULL, 1)$$);
DROP TABLE notes;

-- Through PostgREST (request.method is set) the trigger's denial is SQLSTATE PGRST: HTTP 429,
-- the body's code PT429, and the row is not written.
CREATE FUNCTION pg_temp.postgrest_error(statement text) RETURNS TABLE (error_state text, message jsonb, detail jsonb)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('request.method', 'POST', true);
    EXECUTE statement;
    RAISE EXCEPTION 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS error_state = RETURNED_SQLSTATE, message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL;
    PERFORM set_config('request.method', '', true);
    RETURN NEXT;
END $$;
SELECT quota.assign_plan(s(94), 'app');
INSERT INTO projects (user_id, name) VALUES (s(94), 'a'), (s(94), 'b'), (s(94), 'c');
BEGIN;
SELECT error_state, message ->> 'code' AS code, message ->> 'message' AS message, detail -> 'status' AS status
  FROM pg_temp.postgrest_error($$INSERT INTO projects (user_id, name) VALUES (s(94), 'over')$$);
COMMIT;
SELECT count(*) AS projects_of_94, (SELECT used FROM quota.usage(s(94)) WHERE metric = 'projects') AS used
  FROM projects WHERE user_id = s(94);

-- Without quota.raise_denied the trigger cannot raise its denial: it refuses the write all
-- the same, saying why (in a transaction rolled back).
BEGIN;
ALTER EXTENSION pg_quota DROP FUNCTION quota.raise_denied(uuid, text, text, bigint, bigint, bigint, bigint, bigint,
                                                          timestamptz, timestamptz, timestamptz, text, text);
DROP FUNCTION quota.raise_denied(uuid, text, text, bigint, bigint, bigint, bigint, bigint,
                                 timestamptz, timestamptz, timestamptz, text, text);
SELECT try($$INSERT INTO projects (user_id, name) VALUES (s(94), 'over')$$);
SELECT count(*) AS projects_of_94 FROM projects WHERE user_id = s(94);
ROLLBACK;

-- A partitioned table: an UPDATE that moves a row to another partition is a DELETE and an
-- INSERT to the row triggers, one after the other. A windowed metric (uploads, mb: a delete
-- gives nothing back) is charged only what the row grew, as an UPDATE in place is; a
-- lifetime one (docs) gives the row back and charges it again. Subject s(95), at its limits.
SELECT quota.create_plan('regions', '{"uploads": {"limit": 4, "per": "day"}, "docs": {"limit": 4, "per": "lifetime"},
                                      "mb": {"limit": 100, "per": "day"}}');
SELECT quota.assign_plan(s(n), 'regions') FROM generate_series(95, 96) AS n;
CREATE TABLE public.files (id int, region text, user_id uuid, size_mb int) PARTITION BY LIST (region);
CREATE TABLE public.files_eu PARTITION OF files FOR VALUES IN ('eu');
CREATE TABLE public.files_us PARTITION OF files FOR VALUES IN ('us');
-- Two levels: asia is partitioned again.
CREATE TABLE public.files_asia PARTITION OF files FOR VALUES IN ('jp', 'sg') PARTITION BY LIST (region);
CREATE TABLE public.files_jp PARTITION OF files_asia FOR VALUES IN ('jp');
CREATE TABLE public.files_sg PARTITION OF files_asia FOR VALUES IN ('sg');
SELECT quota.enforce_on('public.files', 'uploads');
SELECT quota.enforce_on('public.files', 'docs');
SELECT quota.enforce_on('public.files', 'mb', amount => 'size_mb');
CREATE FUNCTION pg_temp.files_usage(subject uuid) RETURNS TABLE (uploads bigint, docs bigint, mb bigint)
LANGUAGE sql AS $$
    SELECT max(used) FILTER (WHERE metric = 'uploads'), max(used) FILTER (WHERE metric = 'docs'),
           max(used) FILTER (WHERE metric = 'mb')
      FROM quota.usage(subject)
$$;
-- Two rows inserted and moved in the same transaction (a row's insert and its move's delete
-- are one transaction's: PostgreSQL keeps their commands as a combo command id).
BEGIN;
INSERT INTO files VALUES (1, 'eu', s(95), 10), (2, 'eu', s(95), 20);
UPDATE files SET region = 'us' WHERE id = 1;
COMMIT;
INSERT INTO files VALUES (3, 'eu', s(95), 30), (4, 'eu', s(95), 40);
SELECT * FROM pg_temp.files_usage(s(95));
-- At every limit (4 uploads, 4 docs, 100 MB): moving all four rows in one statement, across
-- both levels, is allowed and charges nothing; a move that grows a row is charged the growth
-- (denied here), one that shrinks it nothing (a windowed metric gives nothing back).
UPDATE files SET region = CASE id WHEN 1 THEN 'jp' WHEN 2 THEN 'sg' ELSE 'us' END;
SELECT * FROM pg_temp.files_usage(s(95));
SELECT tableoid::regclass AS partition, count(*) FROM files GROUP BY 1 ORDER BY 1;
SELECT split_part(try($$UPDATE files SET region = 'eu', size_mb = 11 WHERE id = 1$$), ' available', 1) AS grown;
UPDATE files SET region = 'eu', size_mb = 5 WHERE id = 1;
SELECT * FROM pg_temp.files_usage(s(95));
-- A move to another subject: the windowed metrics charge the new one the growth only (as an
-- UPDATE in place that changes the subject does), the lifetime one the whole row.
UPDATE files SET region = 'us', user_id = s(96), size_mb = 12 WHERE id = 1;
SELECT * FROM pg_temp.files_usage(s(95)) UNION ALL SELECT * FROM pg_temp.files_usage(s(96));
-- The accounts follow the rows: each partition holds what its rows were charged.
SELECT enforced_table, subject = s(95) AS of_95, sum(units) FROM quota.enforced_charges
 WHERE metric = 'mb' AND units > 0 GROUP BY 1, 2 ORDER BY 1, 2;
-- A move and a new row in one command (a CTE): the new row is charged; a savepoint rolls a
-- move back; a move into a partition whose trigger is disabled leaves nothing that a later
-- insert of the same command or transaction could be taken for.
WITH moved AS (UPDATE files SET region = 'eu' WHERE id = 1 RETURNING id)
INSERT INTO files SELECT 5, 'eu', s(96), 1 FROM moved;
SELECT * FROM pg_temp.files_usage(s(96));
BEGIN;
SAVEPOINT before_move;
UPDATE files SET region = 'sg', size_mb = 20 WHERE id = 1;
ROLLBACK TO SAVEPOINT before_move;
SELECT * FROM pg_temp.files_usage(s(96));
ALTER TABLE files_us DISABLE TRIGGER USER;
UPDATE files SET region = 'us' WHERE id = 5;
ALTER TABLE files_us ENABLE TRIGGER USER;
INSERT INTO files VALUES (6, 'eu', s(96), 1);
COMMIT;
SELECT * FROM pg_temp.files_usage(s(96));
-- A BEFORE ROW INSERT trigger on a partition could skip the moved row, so no move is paired
-- while there is one: a move is a delete and an insert then (uploads charged again), and a
-- row inserted by the same command is charged in full.
CREATE FUNCTION pg_temp.keep_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER keep_row BEFORE INSERT ON files_eu FOR EACH ROW EXECUTE FUNCTION pg_temp.keep_row();
WITH moved AS (UPDATE files SET region = 'eu' WHERE id = 5 RETURNING id)
INSERT INTO files SELECT 7, 'eu', s(96), 1 FROM moved;
SELECT * FROM pg_temp.files_usage(s(96));
DROP TRIGGER keep_row ON files_eu;
DELETE FROM files WHERE id IN (5, 6, 7);
SELECT count(*) AS audit_mismatches FROM quota.audit();
DROP TABLE files;

-- enforce_off removes it.
SELECT quota.enforce_off('public.exports', 'exports');
SELECT tgname FROM pg_trigger WHERE tgrelid = 'public.exports'::regclass ORDER BY 1;
SELECT count(*) AS audit_mismatches FROM quota.audit();
