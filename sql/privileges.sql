-- Who may read and run what. Runs last in the install script (finalize), after every
-- table and function exists.

-- Row level security: whoever is granted SELECT (Supabase's authenticated, through
-- quota.setup_supabase()) reads only rows of their own subject, and writes none (no write
-- privilege is ever granted); a user whose claims give them a quota_role (support, admin:
-- app_metadata.quota_role, src/callers.rs) reads every subject's rows, and only an admin
-- reads the audit trail. The functions run as the owner and see everything; service_role
-- bypasses RLS. Policies are for PUBLIC, so they need no Supabase roles.
-- (SELECT quota.current_subject()) is evaluated once per query, not per row.
-- Pools (sql/pools.sql): a member also reads its pool's plan, counters and grants (what
-- my_usage() shows it has left) and its own holds on the pool, not the pool's ledger nor the
-- other members' holds (their ids and keys); a pool's admins read everything of the pool and
-- of its members.
CREATE POLICY own_rows ON quota.assignments  FOR SELECT USING (subject = (SELECT quota.current_subject()) OR subject = (SELECT quota.my_pool())
                                                   OR subject = ANY ((SELECT quota.administered_subjects())::uuid[]) OR (SELECT quota.current_quota_role()) IS NOT NULL);
CREATE POLICY own_rows ON quota.overrides    FOR SELECT USING (subject = (SELECT quota.current_subject()) OR subject = (SELECT quota.my_pool())
                                                   OR subject = ANY ((SELECT quota.administered_subjects())::uuid[]) OR (SELECT quota.current_quota_role()) IS NOT NULL);
CREATE POLICY own_rows ON quota.resets       FOR SELECT USING (subject = (SELECT quota.current_subject()) OR subject = (SELECT quota.my_pool())
                                                   OR subject = ANY ((SELECT quota.administered_subjects())::uuid[]) OR (SELECT quota.current_quota_role()) IS NOT NULL);
CREATE POLICY own_rows ON quota.counters     FOR SELECT USING (subject = (SELECT quota.current_subject()) OR subject = (SELECT quota.my_pool())
                                                   OR subject = ANY ((SELECT quota.administered_subjects())::uuid[]) OR (SELECT quota.current_quota_role()) IS NOT NULL);
CREATE POLICY own_rows ON quota.events       FOR SELECT USING (subject = (SELECT quota.current_subject()) OR subject = ANY ((SELECT quota.administered_subjects())::uuid[])
                                                   OR (SELECT quota.current_quota_role()) IS NOT NULL);
CREATE POLICY own_rows ON quota.grants       FOR SELECT USING (subject = (SELECT quota.current_subject()) OR subject = (SELECT quota.my_pool())
                                                   OR subject = ANY ((SELECT quota.administered_subjects())::uuid[]) OR (SELECT quota.current_quota_role()) IS NOT NULL);
CREATE POLICY own_rows ON quota.event_grants FOR SELECT USING (subject = (SELECT quota.current_subject()) OR subject = ANY ((SELECT quota.administered_subjects())::uuid[])
                                                   OR (SELECT quota.current_quota_role()) IS NOT NULL);
CREATE POLICY own_rows ON quota.reservations FOR SELECT USING (subject = (SELECT quota.current_subject())
                                                   OR (subject = (SELECT quota.my_pool()) AND member = (SELECT quota.current_subject()))
                                                   OR subject = ANY ((SELECT quota.administered_subjects())::uuid[]) OR (SELECT quota.current_quota_role()) IS NOT NULL);
CREATE POLICY own_rows ON quota.enforced_charges FOR SELECT USING (subject = (SELECT quota.current_subject()) OR subject = (SELECT quota.my_pool())
                                                   OR subject = ANY ((SELECT quota.administered_subjects())::uuid[]) OR (SELECT quota.current_quota_role()) IS NOT NULL);
CREATE POLICY own_rows ON quota.rate_overrides FOR SELECT USING (subject = (SELECT quota.current_subject()) OR subject = (SELECT quota.my_pool())
                                                   OR subject = ANY ((SELECT quota.administered_subjects())::uuid[]) OR (SELECT quota.current_quota_role()) IS NOT NULL);
