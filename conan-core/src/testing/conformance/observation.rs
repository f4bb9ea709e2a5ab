//! Checks of what a provider reports: progress events on the sink of the call, logs,
//! metrics and health.

use futures::StreamExt;
use tokio::sync::{broadcast, mpsc};

use crate::capability::Capability;
use crate::event::{Event, EventBus, EventEnvelope, EventSink, StatusReport};
use crate::log::LogQuery;
use crate::provider::{HealthStatus, KnownDeployment, OperationContext, ProviderExt};
use crate::testing::wait_until;

use super::{ConformanceHarness, Scope, ctx};

/// What a sink saw.
struct Seen {
    events: Vec<Event>,
    reports: Vec<StatusReport>,
}

fn drain(
    rx: &mut broadcast::Receiver<EventEnvelope>,
    reports: &mut mpsc::UnboundedReceiver<StatusReport>,
) -> Seen {
    let mut events = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(envelope) => events.push(envelope.event),
            Err(broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => break,
        }
    }
    let mut seen_reports = Vec::new();
    while let Ok(report) = reports.try_recv() {
        seen_reports.push(report);
    }
    Seen {
        events,
        reports: seen_reports,
    }
}

/// A deploy reports what it does through the sink of **its** context: at least one
/// `Progress` event for its deployment, and nothing about any other deployment (two
/// deploys run at once, each with its own sink). Only provider observations are emitted
/// (progress, healthy, unhealthy, restarted), and a deploy that succeeded reports no
/// failure or exit.
pub async fn deploy_emits_progress(h: &ConformanceHarness) {
    let s = Scope::new(h, "deploy_emits_progress");
    s.run(async {
        let p = s.provider();
        let (a, b) = (s.spec(), s.spec());
        let sink = |capacity| {
            let (tx, rx) = mpsc::unbounded_channel();
            let sink = EventSink::new(EventBus::new(capacity), Some(tx));
            let events = sink.subscribe();
            (sink, events, rx)
        };
        let (sink_a, mut events_a, mut reports_a) = sink(16_384);
        let (sink_b, mut events_b, mut reports_b) = sink(16_384);
        let (ctx_a, ctx_b) = (OperationContext::new(sink_a), OperationContext::new(sink_b));
        let (ra, rb) = s
            .within(
                "two concurrent deploys",
                futures::future::join(p.deploy(&ctx_a, &a, None), p.deploy(&ctx_b, &b, None)),
            )
            .await;
        for (spec, result) in [(&a, ra), (&b, rb)] {
            let runtime = result.unwrap_or_else(|e| {
                panic!("{}: deploy of a valid config must succeed, got: {e}", s.check)
            });
            s.track(&KnownDeployment::new(spec.clone(), runtime));
        }
        for (spec, events, reports) in [
            (&a, &mut events_a, &mut reports_a),
            (&b, &mut events_b, &mut reports_b),
        ] {
            let seen = drain(events, reports);
            assert!(
                seen.events.iter().any(|e| matches!(e, Event::Progress { deployment, .. } if *deployment == spec.id)),
                "{}: a deploy must report at least one Progress event for its deployment on its context's sink, saw {:?}",
                s.check,
                seen.events
            );
            for event in &seen.events {
                check_eq!(
                    event.deployment(),
                    &spec.id,
                    "{}: a deploy's sink must only carry events about that deployment, got {event:?}",
                    s.check
                );
                assert!(
                    matches!(
                        event,
                        Event::Progress { .. }
                            | Event::Healthy { .. }
                            | Event::Unhealthy { .. }
                            | Event::Restarted { .. }
                    ),
                    "{}: a provider only emits observations (progress, healthy, unhealthy, restarted), got {event:?}",
                    s.check
                );
            }
            for report in &seen.reports {
                check_eq!(
                    report.deployment, spec.id,
                    "{}: a deploy's sink must only carry reports about that deployment, got {report:?}",
                    s.check
                );
                assert!(
                    report.status.is_running(),
                    "{}: a deploy that succeeded must not report its deployment failed or exited, got {report:?}",
                    s.check
                );
            }
        }
    })
    .await;
}

