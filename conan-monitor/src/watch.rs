//! `monitor_deployment` (being built): see the crate docs.
