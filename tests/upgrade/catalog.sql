-- Every object of schema quota as text, so that a database upgraded with ALTER EXTENSION
-- UPDATE can be compared with a fresh install of the same version.
SELECT 'function ' || p.oid::regprocedure || ' returns ' || pg_catalog.format_type(p.prorettype, NULL)
       || ' ' || p.provolatile::text || ' definer=' || p.prosecdef || ' strict=' || p.proisstrict
       || ' config=' || coalesce(p.proconfig::text, '') || ' acl=' || coalesce(p.proacl::text, '')
       || ' args=' || coalesce(pg_catalog.pg_get_function_arguments(p.oid), '')
       || ' body=' || md5(p.prosrc)
  FROM pg_catalog.pg_proc AS p WHERE p.pronamespace = 'quota'::regnamespace
UNION ALL
SELECT 'column ' || c.relname || '.' || a.attname || ' ' || pg_catalog.format_type(a.atttypid, a.atttypmod)
       || ' notnull=' || a.attnotnull || ' default=' || coalesce(pg_catalog.pg_get_expr(d.adbin, d.adrelid), '')
       || ' identity=' || a.attidentity::text
  FROM pg_catalog.pg_class AS c
  JOIN pg_catalog.pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN pg_catalog.pg_attrdef AS d ON d.adrelid = c.oid AND d.adnum = a.attnum
 WHERE c.relnamespace = 'quota'::regnamespace AND c.relkind IN ('r', 'c')
UNION ALL
SELECT 'relation ' || c.relname || ' ' || c.relkind::text || ' rls=' || c.relrowsecurity
       || ' options=' || coalesce(c.reloptions::text, '') || ' acl=' || coalesce(c.relacl::text, '')
  FROM pg_catalog.pg_class AS c WHERE c.relnamespace = 'quota'::regnamespace AND c.relkind <> 'i'
UNION ALL
SELECT 'index ' || pg_catalog.pg_get_indexdef(i.indexrelid)
  FROM pg_catalog.pg_index AS i JOIN pg_catalog.pg_class AS c ON c.oid = i.indrelid
 WHERE c.relnamespace = 'quota'::regnamespace
UNION ALL
SELECT 'constraint ' || CASE WHEN c.conrelid <> 0 THEN c.conrelid::regclass::text ELSE c.contypid::regtype::text END
       || ' ' || c.conname || ' ' || pg_catalog.pg_get_constraintdef(c.oid) || ' validated=' || c.convalidated
  FROM pg_catalog.pg_constraint AS c WHERE c.connamespace = 'quota'::regnamespace
UNION ALL
SELECT 'type ' || t.oid::regtype || ' ' || t.typtype::text || ' base=' || coalesce(t.typbasetype::regtype::text, '')
       || ' notnull=' || t.typnotnull || ' acl=' || coalesce(t.typacl::text, '')
  FROM pg_catalog.pg_type AS t
 WHERE t.typnamespace = 'quota'::regnamespace AND t.typtype IN ('d', 'e')
UNION ALL
SELECT 'trigger ' || pg_catalog.pg_get_triggerdef(t.oid)
  FROM pg_catalog.pg_trigger AS t JOIN pg_catalog.pg_class AS c ON c.oid = t.tgrelid
 WHERE c.relnamespace = 'quota'::regnamespace AND NOT t.tgisinternal
UNION ALL
SELECT 'policy ' || p.tablename || ' ' || p.policyname || ' ' || p.cmd || ' ' || p.roles::text
       || ' ' || coalesce(p.qual, '') || ' ' || coalesce(p.with_check, '')
  FROM pg_catalog.pg_policies AS p WHERE p.schemaname = 'quota'
UNION ALL
SELECT 'config_dump ' || c::regclass::text
  FROM pg_catalog.pg_extension AS e, unnest(e.extconfig) AS c WHERE e.extname = 'pg_quota'
UNION ALL
SELECT 'member ' || pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid)
  FROM pg_catalog.pg_depend AS d
 WHERE d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.deptype = 'e'
   AND d.refobjid = (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'pg_quota')
ORDER BY 1;
