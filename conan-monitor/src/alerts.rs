//! Alerts (being built): see the crate docs.

use std::sync::Arc;

use crate::{MonitorSettings, Shared};

/// Alert rules, their states and the webhook outbox.
#[derive(Debug)]
pub struct Alerts {}

impl Alerts {
    pub(crate) fn new(settings: &MonitorSettings) -> Self {
        let _ = settings;
        Self {}
    }
}

pub(crate) async fn run(shared: Arc<Shared>) {
    let _ = shared;
}
