//! Checks of deploys that do not finish: a deploy that fails, and deploys cancelled
//! before or during their run, leave nothing behind.

use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::event::EventSink;
use crate::provider::{KnownDeployment, OperationContext};

use super::{CANCEL_AFTER, CANCEL_WITHIN, ConformanceHarness, Scope, ctx};

/// A deploy that never becomes ready fails with a permanent error (not `Cancelled`) and
/// leaves nothing behind. Needs a failing config.
pub async fn failed_deploy_leaves_nothing(h: &ConformanceHarness) {
    let s = Scope::new(h, "failed_deploy_leaves_nothing");
    let Some(spec) = s.failing_spec() else {
        return;
    };
    s.run(async {
        let p = s.provider();
        let err = s
            .within("deploy", p.deploy(&ctx(), &spec, None))
            .await
            .expect_err("failed_deploy_leaves_nothing: a deploy of the failing config must fail");
        assert!(
            !err.is_transient() && !matches!(err, Error::Cancelled { .. }),
            "{}: an app that never becomes ready fails the deploy permanently, got: {err}",
            s.check
        );
        let known = KnownDeployment::from_spec(spec.clone());
        s.assert_nothing_runs(&known, "a failed deploy").await;
        s.assert_nothing_left(&spec.id, "a failed deploy").await;
    })
    .await;
}

/// A deploy whose context is already cancelled answers `Cancelled` and leaves nothing.
pub async fn deploy_honours_cancelled_token(h: &ConformanceHarness) {
    let s = Scope::new(h, "deploy_honours_cancelled_token");
    s.run(async {
        let spec = s.spec();
        let cancel = CancellationToken::new();
        cancel.cancel();
        let ctx = OperationContext::with_cancel(EventSink::detached(), cancel);
        let p = s.provider();
        let result = s.within("deploy", p.deploy(&ctx, &spec, None)).await;
        assert!(
            matches!(result, Err(Error::Cancelled { .. })),
            "{}: a deploy whose token is cancelled must answer Cancelled (check ctx.cancel between steps), got {result:?}",
            s.check
        );
        let known = KnownDeployment::from_spec(spec.clone());
        s.assert_nothing_runs(&known, "a cancelled deploy").await;
        s.assert_nothing_left(&spec.id, "a cancelled deploy").await;
    })
    .await;
}

/// A slow deploy cancelled after [`CANCEL_AFTER`] answers `Cancelled` within
/// [`CANCEL_WITHIN`] of the cancellation, and leaves nothing behind. Needs a slow config.
pub async fn cancellation_mid_deploy(h: &ConformanceHarness) {
    let s = Scope::new(h, "cancellation_mid_deploy");
    let Some(slow) = h.slow_config.clone() else {
        return;
    };
    s.run(async {
        let spec = ConformanceHarness::spec_with(&slow, s.check);
        s.track(&KnownDeployment::from_spec(spec.clone()));
        let cancel = CancellationToken::new();
        let ctx = OperationContext::with_cancel(EventSink::detached(), cancel.clone());
        let p = s.provider();
        let began = tokio::time::Instant::now();
        let canceller = async {
            tokio::time::sleep(CANCEL_AFTER).await;
            cancel.cancel();
            tokio::time::Instant::now()
        };
        let (result, cancelled_at) = s
            .within(
                "a cancelled deploy",
                futures::future::join(p.deploy(&ctx, &spec, None), canceller),
            )
            .await;
        let answered_after_cancel = cancelled_at.elapsed();
        if let Ok(runtime) = &result {
            s.track(&KnownDeployment::new(spec.clone(), runtime.clone()));
        }
        assert!(
            matches!(result, Err(Error::Cancelled { .. })),
            "{}: a deploy cancelled midway must answer Cancelled (race ctx.cancel against long waits), got {result:?} after {:?} (the slow config must take at least ~2 s to become ready)",
            s.check,
            began.elapsed()
        );
        assert!(
            answered_after_cancel <= CANCEL_WITHIN,
            "{}: a cancelled deploy must answer within {CANCEL_WITHIN:?} of the cancellation, took {answered_after_cancel:?}",
            s.check
        );
        let known = KnownDeployment::from_spec(spec.clone());
        s.assert_nothing_runs(&known, "a deploy cancelled midway").await;
        s.assert_nothing_left(&spec.id, "a deploy cancelled midway").await;
    })
    .await;
}
