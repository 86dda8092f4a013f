-- Run on a shard (psql -At -v print=types, then -v print=proxies): prints the router's copies
-- of pg_quota's composite types and its PL/Proxy functions, with the signatures (argument
-- names, types, defaults, results) read from that shard's catalog, so that the router always
-- matches the installed pg_quota. sharding/deploy.sh applies the output to the router.
--
-- How each function is routed: by its subject's shard, by its pool's (a pool's rows and its
-- members' live on one shard), or on every shard (the configuration, and the reads that
-- span subjects, which the router's own functions in sharding/router.sql merge).
CREATE TEMP TABLE routed (remote, local_name, run_on) AS VALUES
    ('consume',             'quota.consume',             'quota_router.shard_of(subject)'),
    ('check',               'quota.check',               'quota_router.shard_of(subject)'),
    ('require',             'quota.require',             'quota_router.shard_of(subject)'),
    ('consume_many',        'quota.consume_many',        'quota_router.shard_of(subject)'),
    ('require_many',        'quota.require_many',        'quota_router.shard_of(subject)'),
    ('record',              'quota.record',              'quota_router.shard_of(subject)'),
    ('give_back',           'quota.give_back',           'quota_router.shard_of(subject)'),
    ('reserve',             'quota.reserve',             'quota_router.shard_of(subject)'),
    ('require_reservation', 'quota.require_reservation', 'quota_router.shard_of(subject)'),
    ('grant',               'quota.grant',               'quota_router.shard_of(subject)'),
    ('usage',               'quota.usage',               'quota_router.shard_of(subject)'),
    ('usage_history',       'quota.usage_history',       'quota_router.shard_of(subject)'),
    ('forecast',            'quota.forecast',            'quota_router.shard_of(subject)'),
    ('assign_plan',         'quota.assign_plan',         'quota_router.shard_of(subject)'),
    ('set_override',        'quota.set_override',        'quota_router.shard_of(subject)'),
    ('clear_override',      'quota.clear_override',      'quota_router.shard_of(subject)'),
    ('set_rate_override',   'quota.set_rate_override',   'quota_router.shard_of(subject)'),
    ('clear_rate_override', 'quota.clear_rate_override', 'quota_router.shard_of(subject)'),
    ('set_alerts',          'quota.set_alerts',          'quota_router.shard_of(subject)'),
    ('clear_alerts',        'quota.clear_alerts',        'quota_router.shard_of(subject)'),
    ('reset',               'quota.reset',               'quota_router.shard_of(subject)'),
    ('leave_pool',          'quota.leave_pool',          'quota_router.shard_of(pool)'),
    ('set_pool_cap',        'quota.set_pool_cap',        'quota_router.shard_of(pool)'),
    ('clear_pool_cap',      'quota.clear_pool_cap',      'quota_router.shard_of(pool)'),
    ('set_pool_admin',      'quota.set_pool_admin',      'quota_router.shard_of(pool)'),
    ('allocate',            'quota.allocate',            'quota_router.shard_of(pool)'),
    ('pool_usage',          'quota.pool_usage',          'quota_router.shard_of(pool)'),
    ('join_pool',           'quota_router.join_pool_on_shard', 'quota_router.shard_of(pool)'),
    ('create_plan',         'quota_router.create_plan_everywhere', 'ALL'),
    ('set_limits',          'quota_router.set_limits_everywhere',  'ALL'),
    ('audit',               'quota.audit',               'ALL'),
    ('top_consumers',       'quota_router.top_consumers_everywhere', 'ALL'),
    ('active_subjects',     'quota_router.active_subjects_everywhere', 'ALL');
-- A routed function this pg_quota lacks is an error, not a router without it.
DO $$
DECLARE
    missing text := (SELECT string_agg(r.remote, ', ') FROM routed AS r
                      WHERE NOT EXISTS (SELECT FROM pg_proc AS p
                                         WHERE p.proname = r.remote AND p.pronamespace = 'quota'::regnamespace));
BEGIN
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'pg_quota on this shard has no %', missing;
    END IF;
END
$$;
WITH composite_types AS (
    SELECT 1 AS part, t.typname::text AS name,
           format('CREATE TYPE quota.%I AS (%s);', t.typname,
                  string_agg(format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod)), ', ' ORDER BY a.attnum)) AS ddl
      FROM pg_type AS t
      JOIN pg_class AS c ON c.oid = t.typrelid AND c.relkind = 'c'
      JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
     WHERE t.typnamespace = 'quota'::regnamespace
     GROUP BY t.typname
), proxies AS (
    SELECT 2 AS part, r.local_name || '(' || pg_get_function_identity_arguments(p.oid) || ')' AS name,
           format(E'CREATE FUNCTION %s(%s) RETURNS %s\nLANGUAGE plproxy AS $proxy$\n    CLUSTER ''pg_quota'';\n    RUN ON %s;\n    TARGET quota.%s;\n$proxy$;',
                  r.local_name, pg_get_function_arguments(p.oid),
                  -- PL/Proxy runs on every shard only a function returning a set.
                  CASE WHEN r.run_on = 'ALL' AND NOT p.proretset THEN 'SETOF ' ELSE '' END || pg_get_function_result(p.oid),
                  r.run_on, p.proname) AS ddl
      FROM routed AS r
      JOIN pg_proc AS p ON p.proname = r.remote AND p.pronamespace = 'quota'::regnamespace
)
SELECT ddl FROM (SELECT * FROM composite_types UNION ALL SELECT * FROM proxies) AS everything
 WHERE part = CASE :'print' WHEN 'types' THEN 1 WHEN 'proxies' THEN 2 END
 ORDER BY name;