CREATE POLICY own_rows ON quota.rate_state   FOR SELECT USING (subject = (SELECT quota.current_subject()) OR subject = (SELECT quota.my_pool())
                                                   OR subject = ANY ((SELECT quota.administered_subjects())::uuid[]) OR (SELECT quota.current_quota_role()) IS NOT NULL);
CREATE POLICY pool_rows ON quota.pool_members FOR SELECT USING (member = (SELECT quota.current_subject()) OR pool = ANY ((SELECT quota.administered_pools())::uuid[])
                                                   OR (SELECT quota.current_quota_role()) IS NOT NULL);
CREATE POLICY pool_rows ON quota.pool_admins  FOR SELECT USING (admin = (SELECT quota.current_subject()) OR pool = ANY ((SELECT quota.administered_pools())::uuid[])
                                                   OR (SELECT quota.current_quota_role()) IS NOT NULL);
CREATE POLICY pool_rows ON quota.pool_caps    FOR SELECT USING (member = (SELECT quota.current_subject()) OR (member IS NULL AND pool = (SELECT quota.my_pool()))
                                                   OR pool = ANY ((SELECT quota.administered_pools())::uuid[]) OR (SELECT quota.current_quota_role()) IS NOT NULL);
CREATE POLICY pool_rows ON quota.pool_draws   FOR SELECT USING (member = (SELECT quota.current_subject()) OR pool = ANY ((SELECT quota.administered_pools())::uuid[])
                                                   OR (SELECT quota.current_quota_role()) IS NOT NULL);
CREATE POLICY pool_rows ON quota.allocations  FOR SELECT USING (member = (SELECT quota.current_subject()) OR pool = ANY ((SELECT quota.administered_pools())::uuid[])
                                                   OR (SELECT quota.current_quota_role()) IS NOT NULL);
CREATE POLICY own_rows ON quota.alert_overrides FOR SELECT USING (subject = (SELECT quota.current_subject()) OR subject = ANY ((SELECT quota.administered_subjects())::uuid[])
                                                   OR (SELECT quota.current_quota_role()) IS NOT NULL);
-- A user's alerts, for an in-app notification list: its own, its pool's admins', support's.
CREATE POLICY own_rows ON quota.alerts       FOR SELECT USING (subject = (SELECT quota.current_subject()) OR subject = ANY ((SELECT quota.administered_subjects())::uuid[])
                                                   OR (SELECT quota.current_quota_role()) IS NOT NULL);
CREATE POLICY own_rows ON quota.ledger_rollups FOR SELECT USING (subject = (SELECT quota.current_subject()) OR subject = ANY ((SELECT quota.administered_subjects())::uuid[])
                                                   OR (SELECT quota.current_quota_role()) IS NOT NULL);
CREATE POLICY own_rows ON quota.grant_rollups FOR SELECT USING (subject = (SELECT quota.current_subject()) OR subject = (SELECT quota.my_pool())
                                                   OR subject = ANY ((SELECT quota.administered_subjects())::uuid[]) OR (SELECT quota.current_quota_role()) IS NOT NULL);
CREATE POLICY admins ON quota.admin_changes  FOR SELECT USING ((SELECT quota.current_quota_role()) = 'admin');
-- A user sees the plan they are on (assignments shows them only their own) and the default
-- plan they would get, and those plans' limits: enough for my_usage() and my_check().
-- Support and admins see every plan.
CREATE POLICY own_plan ON quota.plans  FOR SELECT USING (is_default OR plan IN (SELECT a.plan FROM quota.assignments AS a)
                                                         OR (SELECT quota.current_quota_role()) IS NOT NULL);
CREATE POLICY own_plan ON quota.limits FOR SELECT USING (plan IN (SELECT p.plan FROM quota.plans AS p));

-- Nothing is executable or readable by PUBLIC: the README shows the grants for
-- Supabase's service_role and for a plain backend role.
REVOKE ALL ON ALL TABLES IN SCHEMA quota FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA quota FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA quota FROM PUBLIC;
