//! The database side: one connection that listens for new alerts and calls pg_quota's consumer
//! functions (quota.claim_alerts, ack_alerts, retry_alert, emit_due_recoveries).

use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, Client, Error, NoTls, Statement};

/// What pg_quota NOTIFYs when it commits new alerts.
const CHANNEL: &str = "pg_quota_alerts";

pub struct Alert {
    pub id: i64,
    pub attempt: i32,
    /// The payload as the server serialized it: signed and sent byte for byte.
    pub payload: String,
}

pub struct Outbox {
    client: Client,
    /// Holds one permit once something was notified since the last wait (or the connection
    /// ended), however many notifications came.
    wake: Arc<Notify>,
    claim: Statement,
    ack: Statement,
    retry: Statement,
    recoveries: Statement,
}

impl Outbox {
    pub async fn connect(config: &tokio_postgres::Config) -> Result<Outbox, Error> {
        let (client, mut connection) = config.connect(NoTls).await?;
        let wake = Arc::new(Notify::new());
        let waker = Arc::clone(&wake);
        // Notifications arrive only through poll_message, so the connection is driven here
        // instead of being awaited as a plain future.
        tokio::spawn(async move {
            while let Some(message) = poll_fn(|cx| connection.poll_message(cx)).await {
                match message {
                    Ok(AsyncMessage::Notification(_)) => waker.notify_one(),
                    Ok(AsyncMessage::Notice(notice)) => {
                        eprintln!("database {}: {}", notice.severity(), notice.message());
                    }
                    Ok(_) => {}
                    Err(error) => {
                        eprintln!("database connection: {}", crate::one_line(&error));
                        break;
                    }
                }
            }
            // The dispatcher may be waiting for a notification: let it find out now that the
            // connection is gone, not at its next poll.
            waker.notify_one();
        });
        // Listen before the first claim: alerts committed earlier are claimed by it, later
        // ones are notified.
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        // Prepared once per connection; this also fails at once, with PostgreSQL's message,
        // when pg_quota (or EXECUTE on its consumer functions) is missing.
        let claim = client
            .prepare("SELECT alert_id, attempt, payload::text FROM quota.claim_alerts($1, $2, make_interval(secs => $3), $4)")
            .await?;
        let ack = client.prepare("SELECT quota.ack_alerts($1)").await?;
        let retry =
            client.prepare("SELECT quota.retry_alert($1, $2, $3, clock_timestamp() + make_interval(secs => $4))").await?;
        let recoveries = client.prepare("SELECT quota.emit_due_recoveries()").await?;
        Ok(Outbox { client, wake, claim, ack, retry, recoveries })
    }

    pub async fn claim(
        &self,
        consumer: &str,
        max_alerts: i32,
        visibility: Duration,
        max_attempts: i32,
    ) -> Result<Vec<Alert>, Error> {
        let rows =
            self.client.query(&self.claim, &[&consumer, &max_alerts, &visibility.as_secs_f64(), &max_attempts]).await?;
        rows.iter()
            .map(|row| Ok(Alert { id: row.try_get(0)?, attempt: row.try_get(1)?, payload: row.try_get(2)? }))
            .collect()
    }

    pub async fn ack(&self, alert_id: i64) -> Result<(), Error> {
        let ids: &[i64] = &[alert_id];
        self.client.execute(&self.ack, &[&ids]).await.map(drop)
    }

    /// Gives the claim up: claimable again after `delay`, as measured by the database's clock
    /// (the one claim_alerts compares with).
    pub async fn retry(&self, alert: &Alert, error: &str, delay: Duration) -> Result<(), Error> {
        self.client.execute(&self.retry, &[&alert.id, &alert.attempt, &error, &delay.as_secs_f64()]).await.map(drop)
    }

    /// How many "recovered" alerts of ended windows were written just now.
    pub async fn emit_due_recoveries(&self) -> Result<i32, Error> {
        self.client.query_one(&self.recoveries, &[]).await?.try_get(0)
    }

    /// Returns once alerts were notified since the last call, or the connection ended.
    pub async fn notified(&self) {
        self.wake.notified().await;
    }
}
