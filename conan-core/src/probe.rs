//! Health probes (being written).
