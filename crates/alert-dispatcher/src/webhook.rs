//! Posting one alert to every webhook URL.

use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::{header, redirect, Client, Url};

use crate::config::{Config, SigningKey};
use crate::signature;

pub const ALERT_ID_HEADER: &str = "Pg-Quota-Alert-Id";

pub struct Webhooks {
    client: Client,
    urls: Vec<Url>,
    key: SigningKey,
}

impl Webhooks {
    pub fn new(config: &Config) -> reqwest::Result<Webhooks> {
        let client = Client::builder()
            // One bound on the whole request (connect, send, response), which is what the
            // visibility timeout is checked against.
            .timeout(config.http_timeout)
            // Following a redirect would turn the POST into a body-less GET: a receiver that
            // moved is reconfigured, and until then its 3xx is a failure like any other.
            .redirect(redirect::Policy::none())
            .user_agent(concat!("pg-quota-dispatcher/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Webhooks { client, urls: config.webhook_urls.clone(), key: config.signing_key.clone() })
    }

    /// Ok when every URL answered 2xx; otherwise what went wrong at each URL that failed.
    /// URLs that had succeeded get the alert again on its retry: receivers deduplicate by the
    /// alert id header, as they must anyway under at-least-once delivery.
    pub async fn deliver(&self, alert_id: i64, body: &str) -> Result<(), String> {
        let mut failures = Vec::new();
        for url in &self.urls {
            if let Err(problem) = self.post(url, alert_id, body).await {
                // The origin only: the paths and queries of webhook URLs often hold tokens,
                // and this text is stored in quota.alerts and logged.
                failures.push(format!("{}: {problem}", url.origin().ascii_serialization()));
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }

    async fn post(&self, url: &Url, alert_id: i64, body: &str) -> Result<(), String> {
        // A clock before 1970 signs t=0, which receivers reject as too old: a visible failure.
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs());
        let response = self
            .client
            .post(url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(ALERT_ID_HEADER, alert_id.to_string())
            .header(signature::HEADER, signature::header_value(&self.key, now, body))
            .body(body.to_owned())
            .send()
            .await
            .map_err(|error| describe(&error))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {}", status.as_u16()))
        }
    }
}

/// Short text for a failed request: "timeout", or the kind of error and its innermost cause
/// (reqwest's own message, "error sending request", does not say what went wrong).
fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timeout".to_owned();
    }
    let kind = if error.is_connect() { "connect error" } else { "request error" };
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    format!("{kind}: {cause}")
}
