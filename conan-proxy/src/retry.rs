//! When a failed request is sent again to another instance.
//!
//! Once, and only when all of these hold:
//! - the failure happened while **connecting** (nothing of the request reached an app),
//!   or the connection **failed before any response byte** came back (the instance died
//!   with the request in flight: a replica killed with SIGKILL, a crash);
//! - the method is **idempotent** (RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE, PUT,
//!   DELETE), so even a request that did reach an app is safe to repeat (§9.2.2 allows a
//!   client, and so a proxy, to retry it automatically);
//! - the request has **no body** (a streamed body is consumed by the first attempt and is
//!   never buffered to be replayed);
//! - another serving instance exists.
//!
//! Everything else (a timeout waiting for the response, a POST, a request with a body) is
//! answered 502 or 504 at once.

use hyper::Method;

/// Whether `method` is idempotent (RFC 9110 §9.2.2).
#[must_use]
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// What went wrong with one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptFailure {
    /// The connection to the instance could not be made: nothing was sent.
    Connect,
    /// The request was (maybe partly) sent and then the connection failed.
    AfterSend,
    /// No response head within the header timeout.
    Timeout,
}

/// Whether to send the request again to another instance (see the module docs).
#[must_use]
pub fn may_retry(
    method: &Method,
    has_body: bool,
    failure: AttemptFailure,
    attempts: u32,
    other_instances: usize,
) -> bool {
    matches!(failure, AttemptFailure::Connect | AttemptFailure::AfterSend)
        && attempts == 1
        && other_instances > 0
        && !has_body
        && is_idempotent(method)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_failed_connect_of_an_idempotent_bodiless_request_is_retried_once() {
        use AttemptFailure::*;
        assert!(may_retry(&Method::GET, false, Connect, 1, 1));
        assert!(may_retry(&Method::PUT, false, Connect, 1, 2));
        assert!(!may_retry(&Method::GET, false, Connect, 2, 1), "only once");
        assert!(
            !may_retry(&Method::GET, false, Connect, 1, 0),
            "no other instance"
        );
        assert!(!may_retry(&Method::GET, true, Connect, 1, 1), "a body");
        assert!(
            !may_retry(&Method::POST, false, Connect, 1, 1),
            "not idempotent"
        );
        assert!(
            !may_retry(&Method::PATCH, false, Connect, 1, 1),
            "not idempotent"
        );
        assert!(
            may_retry(&Method::GET, false, AfterSend, 1, 1),
            "an idempotent request whose instance died before answering"
        );
        assert!(
            !may_retry(&Method::POST, false, AfterSend, 1, 1),
            "may have reached the app"
        );
        assert!(
            !may_retry(&Method::GET, false, Timeout, 1, 1),
            "may have reached the app"
        );
    }
}
