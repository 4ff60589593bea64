//! Prometheus metrics of the daemon: what an operator graphs and alerts on.
//!
//! One [`Metrics`] per server, with its own registry (not the process-global one, so tests can run several
//! servers in one process). The batcher and the gRPC handlers record into it; `pharos serve` exposes
//! [`Metrics::render`] at `GET /metrics` on its own port, away from the gRPC listener.
//!
//! Names follow Prometheus conventions (`_total` counters, `_seconds` histograms, base units). Labels have a
//! small, fixed set of values (methods, stages, status codes, bank names), never ids or image data.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Latency buckets, seconds: 100 µs to 30 s (a small image hashes in about a millisecond; a 100 MP one, or
/// a request queued behind many, takes seconds).
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0,
];

/// Every metric the daemon exports.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// Images hashed successfully, by backend (`cpu` or `gpu`).
    pub images_hashed: IntCounterVec,
    /// Items (images, queries, bank entries) answered with an error, by gRPC status code name.
    pub errors: IntCounterVec,
    /// Matches reported, by bank.
    pub matches: IntCounterVec,
    /// Requests (unary calls and stream items) by method.
    pub requests: IntCounterVec,
    /// Items admitted and not yet answered by the batcher (decode queue, batch queue and the batch hashing).
    pub queue_depth: IntGauge,
    /// Encoded bytes of the items in `queue_depth`.
    pub queue_bytes: IntGauge,
    /// Images per backend submission.
    pub batch_size: prometheus::Histogram,
    /// Seconds per pipeline stage: `queue` (admitted → decode starts), `decode`, `batch_wait` (decoded →
    /// its batch starts), `hash` (the whole batch's hashing, per item), `match`.
    pub stage_seconds: HistogramVec,
    /// Seconds per request (unary) or per stream item (admission to response), by method.
    pub request_seconds: HistogramVec,
    /// 1 for the backend in use, labelled with its description (`cpu`, `gpu: <adapter>`).
    pub backend: IntGaugeVec,
    /// Batches the GPU failed and the CPU redid (a lost device, an out-of-memory): no request failed for it.
    pub gpu_fallbacks: IntCounter,
    /// GPU devices refused because their hashes of the stress images differed from the CPU's (the start-up
    /// canary, `gpu::canary`), in this process.
    pub gpu_canary_failures: IntCounter,
    /// GPU devices lost (driver loss, hang, panic inside wgpu); each is replaced in the background.
    pub gpu_losses: IntCounter,
    /// Replacement GPU devices opened (and passed the canary) after losses.
    pub gpu_recreations: IntCounter,
    /// 1 while the GPU backend is in use, 0 from a loss until the replacement is in place (GPU backend only).
    pub gpu_healthy: IntGauge,
    /// GPU submissions in flight (submitted, not yet read back), observed as each batch is submitted,
    /// itself included: observations above 1 show upload, compute and readback of batches overlapping.
    pub gpu_batches_in_flight: prometheus::Histogram,
    /// Pixel bytes the decode workers copied into the GPU's upload buffers: each image's pixels once (the
    /// one host copy between the decoder and the GPU), against `pharos_gpu_staged_images_total`.
    pub gpu_staged_bytes: IntCounter,
    /// Images whose pixels were copied into the GPU's upload buffers.
    pub gpu_staged_images: IntCounter,
    /// Production images re-hashed on the CPU to check the GPU (one batch in `PHAROS_GPU_RECHECK_EVERY`).
    pub gpu_rechecks: IntCounter,
    /// Re-checked images the GPU hashed differently from the CPU; each refused the device.
    pub gpu_recheck_mismatches: IntCounter,
    /// Live entries per bank.
    pub bank_entries: IntGaugeVec,
    /// Panics caught in the hashing pipeline, by stage (`decode`: a decoder or CPU hasher on a decode
    /// worker; `batch`: the backend on the batcher thread). The items answered INTERNAL; the daemon served on.
    pub panics: IntCounterVec,
    /// Times the batcher thread died and was started again (health NOT_SERVING in between).
    pub pipeline_restarts: IntCounter,
    /// Queries whose matches were cut at `max_matches`.
    pub matches_truncated: IntCounter,
    /// Flood-guard trips, by bank.
    pub flood_trips: IntCounterVec,
    /// Calls admitted, by caller identity (names come from the auth file, so the set is bounded) and method.
    pub caller_requests: IntCounterVec,
    /// Calls refused by the trust boundary, by reason (`missing`, `malformed`, `bad_token`,
    /// `unknown_certificate`, `permission`, `peer_blocked`).
    pub auth_failures: IntCounterVec,
    /// Requests refused for a caller's quota, by caller and quota (`rate`, `images_in_flight`).
    pub quota_rejections: IntCounterVec,
    /// Shared store (PostgreSQL): 1 while it answers, 0 while it cannot be reached (matching goes on from
    /// memory; writes fail).
    pub store_available: IntGauge,
    /// Shared store: seconds this replica may be behind the change log (0 right after a catch-up that found
    /// nothing more; grows while the store cannot be reached).
    pub replication_lag: prometheus::Gauge,
    /// Shared store: the sequence number of the last change applied here.
    pub replication_position: IntGauge,
    /// Shared store: seconds from a change's commit (any replica) to its application here.
    pub replication_delay: prometheus::Histogram,
    /// Matches answered without their entries' fields (label, external id, tags) because the store could
    /// not be read; the bank and id are always there.
    pub match_fields_unavailable: IntCounter,
    /// Audit records kept in the local spool while the shared store could not take them.
    pub audit_spooled: IntCounter,
    /// HTTP API requests answered, by route and status code.
    pub http_requests: IntCounterVec,
    /// Seconds per HTTP API request, by route.
    pub http_seconds: HistogramVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered (names prefixed `pharos_`).
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("pharos".into()), None).expect("valid prefix");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: Vec<f64>| {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
                .expect("valid metric");
            registry.register(Box::new(h.clone())).expect("unique metric");
            h
        };
        let images_hashed =
            counter("images_hashed_total", "Images hashed successfully, by backend.", &["backend"]);
        let errors = counter("errors_total", "Items answered with an error, by gRPC status code.", &["code"]);
        let matches = counter("matches_total", "Matches reported, by bank.", &["bank"]);
        let requests = counter("requests_total", "Unary requests and stream items, by method.", &["method"]);
        let queue_depth =
            gauge("queue_depth", "Items admitted to the hashing pipeline and not yet answered.");
        let queue_bytes = gauge("queue_bytes", "Encoded bytes of the items in pharos_queue_depth.");
        let batch_size = histogram(
            "batch_size",
            "Images per backend submission.",
            &[],
            vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
        )
        .with_label_values::<&str>(&[]);
        let stage_seconds =
            histogram("stage_seconds", "Seconds per pipeline stage.", &["stage"], LATENCY_BUCKETS.to_vec());
        let request_seconds = histogram(
            "request_seconds",
            "Seconds from admission to response, per unary request or stream item.",
            &["method"],
            LATENCY_BUCKETS.to_vec(),
        );
        let backend =
            IntGaugeVec::new(Opts::new("backend_info", "1 for the hashing backend in use."), &["backend"])
                .expect("valid metric");
        registry.register(Box::new(backend.clone())).expect("unique metric");
        let gpu_fallbacks =
            IntCounter::new("gpu_fallbacks_total", "GPU batches redone on the CPU.").expect("valid metric");
        registry.register(Box::new(gpu_fallbacks.clone())).expect("unique metric");
        let gpu_canary_failures = IntCounter::new(
            "gpu_canary_failures_total",
            "GPU devices refused because their hashes of the stress images differed from the CPU's.",
        )
        .expect("valid metric");
        registry.register(Box::new(gpu_canary_failures.clone())).expect("unique metric");
        let gpu_losses = IntCounter::new("gpu_losses_total", "GPU devices lost (driver loss, hang, panic).")
            .expect("valid metric");
        registry.register(Box::new(gpu_losses.clone())).expect("unique metric");
        let gpu_recreations =
            IntCounter::new("gpu_recreations_total", "Replacement GPU devices opened after losses.")
                .expect("valid metric");
        registry.register(Box::new(gpu_recreations.clone())).expect("unique metric");
        let gpu_batches_in_flight = histogram(
            "gpu_batches_in_flight",
            "GPU submissions in flight as each batch is submitted, itself included.",
            &[],
            vec![1.0, 2.0, 3.0, 4.0],
        )
        .with_label_values::<&str>(&[]);
        let gpu_staged_bytes = IntCounter::new(
            "gpu_staged_bytes_total",
            "Pixel bytes copied by the decode workers into the GPU's upload buffers (once per image).",
        )
        .expect("valid metric");
        registry.register(Box::new(gpu_staged_bytes.clone())).expect("unique metric");
        let gpu_staged_images =
            IntCounter::new("gpu_staged_images_total", "Images copied into the GPU's upload buffers.")
                .expect("valid metric");
        registry.register(Box::new(gpu_staged_images.clone())).expect("unique metric");
        let gpu_rechecks = IntCounter::new(
            "gpu_rechecks_total",
            "Production images re-hashed on the CPU to check the GPU's hashes.",
        )
        .expect("valid metric");
        registry.register(Box::new(gpu_rechecks.clone())).expect("unique metric");
        let gpu_recheck_mismatches = IntCounter::new(
            "gpu_recheck_mismatches_total",
            "Re-checked images the GPU hashed differently from the CPU (each refused the device).",
        )
        .expect("valid metric");
        registry.register(Box::new(gpu_recheck_mismatches.clone())).expect("unique metric");
        let gpu_healthy =
            IntGauge::new("gpu_healthy", "1 while the GPU is in use, 0 while a lost device is replaced.")
                .expect("valid metric");
        registry.register(Box::new(gpu_healthy.clone())).expect("unique metric");
        let bank_entries = IntGaugeVec::new(Opts::new("bank_entries", "Live entries per bank."), &["bank"])
            .expect("valid metric");
        registry.register(Box::new(bank_entries.clone())).expect("unique metric");
        let panics = counter("panics_total", "Panics caught in the hashing pipeline, by stage.", &["stage"]);
        let pipeline_restarts =
            IntCounter::new("pipeline_restarts_total", "Times the batcher thread died and was restarted.")
                .expect("valid metric");
        registry.register(Box::new(pipeline_restarts.clone())).expect("unique metric");
        let matches_truncated =
            IntCounter::new("matches_truncated_total", "Queries whose matches were cut at max_matches.")
                .expect("valid metric");
        registry.register(Box::new(matches_truncated.clone())).expect("unique metric");
        let flood_trips = counter(
            "flood_trips_total",
            "Entries that matched more often than their bank's flood guard allows, by bank.",
            &["bank"],
        );
        let caller_requests = counter(
            "caller_requests_total",
            "Calls admitted, by caller identity and method.",
            &["caller", "method"],
        );
        let auth_failures = counter(
            "auth_failures_total",
            "Calls refused by authentication or authorisation, by reason.",
            &["reason"],
        );
        let quota_rejections = counter(
            "quota_rejections_total",
            "Requests refused for a caller's quota, by caller and quota.",
            &["caller", "quota"],
        );
        let store_available =
            gauge("store_available", "1 while the bank store answers, 0 while it cannot be reached.");
        store_available.set(1);
        let replication_lag = prometheus::Gauge::new(
            "replication_lag_seconds",
            "Seconds this replica may be behind the shared store's change log.",
        )
        .expect("valid metric");
        registry.register(Box::new(replication_lag.clone())).expect("unique metric");
        let replication_position = gauge(
            "replication_position",
            "Sequence number of the last change of the shared store applied here.",
        );
        let replication_delay = histogram(
            "replication_delay_seconds",
            "Seconds from a change's commit in the shared store to its application on this replica.",
            &[],
            vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
        )
        .with_label_values::<&str>(&[]);
        let match_fields_unavailable = IntCounter::new(
            "match_fields_unavailable_total",
            "Matches answered without their entries' fields because the store could not be read.",
        )
        .expect("valid metric");
        registry.register(Box::new(match_fields_unavailable.clone())).expect("unique metric");
        let audit_spooled = IntCounter::new(
            "audit_spooled_total",
            "Audit records kept in the local spool while the shared store could not take them.",
        )
        .expect("valid metric");
        registry.register(Box::new(audit_spooled.clone())).expect("unique metric");
        let http_requests = counter(
            "http_requests_total",
            "HTTP API requests answered, by route and status code.",
            &["route", "status"],
        );
        let http_seconds = histogram(
            "http_request_seconds",
            "Seconds per HTTP API request, by route.",
            &["route"],
            LATENCY_BUCKETS.to_vec(),
        );
        Metrics {
            http_requests,
            http_seconds,
            store_available,
            replication_lag,
            replication_position,
            replication_delay,
            match_fields_unavailable,
            audit_spooled,
            caller_requests,
            auth_failures,
            quota_rejections,
            flood_trips,
            panics,
            pipeline_restarts,
            matches_truncated,
            registry,
            images_hashed,
            errors,
            matches,
            requests,
            queue_depth,
            queue_bytes,
            batch_size,
            stage_seconds,
            request_seconds,
            backend,
            gpu_fallbacks,
            gpu_canary_failures,
            gpu_losses,
            gpu_recreations,
            gpu_healthy,
            gpu_batches_in_flight,
            gpu_staged_bytes,
            gpu_staged_images,
            gpu_rechecks,
            gpu_recheck_mismatches,
            bank_entries,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# error: {e}\n"))
    }
}
