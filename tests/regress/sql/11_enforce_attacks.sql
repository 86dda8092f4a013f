-- The attacks on quota.enforce and quota.on_signup found in the review of 0.5.0, run the
-- way they were reported. Each failed on 0.5.0.
SELECT quota.create_plan('guarded', '{"projects": {"limit": 3, "per": "lifetime"},
                                      "storage_mb": {"limit": 100, "per": "lifetime"},
                                      "exports": {"limit": 5, "per": "month"}}');
SELECT quota.assign_plan(s(n), 'guarded') FROM generate_series(110, 119) AS n;
-- A role with no pg_quota privilege at all that owns a table an admin put under
-- enforcement (as the auth server's role owns auth.users), and one with only EXECUTE on
-- quota.enforce.
CREATE ROLE table_owner;
CREATE ROLE enforce_only;
GRANT USAGE ON SCHEMA quota TO enforce_only;
GRANT EXECUTE ON FUNCTION quota.enforce() TO enforce_only;
GRANT CREATE ON SCHEMA public TO table_owner, enforce_only;

-- 1. A column of the owner's own type, with a cast to json that makes the owner superuser
-- when anything converts the row with the extension owner's rights (to_jsonb(NEW) did).
SET ROLE table_owner;
CREATE TABLE public.owned_projects (id serial PRIMARY KEY, user_id uuid NOT NULL);
CREATE TABLE public.owned_users (id uuid PRIMARY KEY);
CREATE TYPE public.mood AS ENUM ('x');
CREATE FUNCTION public.mood_json(public.mood) RETURNS json LANGUAGE plpgsql
    AS $$BEGIN EXECUTE 'ALTER ROLE table_owner SUPERUSER'; RETURN '"x"'; END$$;
CREATE CAST (public.mood AS json) WITH FUNCTION public.mood_json(public.mood);
RESET ROLE;
SELECT quota.enforce_on('public.owned_projects', 'projects');
CREATE TRIGGER signup AFTER INSERT ON public.owned_users FOR EACH ROW EXECUTE FUNCTION quota.on_signup();
SET ROLE table_owner;
ALTER TABLE public.owned_projects ADD COLUMN mood public.mood DEFAULT 'x';
ALTER TABLE public.owned_users ADD COLUMN mood public.mood DEFAULT 'x';
INSERT INTO public.owned_projects (user_id) VALUES (s(110));
INSERT INTO public.owned_users (id) VALUES (s(120));
DELETE FROM public.owned_projects;
RESET ROLE;
SELECT rolname, rolsuper FROM pg_roles WHERE rolname = 'table_owner';
-- Both triggers still did their work: the project was counted and given back, the user got
-- the default plan's assignment attempt (there is no default plan here: a WARNING).
SELECT used FROM quota.usage(s(110)) WHERE metric = 'projects';
SELECT count(*) AS charged_rows FROM quota.events WHERE subject = s(110) AND metric = 'projects' AND kind = 'consume';

-- A subject column of a domain over uuid (whose CHECK is the owner's function) is read by
-- no one: enforce_on refuses it, and a trigger made by hand is refused on first use.
SET ROLE enforce_only;
-- (The CHECK runs as the inserting role too, where it does nothing.)
CREATE FUNCTION public.watch(uuid) RETURNS boolean LANGUAGE plpgsql
    AS $$BEGIN IF current_user <> 'enforce_only' THEN EXECUTE 'ALTER ROLE enforce_only SUPERUSER'; END IF; RETURN true; END$$;
CREATE DOMAIN public.watched_uuid AS uuid CHECK (public.watch(VALUE));
CREATE TABLE public.watched (id serial, user_id public.watched_uuid, size_mb numeric);
CREATE TRIGGER by_hand AFTER INSERT OR UPDATE OR DELETE ON public.watched FOR EACH ROW EXECUTE FUNCTION quota.enforce('projects');
SELECT try($$INSERT INTO public.watched (user_id) VALUES (s(111))$$);
RESET ROLE;
SELECT try($$SELECT quota.enforce_on('public.watched', 'projects')$$);
SELECT rolname, rolsuper FROM pg_roles WHERE rolname = 'enforce_only';
SELECT count(*) AS counted FROM quota.counters WHERE subject = s(111);

-- 4. EXECUTE on quota.enforce must not give back units of any subject: rows naming another
-- user, inserted before the trigger exists, then deleted under a hand-made AFTER DELETE
-- trigger (or one made by enforce_on after the inserts).
CREATE TABLE public.projects_of_112 (id serial PRIMARY KEY, user_id uuid NOT NULL);
SELECT quota.enforce_on('public.projects_of_112', 'projects');
INSERT INTO public.projects_of_112 (user_id) SELECT s(112) FROM generate_series(1, 3);
SET ROLE enforce_only;
CREATE TABLE public.decoys (id serial, user_id uuid);
INSERT INTO public.decoys (user_id) SELECT s(112) FROM generate_series(1, 3);
CREATE TRIGGER give_back AFTER DELETE ON public.decoys FOR EACH ROW EXECUTE FUNCTION quota.enforce('projects');
DELETE FROM public.decoys;
RESET ROLE;
SELECT used FROM quota.usage(s(112)) WHERE metric = 'projects';
SELECT try($$INSERT INTO public.projects_of_112 (user_id) VALUES (s(112))$$);
-- Its own rows are the only units a table gives back.
DELETE FROM public.projects_of_112 WHERE id = (SELECT min(id) FROM public.projects_of_112);
SELECT used FROM quota.usage(s(112)) WHERE metric = 'projects';
SELECT enforced_table, units FROM quota.enforced_charges WHERE subject = s(112);

-- 3. Ways round a lifetime storage limit of 100.
CREATE TABLE public.files (id serial PRIMARY KEY, user_id uuid, size_mb numeric);
SELECT quota.enforce_on('public.files', 'storage_mb', amount => 'size_mb');
SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = 'public.files'::regclass;
INSERT INTO public.files (user_id, size_mb) VALUES (s(113), 50), (s(113), 50);
-- Growing a row is charged its growth: 1,050 does not fit.
SELECT regexp_replace(try($$UPDATE public.files SET size_mb = 1000 WHERE id = (SELECT min(id) FROM public.files)$$),
                      '\{.*\}', '{...}');
-- Shrinking gives the difference back; deleting gives back what the row holds now.
UPDATE public.files SET size_mb = 10 WHERE id = (SELECT min(id) FROM public.files);
SELECT used FROM quota.usage(s(113)) WHERE metric = 'storage_mb';
DELETE FROM public.files WHERE size_mb = 10;
SELECT used, (SELECT sum(size_mb) FROM public.files WHERE user_id = s(113)) AS live_mb
  FROM quota.usage(s(113)) WHERE metric = 'storage_mb';
-- A move while changing the amount: the new owner is charged the new amount, the old owner
-- gets back what the row was charged.
UPDATE public.files SET user_id = s(114), size_mb = 30 WHERE user_id = s(113);
SELECT metric, used FROM quota.usage(s(113)) WHERE metric = 'storage_mb'
UNION ALL SELECT metric, used FROM quota.usage(s(114)) WHERE metric = 'storage_mb';
-- Fractions are rounded up: 0.4 MB is charged as 1, so 100 such rows fill the limit.
INSERT INTO public.files (user_id, size_mb) SELECT s(115), 0.4 FROM generate_series(1, 100);
SELECT regexp_replace(try($$INSERT INTO public.files (user_id, size_mb) VALUES (s(115), 0.4)$$), '\{.*\}', '{...}');
SELECT try($$INSERT INTO public.files (user_id, size_mb) VALUES (s(116), -1)$$);
SELECT try($$INSERT INTO public.files (user_id, size_mb) VALUES (s(116), 'NaN')$$);
SELECT try($$INSERT INTO public.files (user_id, size_mb) VALUES (s(116), 1e30)$$);
-- Rows that INSERT ... ON CONFLICT DO NOTHING skipped are not charged; DO UPDATE is an update.
CREATE TABLE public.slots (user_id uuid, name text, PRIMARY KEY (user_id, name));
SELECT quota.enforce_on('public.slots', 'projects');
INSERT INTO public.slots VALUES (s(117), 'a');
INSERT INTO public.slots VALUES (s(117), 'a') ON CONFLICT DO NOTHING;
INSERT INTO public.slots VALUES (s(117), 'a') ON CONFLICT (user_id, name) DO UPDATE SET name = 'a';
INSERT INTO public.slots VALUES (s(117), 'b'), (s(117), 'c');
SELECT used, (SELECT count(*) FROM public.slots WHERE user_id = s(117)) AS live_rows
  FROM quota.usage(s(117)) WHERE metric = 'projects';
-- A windowed metric stays spent on delete, and a move charges the new owner only growth.
CREATE TABLE public.exports_of (id serial, user_id uuid, pages int);
SELECT quota.enforce_on('public.exports_of', 'exports', amount => 'pages');
INSERT INTO public.exports_of (user_id, pages) VALUES (s(118), 2);
UPDATE public.exports_of SET user_id = s(119), pages = 3;
DELETE FROM public.exports_of;
SELECT metric, used FROM quota.usage(s(118)) WHERE metric = 'exports'
UNION ALL SELECT metric, used FROM quota.usage(s(119)) WHERE metric = 'exports';

-- 4. Found in the review of 0.21.0. (a) A table's own BEFORE trigger that sets the amount or
-- the subject, on an update naming neither: a trigger on UPDATE OF its columns never fired,
-- and a document grew to 500 MB within a limit of 100. It fires on every UPDATE now.
SELECT quota.assign_plan(s(n), 'guarded') FROM generate_series(1110, 1112) AS n;
CREATE TABLE public.documents (id serial PRIMARY KEY, user_id uuid, content text, size_mb int);
CREATE FUNCTION public.document_size() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.size_mb := pg_catalog.length(NEW.content); RETURN NEW; END $$;
CREATE TRIGGER document_size BEFORE INSERT OR UPDATE ON public.documents FOR EACH ROW EXECUTE FUNCTION public.document_size();
SELECT quota.enforce_on('public.documents', 'storage_mb', amount => 'size_mb');
SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = 'public.documents'::regclass AND tgname LIKE 'quota%';
INSERT INTO public.documents (user_id, content) VALUES (s(1110), repeat('x', 10));
UPDATE public.documents SET content = repeat('x', 90);
SELECT used FROM quota.usage(s(1110)) WHERE metric = 'storage_mb';
SELECT regexp_replace(try($$UPDATE public.documents SET content = repeat('x', 500)$$), '\{.*\}', '{...}');
-- A BEFORE trigger that hands the row to another subject moves its charge (lifetime: the
-- new owner is charged the whole row, the old one gets it back).
CREATE FUNCTION public.document_owner() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.user_id := '00000000-0000-0000-0000-000000001111'; RETURN NEW; END $$;
CREATE TRIGGER document_owner BEFORE UPDATE ON public.documents FOR EACH ROW EXECUTE FUNCTION public.document_owner();
UPDATE public.documents SET content = content;
SELECT u.subject = s(1110) AS first_owner, u.used FROM (SELECT s(1110) AS subject UNION ALL SELECT s(1111)) AS o,
       LATERAL (SELECT o.subject, used FROM quota.usage(o.subject) WHERE metric = 'storage_mb') AS u ORDER BY 1 DESC;
-- An update that changes neither column charges nothing.
UPDATE public.documents SET content = content;
SELECT used FROM quota.usage(s(1111)) WHERE metric = 'storage_mb';
-- (b) Amounts no row can be charged, in rows written before enforce_on attached the trigger:
-- they were charged nothing, so they give nothing back, and their rows can still be updated,
-- fixed and deleted (on 0.21.0 each such write failed with 22023). A new amount that cannot
-- be charged is refused as before, a negative fraction too (0.21.0 rounded -0.4 up to 0).
CREATE TABLE public.legacy_files (id serial PRIMARY KEY, user_id uuid, size_mb numeric, note text);
INSERT INTO public.legacy_files (user_id, size_mb) VALUES (s(1112), -3), (s(1112), 'NaN'), (s(1112), 1e30);
SELECT quota.enforce_on('public.legacy_files', 'storage_mb', amount => 'size_mb');
UPDATE public.legacy_files SET note = 'seen';
UPDATE public.legacy_files SET size_mb = 4 WHERE size_mb = -3;
DELETE FROM public.legacy_files WHERE size_mb = 'NaN' OR size_mb > 1e20;
SELECT used, (SELECT sum(size_mb) FROM public.legacy_files) AS stored FROM quota.usage(s(1112)) WHERE metric = 'storage_mb';
SELECT try($$UPDATE public.legacy_files SET size_mb = -1$$);
SELECT try($$INSERT INTO public.legacy_files (user_id, size_mb) VALUES (s(1112), -0.4)$$);
SELECT try($$INSERT INTO public.legacy_files (user_id, size_mb) VALUES (s(1112), 'NaN')$$);

SELECT count(*) AS audit_mismatches FROM quota.audit();
DROP TABLE public.owned_projects, public.owned_users, public.watched, public.decoys, public.projects_of_112,
           public.files, public.slots, public.exports_of, public.documents, public.legacy_files;
DROP FUNCTION public.document_size(), public.document_owner();
DROP CAST (public.mood AS json);
DROP DOMAIN public.watched_uuid;
DROP FUNCTION public.mood_json(public.mood), public.watch(uuid);
DROP TYPE public.mood;
REVOKE ALL ON SCHEMA public FROM table_owner, enforce_only;
REVOKE ALL ON SCHEMA quota FROM enforce_only;
REVOKE ALL ON FUNCTION quota.enforce() FROM enforce_only;
DROP ROLE table_owner, enforce_only;