/// Logs answer queries: the app's startup line shows (with `expects_logs`), `tail(1)`
/// returns one line, a substring filter excludes lines, and with `LogFollow` a follow
/// stream starts with the history. Without `expects_logs`, a query still answers.
pub async fn logs_answer_queries(h: &ConformanceHarness) {
    let s = Scope::new(h, "logs_answer_queries");
    s.run(async {
        let spec = s.spec();
        let known = s.deploy(&spec, None).await;
        let p = s.provider();
        if !h.expects_logs {
            s.within("logs", p.logs_vec(&known, &LogQuery::tail(5)))
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "{}: logs of a running deployment must answer, got: {e}",
                        s.check
                    )
                });
            return;
        }
        let appeared = wait_until(h.timeout, || async {
            p.logs_vec(&known, &LogQuery::all())
                .await
                .is_ok_and(|l| !l.is_empty())
        })
        .await;
        assert!(
            appeared,
            "{}: the app's startup line must show in the logs within {:?}",
            s.check, h.timeout
        );
        let one = s
            .within("logs", p.logs_vec(&known, &LogQuery::tail(1)))
            .await
            .unwrap_or_else(|e| panic!("{}: logs must answer, got: {e}", s.check));
        check_eq!(
            one.len(),
            1,
            "{}: tail(1) must return one line, got {one:?}",
            s.check
        );
        let none = s
            .within(
                "logs",
                p.logs_vec(
                    &known,
                    &LogQuery::all().contains("\u{1f}never-written\u{1f}"),
                ),
            )
            .await
            .unwrap_or_else(|e| panic!("{}: logs must answer, got: {e}", s.check));
        assert!(
            none.is_empty(),
            "{}: a substring filter must exclude lines that do not contain it, got {none:?}",
            s.check
        );
        if p.supports(Capability::LogFollow) {
            let mut follow = s
                .within("logs (follow)", p.logs(&known, &LogQuery::tail(1).follow()))
                .await
                .unwrap_or_else(|e| panic!("{}: a follow query must answer, got: {e}", s.check));
            let first = tokio::time::timeout(h.timeout, follow.next()).await;
            assert!(
                matches!(first, Ok(Some(Ok(_)))),
                "{}: a follow stream must start with the history (tail 1), got {first:?}",
                s.check
            );
        }
    })
    .await;
}

/// Metrics answer for a running deployment (with `Metrics`, memory is measured). Health
/// is the latest observation, not a probe run now: with a health check and
/// `HealthChecks`, it becomes `Healthy` after the gate passed; once the deployment is
/// stopped, nothing runs and it answers `Unknown`.
pub async fn metrics_and_health(h: &ConformanceHarness) {
    let s = Scope::new(h, "metrics_and_health");
    s.run(async {
        let spec = s.spec();
        let known = s.deploy(&spec, None).await;
        let p = s.provider();
        let m = s
            .within("metrics", p.metrics(&known))
            .await
            .unwrap_or_else(|e| panic!("{}: metrics of a running deployment must answer, got: {e}", s.check));
        if p.supports(Capability::Metrics) {
            assert!(
                m.memory_bytes.is_some(),
                "{}: a provider with the Metrics capability reports memory, got {m:?}",
                s.check
            );
        }
        let health = s
            .within("health", p.health(&known))
            .await
            .unwrap_or_else(|e| panic!("{}: health of a running deployment must answer, got: {e}", s.check));
        if spec.config.health_check.is_some() && p.supports(Capability::HealthChecks) {
            let healthy = wait_until(h.timeout, || async {
                p.health(&known)
                    .await
                    .is_ok_and(|r| r.status == HealthStatus::Healthy)
            })
            .await;
            assert!(
                healthy,
                "{}: a deployment that passed its health gate must report Healthy (first answer: {health:?})",
                s.check
            );
        }
        s.within("stop", p.stop(&ctx(), &known))
            .await
            .unwrap_or_else(|e| panic!("{}: stop must succeed, got: {e}", s.check));
        let stopped = KnownDeployment::new(spec.clone(), known.runtime.stopped());
        s.track(&stopped);
        let after = s.within("health", p.health(&stopped)).await;
        assert!(
            matches!(&after, Ok(r) if r.status == HealthStatus::Unknown),
            "{}: health of a stopped deployment must answer Unknown (nothing runs; health is the latest observation, not a stale Healthy), got {after:?}",
            s.check
        );
    })
    .await;
}
