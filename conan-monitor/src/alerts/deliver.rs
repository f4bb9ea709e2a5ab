//! The deliverer: sends what waits in the outbox, oldest first, and acks what the receiver
//! took.
//!
//! - **At least once.** An entry is deleted only after a 2xx answer; a crash between the
//!   answer and the delete sends it again after the restart (so receivers should dedupe on
//!   `alert_id` + `state`).
//! - **In order per webhook.** While a webhook's oldest entry waits for its next attempt,
//!   its later entries wait too, so a `resolved` never overtakes its `firing`.
//! - **Backoff.** After a failed attempt the entry waits 1 s, doubling per attempt up to
//!   `retry_max` (default 30 s), with up to 25 % jitter; attempts, next time and the last
//!   error are written to the store, so they survive a restart.
//! - **Giving up.** An entry older than `give_up_after` (default 24 h), or one for a webhook
//!   no longer configured, is deleted with an error in the log.

use std::collections::HashSet;
use std::time::Duration;

use conan_core::Timestamp;
use conan_core::store::{Outbox, OutboxEntry};
use tokio::sync::Notify;

use super::http;
use super::rules::AlertSettings;

/// Entries read from the store per pass.
const BATCH: usize = 256;

/// How long a pass waits at most when nothing is due (new entries wake it earlier).
const IDLE: Duration = Duration::from_secs(60);

/// Wait after a store error before trying again.
const STORE_RETRY: Duration = Duration::from_secs(5);

/// The wait before attempt `attempts + 1`, given `attempts` failed ones (≥ 1), without
/// jitter: 1 s, 2 s, 4 s, ... up to `max`.
pub(crate) fn backoff(attempts: u32, max: Duration) -> Duration {
    let exp = attempts.saturating_sub(1).min(20);
    Duration::from_secs(1u64 << exp).min(max)
}

fn with_jitter(d: Duration) -> Duration {
    d + d.mul_f64(fastrand::f64() * 0.25)
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    Timestamp::from_unix_micros(
        t.as_unix_micros()
            .saturating_add(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
    )
}

/// Delivers until cancelled (the monitor's task set drops this future at shutdown; an
/// attempt cut short is retried by the next process, as the entry is still there).
pub(crate) async fn run(settings: &AlertSettings, outbox: &Outbox, wake: &Notify) {
    loop {
        let wait = match pass(settings, outbox).await {
            Ok(wait) => wait,
            Err(e) => {
                tracing::warn!(error = %e, "alerts: cannot read the outbox; trying again");
                STORE_RETRY
            }
        };
        if wait.is_zero() {
            continue;
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// One pass over the outbox; answers how long to wait before the next.
pub(crate) async fn pass(
    settings: &AlertSettings,
    outbox: &Outbox,
) -> conan_core::Result<Duration> {
    let entries = outbox.pending(BATCH).await?;
    let full = entries.len() == BATCH;
    let mut blocked: HashSet<String> = HashSet::new();
    let mut next: Option<Timestamp> = None;
    let mut delivered = 0usize;
    for entry in entries {
        if blocked.contains(&entry.destination) {
            continue;
        }
        let now = Timestamp::now();
        let Some(hook) = settings.webhook(&entry.destination) else {
            tracing::error!(
                webhook = %entry.destination,
                id = entry.id,
                "alerts: dropping a notification for a webhook that is no longer configured"
            );
            outbox.ack(entry.id).await?;
            continue;
        };
        if add(entry.created_at, settings.give_up_after) < now {
            tracing::error!(
                webhook = %hook.name,
                id = entry.id,
                attempts = entry.attempts,
                last_error = entry.last_error.as_deref().unwrap_or(""),
                "alerts: giving up on a notification older than give_up_after"
            );
            outbox.ack(entry.id).await?;
            continue;
        }
        if entry.next_attempt_at > now {
            blocked.insert(entry.destination.clone());
            next = Some(next.map_or(entry.next_attempt_at, |n| n.min(entry.next_attempt_at)));
            continue;
        }
        match attempt(settings, &entry).await {
            Ok(()) => {
                outbox.ack(entry.id).await?;
                delivered += 1;
            }
            Err(error) => {
                let attempts = entry.attempts.saturating_add(1);
                let delay = with_jitter(backoff(attempts, settings.retry_max));
                let at = add(Timestamp::now(), delay);
                tracing::warn!(
                    webhook = %hook.name,
                    host = %hook.redacted_url(),
                    id = entry.id,
                    attempts,
                    retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    %error,
                    "alerts: webhook delivery failed; will retry"
                );
                outbox.retry(entry.id, at, &error).await?;
                blocked.insert(entry.destination.clone());
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
    }
    if full && delivered > 0 {
        return Ok(Duration::ZERO);
    }
    Ok(next.map_or(IDLE, |n| {
        n.as_system_time()
            .duration_since(Timestamp::now().as_system_time())
            .unwrap_or_default()
            .min(IDLE)
            // Never spin on a time that is due "now" by a rounding error.
            .max(Duration::from_millis(10))
    }))
}

async fn attempt(settings: &AlertSettings, entry: &OutboxEntry) -> Result<(), String> {
    let hook = settings
        .webhook(&entry.destination)
        .ok_or_else(|| "webhook not configured".to_owned())?;
    let result = http::post(hook, entry.payload.clone()).await;
    if result.is_ok() {
        tracing::debug!(webhook = %hook.name, id = entry.id, "alerts: notification delivered");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let max = Duration::from_secs(30);
        let got: Vec<u64> = (1..=7).map(|a| backoff(a, max).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(backoff(u32::MAX, max), max);
        let d = with_jitter(Duration::from_secs(4));
        assert!(
            d >= Duration::from_secs(4) && d <= Duration::from_secs(5),
            "{d:?}"
        );
    }
}
