//! Bad-input fuzzing of every public function of schema quota.
//!
//!     fuzz [--seed N] [--calls N] [--db NAME]
//!
//! Calls functions found in the catalog (and checks that every documented one is there)
//! with arguments drawn from per-type pools that mix valid values with NULLs, zeros,
//! negatives, i64 edges, huge and malformed JSON, odd Unicode, SQL-looking strings and
//! text that does not cast to the parameter's type (every argument is passed as text and
//! cast, so wrong types reach PostgreSQL's input functions). Each call runs in its own
//! transaction, most rolled back; some run as a signed-in Supabase user (`authenticated`)
//! with claims from a pool of forged and real ones. A failure is a lost connection (a
//! crash), an internal error (SQLSTATE class XX or 58, or a Rust panic message), a
//! documented result that comes back NULL, or an in-app admin function that let a signed-in
//! user through without the quota_role it needs. Malformed rollover policies are first checked
//! to be refused with 22023 naming the key.

use std::collections::BTreeMap;

use pg_quota_harness::{arg, connect, fresh_database, seed_from, sqlstate, Rng};
use postgres::Client;

/// Every function the README documents (trigger functions are exercised by the SQL suites).
const DOCUMENTED: [&str; 60] = [
    "consume", "check", "require", "record", "record_batch", "reserve", "settle", "release", "give_back", "usage",
    "current_subject", "my_usage", "my_check", "create_plan", "set_limits", "assign_plan", "set_override",
    "clear_override", "reset", "grant", "revoke_grant", "audit", "expire_reservations", "enforce_on", "enforce_off",
    "setup_supabase", "consume_many", "require_many", "require_reservation", "explain_denial", "current_quota_role",
    "teardown_supabase", "subject_for", "join_pool", "leave_pool", "set_pool_cap", "clear_pool_cap", "set_pool_admin",
    "allocate", "revoke_allocation", "pool_usage", "routing_key", "set_alerts", "clear_alerts", "claim_alerts", "ack_alerts",
    "retry_alert", "requeue_dead_alerts", "purge_alerts", "emit_due_recoveries", "alert_payload", "usage_history",
    "my_usage_history", "top_consumers", "denial_spikes", "rate_limit_hits", "forecast", "my_forecast", "plan_distribution",
    "active_subjects",
];
/// The functions a signed-in user may call only with `app_metadata.quota_role` admin, and
/// the one that also lets support through.
const IN_APP_ADMIN: [&str; 10] = [
    "assign_plan", "set_override", "clear_override", "reset", "grant", "revoke_grant", "join_pool", "revoke_allocation", "set_alerts",
    "clear_alerts",
];
const IN_APP_SUPPORT: &str = "usage";
/// Usage analytics of every subject, which a signed-in user may call only with a quota_role
/// (sql/analytics.sql); usage_history and forecast also of its own subject (first argument).
const ANALYTICS_OF_ALL: [&str; 5] = ["top_consumers", "denial_spikes", "rate_limit_hits", "plan_distribution", "active_subjects"];
/// A pool's functions, which a signed-in user may also call for the pool that is its own
/// subject (their first argument) once it has a member; and leave_pool, also for itself (its
/// second).
const POOL_ADMIN: [&str; 4] = ["set_pool_cap", "clear_pool_cap", "set_pool_admin", "allocate"];
/// Functions that must return a value whenever they do not raise.
const NEVER_NULL: [&str; 19] = [
    "consume", "check", "require", "record", "reserve", "settle", "give_back", "grant", "expire_reservations", "subject_for",
    "allocate", "revoke_allocation", "routing_key", "set_alerts", "clear_alerts", "ack_alerts", "requeue_dead_alerts", "purge_alerts",
    "emit_due_recoveries",
];
const SUBJECT: &str = "00000000-0000-0000-0000-00000000f00d";
/// Malformed "rollover" policies: caps that are not positive whole numbers, expiries outside
/// 1 to 100 windows, what is not an object, unknown keys, beside a lifetime or unlimited
/// limit. Each is 22023 naming the key from create_plan and set_limits, and a fuzzed value.
const BAD_ROLLOVER: [&str; 16] = [
    r#"{"calls": {"limit": 5, "per": "day", "rollover": {"max": -1}}}"#,
    r#"{"calls": {"limit": 5, "per": "day", "rollover": {"max": 0}}}"#,
    r#"{"calls": {"limit": 5, "per": "day", "rollover": {"max": 2.5}}}"#,
    r#"{"calls": {"limit": 5, "per": "day", "rollover": {"max": 9223372036854775808}}}"#,
    r#"{"calls": {"limit": 5, "per": "day", "rollover": {"max": "5"}}}"#,
    r#"{"calls": {"limit": 5, "per": "day", "rollover": "yes"}}"#,
    r#"{"calls": {"limit": 5, "per": "day", "rollover": null}}"#,
    r#"{"calls": {"limit": 5, "per": "day", "rollover": {}}}"#,
    r#"{"calls": {"limit": 5, "per": "day", "rollover": [5]}}"#,
    r#"{"calls": {"limit": 5, "per": "day", "rollover": {"max": 5, "expires_after": 0}}}"#,
    r#"{"calls": {"limit": 5, "per": "day", "rollover": {"max": 5, "expires_after": 1000}}}"#,
    r#"{"calls": {"limit": 5, "per": "day", "rollover": {"max": 5, "expires_after": 2.5}}}"#,
    r#"{"calls": {"limit": 5, "per": "day", "rollover": {"max": 5, "expires_after": -1}}}"#,
    r#"{"calls": {"limit": 5, "per": "day", "rollover": {"max": 5, "ttl": 2}}}"#,
    r#"{"calls": {"limit": 5, "per": "lifetime", "rollover": {"max": 5}}}"#,
    r#"{"calls": {"limit": null, "per": "day", "rollover": {"max": 5}}}"#,
];

