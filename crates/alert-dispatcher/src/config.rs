//! Configuration, from the environment only (no file, no flags): the dispatcher runs under a
//! service manager or in a container, where the environment is the one place to set things.

use std::fmt;
use std::time::Duration;

use hmac::{Hmac, KeyInit};
use reqwest::Url;
use sha2::Sha256;

pub type SigningKey = Hmac<Sha256>;

pub struct Config {
    pub database: tokio_postgres::Config,
    pub webhook_urls: Vec<Url>,
    /// HMAC-SHA256 keyed with PG_QUOTA_WEBHOOK_SECRET once; each signature clones it.
    pub signing_key: SigningKey,
    pub consumer: String,
    /// PG_QUOTA_BATCH, lowered so that a whole claim is delivered within its visibility timeout.
    pub alerts_per_claim: i32,
    pub visibility: Duration,
    pub http_timeout: Duration,
    pub max_attempts: i32,
    pub poll: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

/// A missing or invalid variable: printed as one line that names it.
#[derive(Debug)]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.variable, self.problem)
    }
}

fn invalid(variable: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError { variable, problem: problem.into() }
}

/// Room left in every claim for the database calls around the requests (claim, ack, retry).
const DATABASE_MARGIN_SECONDS: u64 = 1;

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// `lookup` answers a variable's value; tests pass a map instead of the environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let required = |variable: &'static str| match lookup(variable) {
            Some(value) if !value.trim().is_empty() => Ok(value),
            _ => Err(invalid(variable, "is required")),
        };
        // Numbers are whole and at least 1; the upper bounds keep every one a valid SQL integer
        // and every product below free of overflow.
        let number = |variable: &'static str, default: u64, max: u64| match lookup(variable) {
            None => Ok(default),
            Some(text) => match text.trim().parse::<u64>() {
                Ok(value) if (1..=max).contains(&value) => Ok(value),
                _ => Err(invalid(variable, format!("expected a whole number from 1 to {max}, found {text:?}"))),
            },
        };
        let sql_integer = i32::MAX as u64;
        const A_DAY: u64 = 86_400;

        let database_url = required("PG_QUOTA_DATABASE_URL")?;
        let mut database: tokio_postgres::Config =
            database_url.parse().map_err(|error| invalid("PG_QUOTA_DATABASE_URL", crate::one_line(&error)))?;
        if database.get_application_name().is_none() {
            // So that the dispatcher's session is recognisable in pg_stat_activity.
            database.application_name("pg-quota-dispatcher");
        }

        let webhook_urls = parse_urls(&required("PG_QUOTA_WEBHOOK_URLS")?)?;
        let secret = required("PG_QUOTA_WEBHOOK_SECRET")?;
        let signing_key = SigningKey::new_from_slice(secret.as_bytes())
            .map_err(|_| invalid("PG_QUOTA_WEBHOOK_SECRET", "cannot key HMAC-SHA256 with it"))?;
        let consumer = match lookup("PG_QUOTA_CONSUMER") {
            Some(name) if !name.trim().is_empty() => name.trim().to_owned(),
            Some(_) => return Err(invalid("PG_QUOTA_CONSUMER", "is empty (unset it for hostname-pid)")),
            None => format!("{}-{}", hostname(), std::process::id()),
        };

        let batch = number("PG_QUOTA_BATCH", 100, 10_000)?;
        let visibility = number("PG_QUOTA_VISIBILITY_SECONDS", 120, A_DAY)?;
        let timeout = number("PG_QUOTA_TIMEOUT_SECONDS", 10, A_DAY)?;
        let max_attempts = number("PG_QUOTA_MAX_ATTEMPTS", 10, sql_integer)?;
        let poll = number("PG_QUOTA_POLL_SECONDS", 5, A_DAY)?;
        let backoff_base_ms = number("PG_QUOTA_BACKOFF_BASE_MS", 1000, A_DAY * 1000)?;
        let backoff_max = number("PG_QUOTA_BACKOFF_MAX_SECONDS", 300, A_DAY)?;

        // The URLs of one alert are posted one after the other, each for at most the timeout:
        // a claim shorter than that could expire mid-delivery and be delivered twice at once.
        let urls = webhook_urls.len() as u64;
        let per_alert = timeout.saturating_mul(urls);
        if visibility <= per_alert {
            return Err(invalid(
                "PG_QUOTA_VISIBILITY_SECONDS",
                format!(
                    "{visibility} s must exceed PG_QUOTA_TIMEOUT_SECONDS ({timeout} s) times the {urls} webhook URL(s) \
                     = {per_alert} s, so that a claimed alert cannot become claimable again while it is being delivered"
                ),
            ));
        }
        // The alerts of one claim are delivered in order, so the claim's last alert waits for
        // all before it: claim no more than fit in the visibility timeout if every request
        // timed out. (visibility > per_alert, so at least one always fits.)
        let fit = visibility.saturating_sub(DATABASE_MARGIN_SECONDS) / per_alert;
        let alerts_per_claim =
            i32::try_from(batch.min(fit).max(1)).map_err(|_| invalid("PG_QUOTA_BATCH", "is out of range"))?;
        let max_attempts =
            i32::try_from(max_attempts).map_err(|_| invalid("PG_QUOTA_MAX_ATTEMPTS", "is out of range"))?;

        Ok(Config {
            database,
            webhook_urls,
            signing_key,
            consumer,
            alerts_per_claim,
            visibility: Duration::from_secs(visibility),
            http_timeout: Duration::from_secs(timeout),
            max_attempts,
            poll: Duration::from_secs(poll),
            backoff_base: Duration::from_millis(backoff_base_ms),
            backoff_max: Duration::from_secs(backoff_max),
        })
    }
}

