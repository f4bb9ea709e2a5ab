//! Helpers for provider authors that are not part of the contract: Node.js start-command
//! resolution ([`node`]), restart backoff bookkeeping ([`restart`]) and health probes
//! ([`crate::probe`]). Using them keeps providers in step with each other.

pub mod canary;
pub mod node;
pub mod restart;