/// Values for a parameter of type `ty`, as text (None = NULL).
fn pool(ty: &str, reservation: &str, grant: &str) -> Vec<Option<String>> {
    let s = |v: &str| Some(v.to_string());
    let mut values: Vec<Option<String>> = match ty {
        "uuid" => vec![s(SUBJECT), s(SUBJECT), s(reservation), s(grant), s("00000000-0000-0000-0000-000000000000"), s("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"), s("not-a-uuid"), s("")],
        "bigint" => vec![s("1"), s("3"), s("0"), s("-1"), s(&i64::MIN.to_string()), s(&i64::MAX.to_string()), s(&(i64::MAX - 1).to_string()), s("99999999999999999999"), s("1.5"), s("abc"), s("")],
        "integer" => vec![s("0"), s("1"), s("-1"), s("2147483647"), s("-2147483648"), s("2147483648"), s("x")],
        "text" => vec![
            s("calls"), s("calls"), s("tokens"), s("wallet"), s("fz"), s("other_plan"), s("user_id"), s("n"), s(""), s("Calls"), s("nope"),
            s(&"a".repeat(63)), s(&"a".repeat(64)), s(&"k".repeat(255)), s(&"k".repeat(256)), s(&"x".repeat(100_000)),
            s("🔥"), s("ab\u{200F}c\u{200D}d"), s("e\u{301}\u{301}\u{301}"), s("ｃａｌｌｓ"), s("calls\u{0}x".split('\u{0}').next().unwrap_or("")),
            s("'; DROP TABLE quota.plans; --"), s("calls'||'x"), s("$1"), s("\\"), s("%s%n"), s("day"), s("1 day"),
        ],
        "jsonb" | "json" => vec![
            s("{}"), s("[]"), s("null"), s("1"), s("\"text\""), s("{"), s("{\"calls\": "),
            s(r#"{"calls": {"limit": 5, "per": "day"}}"#),
            s(r#"{"calls": {"limit": null}}"#),
            s(r#"{"calls": {"limit": -1, "per": "day"}}"#),
            s(r#"{"calls": {"limit": 1e30, "per": "day"}}"#),
            s(r#"{"calls": {"limit": 1.5, "per": "day"}}"#),
            s(r#"{"calls": {"limit": "10", "per": "day"}}"#),
            s(r#"{"calls": {"limit": 9223372036854775807, "per": "lifetime"}}"#),
            s(r#"{"calls": {"limit": 9223372036854775808, "per": "lifetime"}}"#),
            s(r#"{"calls": {"limit": 1, "per": "fortnight"}}"#),
            s(r#"{"calls": {"limit": 1, "per": "0 days"}}"#),
            s(r#"{"calls": {"limit": 1, "per": "-3 days"}}"#),
            s(r#"{"calls": {"limit": 1, "per": "100000000 years"}}"#),
            s(r#"{"calls": {"limit": 1, "per": "month", "anchor": "moon"}}"#),
            s(r#"{"calls": {"limit": 1, "per": "month", "time_zone": "Mars/Olympus_Mons"}}"#),
            s(r#"{"Bad Name": {"limit": 1, "per": "day"}}"#),
            s(r#"{"calls": {"limit": 1, "per": "day", "extra": true}}"#),
            s(r#"{"calls": {"limit": 5, "per": "day", "rollover": {"max": null, "expires_after": 100}}}"#),
            s(r#"[{"subject": "00000000-0000-0000-0000-00000000f00d", "metric": "calls", "amount": 2}]"#),
            s(r#"[{"subject": "00000000-0000-0000-0000-00000000f00d", "metric": "calls", "amount": -2, "idempotency_key": ""}]"#),
            s(r#"[{"subject": "nope", "metric": 7, "amount": "x", "occurred_at": "yesterday"}]"#),
            s(r#"[{"subject": "00000000-0000-0000-0000-00000000f00d", "metric": "calls", "amount": 1, "occurred_at": "294276-12-31T00:00:00Z"}]"#),
            s(r#"[null, 1, "x", [], {}]"#),
            s(&format!("[{}]", vec![r#"{"subject": "00000000-0000-0000-0000-00000000f00d", "metric": "calls", "amount": 1}"#; 2000].join(","))),
            s(&format!("{}1{}", "[".repeat(2000), "]".repeat(2000))),
            s(&format!("{{{}}}", (0..3000).map(|i| format!("\"m{i}\": {{\"limit\": {i}, \"per\": \"day\"}}")).collect::<Vec<_>>().join(","))),
            s(r#"{"note": "odd \u202e unicode 🔥"}"#),
        ],
        "timestamp with time zone" => vec![
            s("now"), s("2026-01-01 00:00:00+00"), s("2100-01-01"), s("1999-01-01"), s("infinity"), s("-infinity"),
            s("294276-12-31 23:59:59+00"), s("4713-01-01 00:00:00+00 BC"), s("yesterday"), s("garbage"),
        ],
        "interval" => vec![s("15 minutes"), s("0"), s("-1 hour"), s("1 microsecond"), s("178000000 years"), s("infinity"), s("-infinity"), s("abc")],
        "boolean" => vec![s("true"), s("false"), s("maybe")],
        "numeric" => vec![s("3"), s("0"), s("-1"), s("0.5"), s("NaN"), s("Infinity"), s("1e100"), s("x")],
        "text[]" => vec![s("{80%}"), s("{}"), s(r#"{"5 left",depleted,recovered}"#), s("{recovered}"), s("{NULL}"), s("{0%,1001%}"), s("{x}"), s("not an array")],
        "bigint[]" => vec![s("{1,2}"), s("{}"), s("{-1}"), s("{NULL}"), s("{99999999999999999999}"), s("x")],
        "regclass" => vec![s("public.notes"), s("public.notes"), s("quota.plans"), s("pg_catalog.pg_class"), s("no_such_table"), s("")],
        _ => vec![s("x")],
    };
    if ty == "jsonb" || ty == "json" {
        values.extend(BAD_ROLLOVER.iter().map(|spec| s(spec)));
    }
    values.push(None);
    values
}

/// Every malformed rollover policy is refused cleanly: 22023 naming "rollover", by
/// create_plan and set_limits (rolled back, whatever happens).
fn check_rollover_validation(client: &mut Client) -> Result<(), String> {
    for spec in BAD_ROLLOVER {
        for sql in ["SELECT quota.create_plan('fz_rollover', $1::text::jsonb)", "SELECT quota.set_limits('fz', $1::text::jsonb)"] {
            client.batch_execute("BEGIN").map_err(|e| e.to_string())?;
            let result = client.execute(sql, &[&spec]);
            client.batch_execute("ROLLBACK").map_err(|e| e.to_string())?;
            match result {
                Err(e) if sqlstate(&e).as_deref() == Some("22023") && e.as_db_error().is_some_and(|d| d.message().contains("\"rollover\"")) => {}
                other => return Err(format!("{sql} with {spec}: expected 22023 naming \"rollover\", got {other:?}")),
            }
        }
    }
    Ok(())
}

/// Claims of a signed-in user, each with the quota_role it really carries: plain, forged
/// in user_metadata or at the top level, misspelt, deep, malformed, and real.
fn claims_pool() -> Vec<(String, Option<&'static str>)> {
    let user = |extra: &str| format!(r#"{{"sub": "{SUBJECT}", "role": "authenticated"{extra}}}"#);
    vec![
        (user(""), None),
        (user(r#", "user_metadata": {"quota_role": "admin", "app_metadata": {"quota_role": "admin"}}"#), None),
        (user(r#", "quota_role": "admin""#), None),
        (user(r#", "app_metadata": {"quota_role": "Admin"}"#), None),
        (user(r#", "app_metadata": {"quota_role": ["admin"]}"#), None),
        (user(&format!(r#", "user_metadata": {}1{}"#, r#"{"quota_role": "#.repeat(300), "}".repeat(300))), None),
        ("not json".to_string(), None),
        (String::new(), None),
        (user(r#", "app_metadata": {"quota_role": "support"}"#), Some("support")),
        (user(r#", "app_metadata": {"quota_role": "admin"}"#), Some("admin")),
    ]
}

struct Function {
    name: String,
    signature: String,
    arg_types: Vec<String>,
    returns_set: bool,
    returns_void: bool,
}

fn functions(client: &mut Client) -> Result<Vec<Function>, postgres::Error> {
    let rows = client.query(
        "SELECT p.proname::text, p.oid::regprocedure::text, p.proretset, p.prorettype = 'void'::regtype,
                coalesce(array(SELECT pg_catalog.format_type(t, NULL) FROM unnest(p.proargtypes) AS t), '{}')
           FROM pg_catalog.pg_proc AS p
          WHERE p.pronamespace = 'quota'::regnamespace AND p.prorettype <> 'trigger'::regtype
          ORDER BY 1",
        &[],
    )?;
    Ok(rows
        .iter()
        .map(|r| Function { name: r.get(0), signature: r.get(1), returns_set: r.get(2), returns_void: r.get(3), arg_types: r.get(4) })
        .collect())
}

fn setup(dbname: &str) -> Result<(String, String), postgres::Error> {
    let mut client = fresh_database(dbname)?;
    client.batch_execute(&format!(
        "SELECT quota.create_plan('fz', '{{\"calls\": {{\"limit\": 100, \"per\": \"day\", \"rollover\": {{\"max\": 50, \"expires_after\": 3}}}},
                                          \"tokens\": {{\"limit\": 1000, \"per\": \"month\", \"anchor\": \"subscription\"}},
                                          \"wallet\": {{\"limit\": 0, \"per\": \"lifetime\"}}}}', true);
         SELECT quota.create_plan('other_plan', '{{\"calls\": {{\"limit\": null}}}}');
         SELECT quota.assign_plan('{SUBJECT}', 'fz');
         CREATE TABLE public.notes (id serial PRIMARY KEY, user_id uuid, n bigint);
         DO $$ BEGIN
             IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') THEN CREATE ROLE authenticated NOLOGIN; END IF;
         END $$;
         SELECT count(*) FROM quota.setup_supabase();"
    ))?;
    let grant: uuid::Uuid = client.query_one(&format!("SELECT quota.grant('{SUBJECT}', 'wallet', 1000)"), &[])?.get(0);
    let reservation: uuid::Uuid =
        client.query_one(&format!("SELECT reservation_id FROM quota.reserve('{SUBJECT}', 'calls', 2, interval '1 day')"), &[])?.get(0);
    // On the plan for days, with usage yesterday: the fuzzed calls meet carries of unused
    // allowance not made grants yet (the reserve above was before: the first committed write
    // of today makes them).
    client.batch_execute(&format!(
        "UPDATE quota.assignments SET assigned_at = now() - interval '10 days' WHERE subject = '{SUBJECT}';
         SELECT quota.record('{SUBJECT}', 'calls', 70, occurred_at => now() - interval '1 day');"
    ))?;
    Ok((reservation.to_string(), grant.to_string()))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seed = seed_from(arg(&args, "--seed"));
    let calls: u64 = arg(&args, "--calls").and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let dbname = arg(&args, "--db").unwrap_or_else(|| "pgq_fuzz".into());
    println!("fuzz: seed={seed} calls={calls}");
    let failed = |why: String| -> ! {
        eprintln!("fuzz: {why}");
        eprintln!("fuzz: FAILED seed={seed} (reproduce: fuzz --seed {seed} --calls {calls} --db {dbname})");
        std::process::exit(1);
    };
    let (reservation, grant) = setup(&dbname).unwrap_or_else(|e| failed(format!("setup: {e}")));
    let mut client = connect(&dbname).unwrap_or_else(|e| failed(format!("connect: {e}")));
    check_rollover_validation(&mut client).unwrap_or_else(|why| failed(format!("rollover validation: {why}")));
    let functions = functions(&mut client).unwrap_or_else(|e| failed(format!("catalog: {e}")));
    for name in DOCUMENTED {
        if !functions.iter().any(|f| f.name == name) {
            failed(format!("documented function quota.{name} is missing"));
        }
    }
    let claims = claims_pool();
    let mut rng = Rng::new(seed);
    let mut per_function: BTreeMap<String, u64> = BTreeMap::new();
    let mut states: BTreeMap<String, u64> = BTreeMap::new();
    let mut examples: BTreeMap<String, String> = BTreeMap::new();
    for call in 0..calls {
        let function = rng.pick(&functions);
        let values: Vec<Option<String>> = function.arg_types.iter().map(|ty| rng.pick(&pool(ty, &reservation, &grant)).clone()).collect();
        let casts: Vec<String> = function.arg_types.iter().enumerate().map(|(i, ty)| format!("${}::text::{ty}", i + 1)).collect();
        let invocation = format!("quota.{}({})", function.name, casts.join(", "));
        // A composite or a set is checked field by field; a scalar for NULL.
        let sql = if function.returns_set {
            format!("SELECT count(*) IS NULL FROM {invocation} AS r")
        } else if function.returns_void {
            format!("SELECT false FROM (SELECT {invocation}) AS r")
        } else {
            // For a composite, IS NULL means every field is NULL.
            format!("SELECT r IS NULL FROM {invocation} AS r")
        };
        let params: Vec<&(dyn postgres::types::ToSql + Sync)> = values.iter().map(|v| v as &(dyn postgres::types::ToSql + Sync)).collect();
        let commit = rng.chance(10);
        if let Err(e) = client.batch_execute("BEGIN") {
            failed(format!("call {call}: BEGIN failed: {e}"));
        }
        // Some calls as a signed-in user, the way PostgREST makes them.
        let signed_in = rng.chance(30).then(|| rng.pick(&claims).clone());
        // An earlier committed call may have named the user an admin of the pool: read before
        // the call, which may take that away (set_pool_admin(pool, user, false) of itself), and
        // as the superuser, before acting as the user (whose privileges the fuzzed calls change).
        let named_admin = signed_in.as_ref().is_some_and(|(text, _)| text.contains(SUBJECT))
            && (POOL_ADMIN.contains(&function.name.as_str()) || function.name == "leave_pool")
            && client
                .query_one(
                    "SELECT EXISTS (SELECT FROM quota.pool_admins WHERE pool::text = $1 AND admin = $2::text::uuid)",
                    &[&values[0], &SUBJECT],
                )
                .map(|row| row.get::<_, bool>(0))
                .unwrap_or(false);
        // A signed-in user acts as the admin of its own subject only once that is a pool.
        let own_pool_has_members = signed_in.as_ref().is_some_and(|(text, _)| text.contains(SUBJECT))
            && POOL_ADMIN.contains(&function.name.as_str())
            && client
                .query_one("SELECT EXISTS (SELECT FROM quota.pool_members WHERE pool::text = $1)", &[&values[0]])
                .map(|row| row.get::<_, bool>(0))
                .unwrap_or(false);
        if let Some((text, _)) = &signed_in {
            let begun = client.batch_execute("SET LOCAL ROLE authenticated")
                .and_then(|()| client.execute("SELECT set_config('request.jwt.claims', $1, true)", &[text]).map(drop));
            if let Err(e) = begun {
                failed(format!("call {call}: could not act as a signed-in user: {e}"));
            }
        }
        *per_function.entry(function.name.clone()).or_default() += 1;
        let describe = || format!("{} with {:?}", function.signature, values.iter().map(|v| v.as_deref().map(|s| s.chars().take(80).collect::<String>())).collect::<Vec<_>>());
        match client.query_one(&sql, &params) {
            Ok(row) => {
                *states.entry("ok".into()).or_default() += 1;
                if let Some((text, role)) = &signed_in {
                    let admin = *role == Some("admin");
                    let signed = text.contains(SUBJECT);
                    let own = |arg: usize| signed && values.get(arg).and_then(|v| v.as_deref()) == Some(SUBJECT);
                    let allowed = match function.name.as_str() {
                        name if IN_APP_ADMIN.contains(&name) => admin,
                        IN_APP_SUPPORT => role.is_some(),
                        name if ANALYTICS_OF_ALL.contains(&name) => role.is_some(),
                        "usage_history" | "forecast" => role.is_some() || own(0),
                        name if POOL_ADMIN.contains(&name) => admin || (own(0) && own_pool_has_members) || named_admin,
                        "leave_pool" => admin || own(0) || own(1) || named_admin,
                        _ => true,
                    };
                    if !allowed {
                        failed(format!("call {call}: a signed-in user with claims {text:.120} got through {}", describe()));
                    }
                }
                let null: Option<bool> = row.get(0);
                if null != Some(false) && NEVER_NULL.contains(&function.name.as_str()) {
                    failed(format!("call {call}: silent NULL from {}", describe()));
                }
            }
            Err(e) => {
                let state = sqlstate(&e);
                let message = e.as_db_error().map(|d| d.message().to_string()).unwrap_or_default();
                match state.as_deref() {
                    None => failed(format!("call {call}: connection lost (server crash?) on {}: {e}", describe())),
                    Some(s) if s.starts_with("XX") || s.starts_with("58") || message.contains("panicked") => {
                        failed(format!("call {call}: internal error {s} \"{message}\" on {}", describe()))
                    }
                    Some(s) => {
                        *states.entry(s.to_string()).or_default() += 1;
                        examples.entry(s.to_string()).or_insert_with(|| format!("{}: {message}", function.name));
                    }
                }
            }
        }
        let end = if commit { "COMMIT" } else { "ROLLBACK" };
        if let Err(e) = client.batch_execute(end) {
            failed(format!("call {call}: {end} failed: {e}"));
        }
    }
    let functions_line: Vec<String> = per_function.iter().map(|(f, n)| format!("{f} {n}")).collect();
    let states_line: Vec<String> = states.iter().map(|(s, n)| format!("{s} {n}")).collect();
    println!("fuzz: ok, seed={seed}, {calls} calls over {} functions: no crash, no internal error, no silent NULL", per_function.len());
    println!("fuzz: calls per function: {}", functions_line.join(", "));
    println!("fuzz: outcomes: {}", states_line.join(", "));
    if std::env::var("FUZZ_EXAMPLES").is_ok() {
        for (state, example) in &examples {
            println!("fuzz: first {state}: {}", example.chars().take(200).collect::<String>());
        }
    }
}
