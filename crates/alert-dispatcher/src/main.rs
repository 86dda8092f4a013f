//! pg-quota-dispatcher: delivers pg_quota's usage alerts to webhooks, at least once.
//!
//! pg_quota writes each alert into the quota.alerts outbox in the transaction whose usage
//! crossed a threshold, and NOTIFYs pg_quota_alerts on commit. This program claims alerts in
//! batches, POSTs each one, signed, to every configured URL, then acknowledges it (every URL
//! answered 2xx) or gives its claim up until a backed-off retry time. A claim that is neither
//! (the program died) expires after the visibility timeout and the alert is delivered again.
//! Configuration: src/config.rs. Exit codes: 0 after SIGTERM/SIGINT, 2 for a bad
//! configuration, 1 when the program cannot start.

mod backoff;
mod config;
mod outbox;
mod signature;
mod webhook;

use std::process::ExitCode;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use config::Config;
use outbox::{Alert, Outbox};
use webhook::Webhooks;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("pg-quota-dispatcher: {error}");
            return ExitCode::from(2);
        }
    };
    let webhooks = match Webhooks::new(&config) {
        Ok(webhooks) => webhooks,
        Err(error) => {
            eprintln!("pg-quota-dispatcher: cannot set up the HTTP client: {error}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = match shutdown_on_signal() {
        Ok(shutdown) => shutdown,
        Err(error) => {
            eprintln!("pg-quota-dispatcher: cannot handle SIGTERM/SIGINT: {error}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "pg-quota-dispatcher {}: consumer {}, {} webhook URL(s), up to {} alert(s) per claim",
        env!("CARGO_PKG_VERSION"),
        config.consumer,
        config.webhook_urls.len(),
        config.alerts_per_claim
    );
    run(&config, &webhooks, shutdown).await;
    eprintln!("pg-quota-dispatcher: stopped");
    ExitCode::SUCCESS
}

/// Turns true at the first SIGTERM or SIGINT.
fn shutdown_on_signal() -> std::io::Result<watch::Receiver<bool>> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        eprintln!("pg-quota-dispatcher: stopping after the alert in flight");
        // Fails only when nobody listens any more, and then nobody needs to be told.
        let _ = stop.send(true);
    });
    Ok(shutdown)
}

/// Connects, dispatches, and on any database error reconnects after a backed-off delay,
/// until shutdown. Errors that persist (pg_quota missing, no permission) are retried the same
/// way: they are logged at every attempt, and the dispatcher recovers once they are fixed.
async fn run(config: &Config, webhooks: &Webhooks, mut shutdown: watch::Receiver<bool>) {
    // Database failures in a row since the last successful claim.
    let mut failures: u32 = 0;
    while !*shutdown.borrow() {
        let connected = tokio::select! {
            connected = Outbox::connect(&config.database) => connected,
            _ = shutdown.changed() => return,
        };
        let outcome = match connected {
            Ok(outbox) => dispatch(config, webhooks, &outbox, &mut shutdown, &mut failures).await,
            Err(error) => Err(error),
        };
        let Err(error) = outcome else { return };
        failures = failures.saturating_add(1);
        let delay = backoff::delay(failures, config.backoff_base, config.backoff_max);
        eprintln!("database: {}; reconnecting in {} ms", one_line(&error), delay.as_millis());
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Claims and delivers until shutdown (Ok) or a database error (Err).
async fn dispatch(
    config: &Config,
    webhooks: &Webhooks,
    outbox: &Outbox,
    shutdown: &mut watch::Receiver<bool>,
    failures: &mut u32,
) -> Result<(), tokio_postgres::Error> {
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let alerts =
            outbox.claim(&config.consumer, config.alerts_per_claim, config.visibility, config.max_attempts).await?;
        *failures = 0;
        if alerts.is_empty() {
            if outbox.emit_due_recoveries().await? > 0 {
                continue;
            }
            tokio::select! {
                _ = outbox.notified() => {}
                _ = tokio::time::sleep(config.poll) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        for alert in &alerts {
            // Stop between alerts: the rest of the claim becomes claimable again when its
            // visibility timeout ends.
            if *shutdown.borrow() {
                return Ok(());
            }
            deliver(config, webhooks, outbox, alert).await?;
        }
    }
}

/// Delivers one alert, records the outcome in the outbox, and logs one line about it.
async fn deliver(
    config: &Config,
    webhooks: &Webhooks,
    outbox: &Outbox,
    alert: &Alert,
) -> Result<(), tokio_postgres::Error> {
    let (recorded, outcome) = match webhooks.deliver(alert.id, &alert.payload).await {
        Ok(()) => (outbox.ack(alert.id).await, "delivered".to_owned()),
        Err(problem) => {
            let attempt = u32::try_from(alert.attempt).unwrap_or(0);
            let delay = backoff::delay(attempt, config.backoff_base, config.backoff_max);
            let next = if alert.attempt >= config.max_attempts {
                "no attempts left: dead-lettered at its next claim".to_owned()
            } else {
                format!("retry in {} ms", delay.as_millis())
            };
            (outbox.retry(alert, &problem, delay).await, format!("failed ({problem}); {next}"))
        }
    };
    let unrecorded = if recorded.is_err() { ", not recorded: claimable again when its claim expires" } else { "" };
    eprintln!("alert {} attempt {}: {outcome}{unrecorded}", alert.id, alert.attempt);
    recorded
}

/// An error and its causes on one line. tokio-postgres's own text is only the kind ("db
/// error"): PostgreSQL's message, DETAIL and HINT lines are in its source.
fn one_line(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(source) = cause {
        text.push_str(": ");
        text.push_str(&source.to_string());
        cause = source.source();
    }
    text.replace('\n', " ")
}