/// Comma-separated http(s) URLs. A bad entry is named by its position, not echoed: webhook
/// URLs often carry a token in their path or query.
fn parse_urls(list: &str) -> Result<Vec<Url>, ConfigError> {
    const VARIABLE: &str = "PG_QUOTA_WEBHOOK_URLS";
    list.split(',')
        .enumerate()
        .map(|(index, entry)| {
            let position = index.saturating_add(1);
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(invalid(VARIABLE, format!("entry {position} is empty")));
            }
            let url = Url::parse(entry)
                .map_err(|error| invalid(VARIABLE, format!("entry {position} is not a URL ({error})")))?;
            match url.scheme() {
                "http" | "https" if url.has_host() => Ok(url),
                _ => Err(invalid(VARIABLE, format!("entry {position} is not an http:// or https:// URL"))),
            }
        })
        .collect()
}

/// The default consumer name's first half. Read from the kernel rather than through libc,
/// which this crate could only call unsafely; any failure falls back to a fixed name, since the
/// name only labels claims.
fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|name| name.trim().to_owned())
        .find(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut vars: HashMap<String, String> = [
            ("PG_QUOTA_DATABASE_URL", "host=/tmp/sock port=5432 user=postgres dbname=app"),
            ("PG_QUOTA_WEBHOOK_URLS", "http://127.0.0.1:9000/hook"),
            ("PG_QUOTA_WEBHOOK_SECRET", "s3cret"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (key, value) in pairs {
            if value.is_empty() {
                vars.remove(*key);
            } else {
                vars.insert(key.to_string(), value.to_string());
            }
        }
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    fn error(pairs: &[(&str, &str)]) -> ConfigError {
        match parse(pairs) {
            Ok(_) => panic!("{pairs:?} was accepted"),
            Err(error) => error,
        }
    }

    #[test]
    fn defaults() {
        let config = parse(&[]).expect("the minimal environment is valid");
        assert_eq!(config.webhook_urls.len(), 1);
        assert_eq!(config.visibility, Duration::from_secs(120));
        assert_eq!(config.http_timeout, Duration::from_secs(10));
        assert_eq!(config.max_attempts, 10);
        assert_eq!(config.poll, Duration::from_secs(5));
        assert_eq!(config.backoff_base, Duration::from_millis(1000));
        assert_eq!(config.backoff_max, Duration::from_secs(300));
        // (120 - 1) / 10: what fits in the visibility timeout if every request timed out.
        assert_eq!(config.alerts_per_claim, 11);
        assert!(config.consumer.ends_with(&format!("-{}", std::process::id())));
        assert_eq!(config.database.get_application_name(), Some("pg-quota-dispatcher"));
    }

    #[test]
    fn unix_socket_and_url_forms() {
        let config = parse(&[]).expect("valid");
        assert!(matches!(config.database.get_hosts(), [tokio_postgres::config::Host::Unix(_)]));
        let config =
            parse(&[("PG_QUOTA_DATABASE_URL", "postgres://app@%2Fvar%2Frun%2Fpostgresql:5433/app")]).expect("valid");
        assert!(matches!(config.database.get_hosts(), [tokio_postgres::config::Host::Unix(_)]));
        assert_eq!(config.database.get_ports(), [5433]);
    }

    #[test]
    fn batch_is_capped_by_visibility() {
        let config = parse(&[("PG_QUOTA_VISIBILITY_SECONDS", "3600"), ("PG_QUOTA_BATCH", "50")]).expect("valid");
        assert_eq!(config.alerts_per_claim, 50);
        let two_urls = "http://a.example/x, https://b.example/y";
        let config =
            parse(&[("PG_QUOTA_WEBHOOK_URLS", two_urls), ("PG_QUOTA_VISIBILITY_SECONDS", "61")]).expect("valid");
        assert_eq!(config.webhook_urls.len(), 2);
        assert_eq!(config.alerts_per_claim, 3); // (61 - 1) / (10 * 2)
    }

    #[test]
    fn missing_required_variables_are_named() {
        for variable in ["PG_QUOTA_DATABASE_URL", "PG_QUOTA_WEBHOOK_URLS", "PG_QUOTA_WEBHOOK_SECRET"] {
            let found = error(&[(variable, "")]);
            assert_eq!(found.variable, variable);
            assert_eq!(found.to_string(), format!("{variable}: is required"));
        }
        assert_eq!(error(&[("PG_QUOTA_WEBHOOK_SECRET", "  ")]).variable, "PG_QUOTA_WEBHOOK_SECRET");
    }

    #[test]
    fn bad_numbers_are_named() {
        for variable in [
            "PG_QUOTA_BATCH",
            "PG_QUOTA_VISIBILITY_SECONDS",
            "PG_QUOTA_TIMEOUT_SECONDS",
            "PG_QUOTA_MAX_ATTEMPTS",
            "PG_QUOTA_POLL_SECONDS",
            "PG_QUOTA_BACKOFF_BASE_MS",
            "PG_QUOTA_BACKOFF_MAX_SECONDS",
        ] {
            for bad in ["0", "-1", "ten", "1.5", "99999999999999999999999"] {
                let found = error(&[(variable, bad)]);
                assert_eq!(found.variable, variable, "{variable}={bad}");
                assert!(found.problem.contains(&format!("{bad:?}")), "{found}");
            }
        }
    }

    #[test]
    fn bad_urls_and_connection_strings() {
        for bad in ["not a url", "ftp://example.com/x", "http://a.example/x,,http://b.example/y", "/relative"] {
            assert_eq!(error(&[("PG_QUOTA_WEBHOOK_URLS", bad)]).variable, "PG_QUOTA_WEBHOOK_URLS", "{bad}");
        }
        let found = error(&[("PG_QUOTA_WEBHOOK_URLS", "http://a.example/ok,mailto:x@y")]);
        assert_eq!(found.problem, "entry 2 is not an http:// or https:// URL");
        assert_eq!(error(&[("PG_QUOTA_DATABASE_URL", "host=/tmp port=notaport")]).variable, "PG_QUOTA_DATABASE_URL");
        assert_eq!(error(&[("PG_QUOTA_CONSUMER", " ")]).variable, "PG_QUOTA_CONSUMER");
    }

    #[test]
    fn visibility_must_outlast_one_delivery() {
        let found = error(&[("PG_QUOTA_VISIBILITY_SECONDS", "10"), ("PG_QUOTA_TIMEOUT_SECONDS", "10")]);
        assert_eq!(found.variable, "PG_QUOTA_VISIBILITY_SECONDS");
        assert!(found.problem.contains("must exceed"), "{found}");
        let two_urls = "http://a.example/x,http://b.example/y";
        let found = error(&[("PG_QUOTA_WEBHOOK_URLS", two_urls), ("PG_QUOTA_VISIBILITY_SECONDS", "20")]);
        assert!(found.problem.contains("= 20 s"), "{found}");
        assert!(parse(&[("PG_QUOTA_WEBHOOK_URLS", two_urls), ("PG_QUOTA_VISIBILITY_SECONDS", "21")]).is_ok());
    }
}
