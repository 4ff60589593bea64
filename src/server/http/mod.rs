//! The HTTP/JSON surface: Meta's HMA ("OpenMediaMatch") REST API, answered by Pharos's pipeline and banks.
//!
//! `pharos serve --http ADDR` (config `http`, `PHAROS_HTTP`; off by default). Paths, parameters, status codes
//! and JSON shapes are HMA's (`hasher-matcher-actioner/src/OpenMediaMatch/blueprints/`), quirks included:
//! errors are `{"message": "…"}` with HMA's texts, request validation failures are 422 with a pydantic-style
//! array, `distance` in lookups is a string, PDQ of a low-quality photo is `""`. What Pharos adds is listed
//! in [`openapi`] and README ("HTTP API"): `POST /m/lookup_batch`, `/m/hash_lookup` (hashes and matches in
//! one call), `POST /c/bank/{name}/signals` (many at once), `GET /openapi.json`.
//!
//! - [`HttpServer`]: the listener (plaintext, or TLS with the gRPC listener's certificate and client CA),
//!   bound before the banks load: until they are, `/status` answers 503 `INDEX-NOT-LOADED`,
//!   `/status/live` 200, everything else 503 (what a Kubernetes readiness probe wants).
//! - Every request passes the same [`auth`](super::auth) as gRPC (bearer token or client certificate, roles,
//!   bank grants, quotas); [`need`] is the table of what each route needs.
//! - Handlers live in `hashing` (`/h`), `matching` (`/m`) and `curation` (`/c`); URL downloads in `fetch`.
//!   Image bytes are hashed in memory and never logged or written anywhere.

mod curation;
mod fetch;
mod hashing;
mod hma;
mod matching;
pub mod openapi;

use super::auth::{Caller, Need, Role};
use super::Shared;
use crate::error::Error;
use crate::pipeline::PipelineError;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::Code;

pub(crate) use fetch::{FetchPolicy, Fetcher};

/// What the HTTP handlers share once the banks are loaded.
pub(crate) struct Api {
    shared: Arc<Shared>,
    fetcher: Option<Fetcher>,
}

/// The state every request sees: the API once it is ready, and the auth in front of it.
struct Gate {
    api: OnceLock<Arc<Api>>,
    stopping: watch::Receiver<bool>,
}

type AppState = Arc<Gate>;

/// An error answer: HMA's `{"message": "…"}` with a status code.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    /// Seconds for `Retry-After` (quota and overload answers).
    retry_after: Option<u64>,
    /// A body other than `{"message"}` (the 422 arrays of HMA's validation layer).
    body: Option<serde_json::Value>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), retry_after: None, body: None }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body.unwrap_or_else(|| serde_json::json!({ "message": self.message }));
        let mut r = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s.max(1)));
        }
        r
    }
}

/// The HTTP status of a gRPC status code (the one map between the two).
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Cancelled | Code::Unknown | Code::Internal | Code::DataLoss => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> ApiError {
        use tonic_types::StatusExt as _;
        let retry_after =
            s.get_details_retry_info().and_then(|r| r.retry_delay).map(|d| d.as_secs_f64().ceil() as u64);
        ApiError { status: http_status(s.code()), message: s.message().to_string(), retry_after, body: None }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        if matches!(e, Error::Io(_) | Error::Store(_) | Error::Internal(_)) {
            tracing::error!(error = %e, "HTTP request failed");
        }
        ApiError::new(http_status(super::code_of(&e)), e.to_string())
    }
}

impl From<PipelineError> for ApiError {
    fn from(e: PipelineError) -> ApiError {
        let retry = matches!(e, PipelineError::Overloaded(_));
        let mut a = ApiError::from(super::pipeline_status(e));
        if retry {
            a.retry_after = Some(1);
        }
        a
    }
}

/// A handler's result.
pub(crate) type ApiResult<T = Response> = Result<T, ApiError>;

/// A 200 JSON answer.
pub(crate) fn json(v: serde_json::Value) -> Response {
    axum::Json(v).into_response()
}

/// The query string's parameters; of a repeated name the first value counts, as with Flask's `args.get`.
#[derive(Debug, Default)]
pub(crate) struct Params(BTreeMap<String, String>);

impl Params {
    pub(crate) fn parse(query: Option<&str>) -> ApiResult<Params> {
        let mut map = BTreeMap::new();
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            map.entry(k.into_owned()).or_insert_with(|| v.into_owned());
        }
        Ok(Params(map))
    }

    /// The parameters as a JSON object (what pydantic shows as a query model's input).
    pub(crate) fn as_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.0).unwrap_or_default()
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A parameter a pydantic model requires: 422 with pydantic's array when absent.
    pub(crate) fn required(&self, name: &str) -> ApiResult<&str> {
        self.get(name).ok_or_else(|| unprocessable(name, "missing", "Field required", self.as_json()))
    }

    /// A boolean a pydantic model reads (true/false/1/0/yes/no/on/off/t/f/y/n, any case); 422 otherwise.
    pub(crate) fn pydantic_bool(&self, name: &str, default: bool) -> ApiResult<bool> {
        let Some(v) = self.get(name) else { return Ok(default) };
        match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" | "t" | "y" => Ok(true),
            "false" | "0" | "no" | "off" | "f" | "n" => Ok(false),
            _ => Err(unprocessable(
                name,
                "bool_parsing",
                "Input should be a valid boolean, unable to interpret input",
                serde_json::Value::String(v.to_string()),
            )),
        }
    }
}

/// HMA's 422 for a request that fails its pydantic model: a list of one pydantic error, `{type, loc, msg,
/// input, url}` (and `ctx` where pydantic gives one). It is the one error that is a list, not
/// `{"message"}`: HMA's validation layer answers before its error handler runs.
pub(crate) fn unprocessable(loc: &str, ty: &str, msg: &str, input: serde_json::Value) -> ApiError {
    let loc: Vec<&str> = if loc.is_empty() { Vec::new() } else { vec![loc] };
    let mut e = serde_json::json!({
        "type": ty, "loc": loc, "msg": msg, "input": input,
        "url": format!("https://errors.pydantic.dev/{PYDANTIC_DOCS}/v/{ty}"),
    });
    if let Some(model) = msg.strip_prefix("Input should be a valid dictionary or instance of ") {
        e["ctx"] = serde_json::json!({ "class_name": model });
    }
    ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        message: "request validation failed".into(),
        retry_after: None,
        body: Some(serde_json::Value::Array(vec![e])),
    }
}

/// The pydantic release whose error pages HMA 1.1.7's 422 answers link to.
const PYDANTIC_DOCS: &str = "2.14";

/// A JSON body the way Flask's `request.get_json()` reads it: 415 unless the content type is JSON, 400 when
/// it does not parse.
pub(crate) fn flask_json(headers: &axum::http::HeaderMap, body: &[u8]) -> ApiResult<serde_json::Value> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .is_some_and(|m| m == "application/json" || (m.starts_with("application/") && m.ends_with("+json")));
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Did not attempt to load JSON data because the request Content-Type was not 'application/json'.",
        ));
    }
    // Werkzeug's text, as HMA answers it (the parser's reason is not shown there either).
    serde_json::from_slice(body).map_err(|_| {
        ApiError::bad_request("The browser (or proxy) sent a request that this server could not understand.")
    })
}

/// A JSON body a pydantic model reads: 422 `model_type` when it is missing or not an object.
pub(crate) fn model_json(
    headers: &axum::http::HeaderMap,
    body: &[u8],
    model: &str,
) -> ApiResult<serde_json::Map<String, serde_json::Value>> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("json"));
    let parsed = if is_json { serde_json::from_slice::<serde_json::Value>(body).ok() } else { None };
    match parsed {
        Some(serde_json::Value::Object(m)) => Ok(m),
        other => Err(unprocessable(
            "",
            "model_type",
            &format!("Input should be a valid dictionary or instance of {model}"),
            other.unwrap_or(serde_json::Value::Null),
        )),
    }
}

/// What a route needs of its caller (the one place HTTP routes get roles, as [`super::auth::required`]
/// for gRPC methods).
pub(crate) fn need(method: &Method, path: &str) -> (Need, bool) {
    let p = path.trim_end_matches('/');
    // (need, charged by the layer: image routes are charged per image by their handlers)
    let image = |n| (n, false);
    let call = |n| (n, true);
    if p.is_empty() || p == "/status" || p == "/status/live" || p == "/openapi.json" {
        return (Need::Nothing, false);
    }
    let is_get = method == Method::GET || method == Method::HEAD;
    match p {
        "/h/hash" => image(Need::Role(Role::Hash)),
        "/m/lookup" | "/m/hash_lookup" => image(Need::Role(Role::Match)),
        "/m/raw_lookup" | "/m/lookup_batch" | "/m/compare" => call(Need::Role(Role::Match)),
        "/m/index/status" | "/c/signal_type/index" | "/c/signal_type" | "/c/content_type" => {
            call(Need::Identity)
        }
        "/c/banks" if is_get => call(Need::Identity),
        "/c/banks" => call(Need::Role(Role::Admin)),
        _ if p.starts_with("/c/bank/") => {
            let rest = &p["/c/bank/".len()..];
            let parts: Vec<&str> = rest.split('/').collect();
            match (parts.len(), parts.get(1).copied()) {
                (1, _) if is_get => call(Need::Identity),
                (1, _) => call(Need::Role(Role::Admin)),
                (2, Some("content")) => image(Need::Role(Role::Write)),
                (2, Some("signal" | "signals")) => call(Need::Role(Role::Write)),
                (3, Some("content")) if is_get => call(Need::Role(Role::Read)),
                (3, Some("content")) => call(Need::Role(Role::Write)),
                _ => call(Need::Identity),
            }
        }
        _ => call(Need::Identity),
    }
}

/// The caller of a request (set by [`gatekeeper`]).
pub(crate) fn caller(req_ext: &axum::http::Extensions) -> Arc<Caller> {
    req_ext.get::<Arc<Caller>>().cloned().unwrap_or_else(Caller::local)
}

/// Authenticates each request, checks its route's role and charges its quota; answers 503 while the
/// banks load.
async fn gatekeeper(State(gate): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let Some(api) = gate.api.get() else {
        return match path.as_str() {
            "/status/live" => alive(),
            "/status" => text(StatusCode::SERVICE_UNAVAILABLE, "INDEX-NOT-LOADED"),
            _ => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Pharos is loading its banks; retry shortly")
                .into_response(),
        };
    };
    let (need, charge) = need(req.method(), &path);
    // The route's name in messages, not the path: it holds caller text.
    let what = format!("{} {}", req.method(), route_label(&path));
    match api.shared.auth.check(&req, need, charge, &what) {
        Ok(caller) => {
            let start = std::time::Instant::now();
            let (method, who) = (req.method().clone(), caller.label().to_string());
            let label = route_label(&path);
            req.extensions_mut().insert(caller);
            req.extensions_mut().insert(api.clone());
            let resp = next.run(req).await;
            let status = resp.status();
            let m = &api.shared.metrics;
            m.http_requests.with_label_values(&[label, status.as_str()]).inc();
            m.http_seconds.with_label_values(&[label]).observe(start.elapsed().as_secs_f64());
            // The route's name, never the path (it holds caller text) or the query (it may hold a URL).
            tracing::debug!(%method, route = label, status = status.as_u16(), caller = %who, ms = start.elapsed().as_millis() as u64, "HTTP request");
            resp
        }
        Err(status) => ApiError::from(status).into_response(),
    }
}

/// The route's name for metric labels: known routes only (paths hold caller text: bank names, ids).
fn route_label(path: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "/status",
        "/status/live",
        "/openapi.json",
        "/h/hash",
        "/m/raw_lookup",
        "/m/lookup",
        "/m/lookup_batch",
        "/m/hash_lookup",
        "/m/compare",
        "/m/index/status",
        "/c/banks",
        "/c/signal_type",
        "/c/signal_type/index",
        "/c/content_type",
    ];
    if let Some(k) = KNOWN.iter().find(|k| **k == path) {
        return k;
    }
    if let Some(rest) = path.strip_prefix("/c/bank/") {
        return match rest.split('/').nth(1) {
            None => "/c/bank/{name}",
            Some("signal") => "/c/bank/{name}/signal",
            Some("signals") => "/c/bank/{name}/signals",
            Some("content") if rest.split('/').count() == 2 => "/c/bank/{name}/content",
            Some("content") => "/c/bank/{name}/content/{id}",
            _ => "other",
        };
    }
    "other"
}

/// A plain-text answer, as Flask's string returns (`text/html`).
fn text(status: StatusCode, body: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

fn alive() -> Response {
    text(StatusCode::OK, "I-AM-ALIVE")
}

/// `GET /status`: 200 `I-AM-ALIVE` once the banks are loaded (the gate answers 503 `INDEX-NOT-LOADED`
/// before); 503 `SHUTTING-DOWN` while draining, so load balancers stop sending new requests.
#[utoipa::path(get, path = "/status", tag = "Status",
    responses((status = 200, description = "`I-AM-ALIVE`: the banks are loaded", content_type = "text/html"),
              (status = 503, description = "`INDEX-NOT-LOADED` while the banks load, `SHUTTING-DOWN` while draining", content_type = "text/html")))]
async fn status(State(gate): State<AppState>) -> Response {
    if *gate.stopping.borrow() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "SHUTTING-DOWN");
    }
    alive()
}

/// `GET /status/live`: 200 `I-AM-ALIVE` while the process serves.
#[utoipa::path(get, path = "/status/live", tag = "Status",
    responses((status = 200, description = "`I-AM-ALIVE`", content_type = "text/html")))]
async fn status_live() -> Response {
    alive()
}

/// Answers HMA routes Pharos does not serve (exchanges, signal type switches) with 501.
pub(crate) async fn not_implemented(req: Request) -> Response {
    let what = if req.uri().path().contains("exchange") {
        "exchanges (fetching from ThreatExchange, NCMEC, StopNCII) are not served by Pharos; import partner \
         files with `pharos bank import --format …` instead"
    } else {
        "this HMA route is not served by Pharos"
    };
    ApiError::new(StatusCode::NOT_IMPLEMENTED, what).into_response()
}

/// Flask's 404 page, for unknown paths (HMA answers routing errors in HTML, not JSON).
async fn flask_404() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<!doctype html>\n<html lang=en>\n<title>404 Not Found</title>\n<h1>Not Found</h1>\n<p>The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.</p>\n",
    )
        .into_response()
}

/// Flask's 405 page.
pub(crate) async fn flask_405() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<!doctype html>\n<html lang=en>\n<title>405 Method Not Allowed</title>\n<h1>Method Not Allowed</h1>\n<p>The method is not allowed for the requested URL.</p>\n",
    )
        .into_response()
}

/// The router: HMA's routes, Pharos's additions, the OpenAPI document.
fn router(gate: AppState, body_limit: usize) -> Router {
    Router::new()
        // HMA redirects its root to `/status` (or its UI, which Pharos has not).
        .route("/", get(|| async { axum::response::Redirect::to("/status") }))
        .route("/status", get(status))
        .route("/status/live", get(status_live))
        .route("/openapi.json", get(openapi::serve))
        .route("/h/hash", get(hashing::hash_url).post(hashing::hash_upload).fallback(flask_405))
        .route("/m/raw_lookup", get(matching::raw_lookup).fallback(flask_405))
        .route("/m/lookup", get(matching::lookup_get).post(matching::lookup_post).fallback(flask_405))
        .route("/m/lookup_batch", post(matching::lookup_batch).fallback(flask_405))
        .route(
            "/m/hash_lookup",
            get(matching::hash_lookup_url).post(matching::hash_lookup_upload).fallback(flask_405),
        )
        .route("/m/compare", post(matching::compare).fallback(flask_405))
        .route("/m/index/status", get(matching::index_status).fallback(flask_405))
        .route("/c/banks", get(curation::list_banks).post(curation::create_bank).fallback(flask_405))
        .route(
            "/c/bank/{name}",
            get(curation::get_bank)
                .put(curation::update_bank)
                .delete(curation::delete_bank)
                .fallback(flask_405),
        )
        .route("/c/bank/{name}/signal", post(curation::add_signal).fallback(flask_405))
        .route("/c/bank/{name}/signals", post(curation::add_signals).fallback(flask_405))
        .route("/c/bank/{name}/content", post(curation::add_content).fallback(flask_405))
        .route(
            "/c/bank/{name}/content/{id}",
            get(curation::get_content)
                .put(curation::update_content)
                .delete(curation::delete_content)
                .fallback(flask_405),
        )
        .route("/c/signal_type", get(curation::signal_types).fallback(flask_405))
        .route("/c/signal_type/index", get(curation::signal_type_index).fallback(flask_405))
        .route("/c/signal_type/{name}", any(not_implemented))
        .route("/c/content_type", get(curation::content_types).fallback(flask_405))
        .route("/c/exchanges", any(not_implemented))
        .route("/c/exchanges/{*rest}", any(not_implemented))
        .route("/c/exchange/{*rest}", any(not_implemented))
        .fallback(flask_404)
        .method_not_allowed_fallback(flask_405)
        .layer(axum::middleware::from_fn_with_state(gate.clone(), gatekeeper))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state(gate)
}

/// The HTTP listener, bound and serving: 503 until [`HttpServer::open`] hands it the loaded banks.
pub struct HttpServer {
    addr: SocketAddr,
    gate: AppState,
    stop: Arc<watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer").field("addr", &self.addr).finish()
    }
}

impl HttpServer {
    /// Serves `listener` (TLS when the config has a certificate; refused beyond loopback on the same terms
    /// as gRPC), answering 503 until [`HttpServer::open`]. Call on the async runtime.
    pub fn start(listener: TcpListener, cfg: &super::config::ServeConfig) -> crate::Result<HttpServer> {
        let addr = listener.local_addr()?;
        cfg.check_exposure(addr, true)?;
        let tls = tls_acceptor(cfg)?;
        let (stop, stopping) = watch::channel(false);
        let gate = Arc::new(Gate { api: OnceLock::new(), stopping: stopping.clone() });
        // Room for the largest image and a multipart envelope, or a big batch of signals.
        let app = router(gate.clone(), cfg.max_message_bytes.max(64 << 20));
        let grace = Duration::from_secs(cfg.shutdown_grace_s);
        let task = tokio::spawn(accept_loop(listener, app, tls, stopping, grace));
        Ok(HttpServer { addr, gate, stop: Arc::new(stop), task })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts answering with the server's banks and pipeline.
    pub(super) fn open(&self, shared: Arc<Shared>) -> crate::Result<()> {
        let cfg = &shared.cfg;
        let fetcher = Fetcher::new(FetchPolicy {
            hosts: cfg.http_fetch_hosts.clone(),
            private: cfg.http_fetch_private,
            max_bytes: cfg.max_image_bytes,
            timeout: Duration::from_millis(cfg.http_fetch_timeout_ms),
        })?;
        // Draining starts with the gRPC server's (SIGTERM): no new connections, `/status` 503.
        let (mut stopping, stop) = (shared.stopping.clone(), self.stop.clone());
        tokio::spawn(async move {
            while !*stopping.borrow_and_update() {
                if stopping.changed().await.is_err() {
                    break;
                }
            }
            let _ = stop.send(true);
        });
        let _ = self.gate.api.set(Arc::new(Api { shared, fetcher }));
        Ok(())
    }

    /// Stops accepting connections, lets the requests in flight finish (at most `shutdown_grace_s`), and
    /// returns when every connection is closed.
    pub(super) async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// The TLS acceptor for the HTTP listener: the gRPC listener's certificate and key, and its client CA
/// (mutual TLS: a certificate is required, and its names identify the caller as on gRPC).
fn tls_acceptor(cfg: &super::config::ServeConfig) -> crate::Result<Option<tokio_rustls::TlsAcceptor>> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) else { return Ok(None) };
    let bad = |what: &str, path: &std::path::Path, e: String| {
        Error::InvalidInput(format!("{what} {}: {e}", path.display()))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad("TLS certificate", cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("TLS certificate", cert, e.to_string()))?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("TLS key", key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::InvalidInput(format!("TLS: {e}")))?;
    let builder = match &cfg.tls_client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).map_err(|e| bad("TLS client CA", ca, e.to_string()))? {
                roots
                    .add(c.map_err(|e| bad("TLS client CA", ca, e.to_string()))?)
                    .map_err(|e| bad("TLS client CA", ca, e.to_string()))?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| bad("TLS client CA", ca, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key_der).map_err(|e| {
        Error::InvalidInput(format!("TLS certificate {} / key {}: {e}", cert.display(), key.display()))
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

/// Accepts connections until `stopping`, then waits for the open ones to finish their requests.
async fn accept_loop(
    listener: TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stopping: watch::Receiver<bool>,
    grace: Duration,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment instead of spinning.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopping.changed() => break,
        };
        let _ = tcp.set_nodelay(true);
        let info = tonic::transport::server::TcpConnectInfo {
            local_addr: tcp.local_addr().ok(),
            remote_addr: Some(peer),
        };
        let (app, tls, watcher) = (app.clone(), tls.clone(), graceful.watcher());
        tokio::spawn(async move {
            match tls {
                None => serve_connection(hyper_util::rt::TokioIo::new(tcp), app, info, None, watcher).await,
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(peer = %peer, error = %e, "HTTPS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        };
                    let names = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|leaf| super::auth::PeerCertNames(super::auth::cert_names(leaf.as_ref())));
                    serve_connection(hyper_util::rt::TokioIo::new(stream), app, info, names, watcher).await
                }
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => tracing::warn!("HTTP connections still open after the grace period"),
    }
}

/// Serves one connection (HTTP/1.1, keep-alive), each request carrying the peer's address and certificate
/// names for the auth check.
async fn serve_connection<I>(
    io: hyper_util::rt::TokioIo<I>,
    app: Router,
    info: tonic::transport::server::TcpConnectInfo,
    names: Option<super::auth::PeerCertNames>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: axum::http::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(info.clone());
        if let Some(n) = &names {
            req.extensions_mut().insert(n.clone());
        }
        let mut app = app.clone();
        async move { tower::Service::call(&mut app, req).await }
    });
    let conn = hyper::server::conn::http1::Builder::new().keep_alive(true).serve_connection(io, service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_its_role() {
        let role = |m: Method, p: &str| need(&m, p).0;
        assert_eq!(role(Method::GET, "/status"), Need::Nothing);
        assert_eq!(role(Method::POST, "/h/hash"), Need::Role(Role::Hash));
        assert_eq!(role(Method::GET, "/m/raw_lookup"), Need::Role(Role::Match));
        assert_eq!(role(Method::POST, "/m/lookup_batch"), Need::Role(Role::Match));
        assert_eq!(role(Method::GET, "/c/banks"), Need::Identity);
        assert_eq!(role(Method::POST, "/c/banks"), Need::Role(Role::Admin));
        assert_eq!(role(Method::PUT, "/c/bank/X"), Need::Role(Role::Admin));
        assert_eq!(role(Method::DELETE, "/c/bank/X"), Need::Role(Role::Admin));
        assert_eq!(role(Method::POST, "/c/bank/X/signal"), Need::Role(Role::Write));
        assert_eq!(role(Method::POST, "/c/bank/X/content"), Need::Role(Role::Write));
        assert_eq!(role(Method::GET, "/c/bank/X/content/3"), Need::Role(Role::Read));
        assert_eq!(role(Method::DELETE, "/c/bank/X/content/3"), Need::Role(Role::Write));
        assert_eq!(role(Method::GET, "/nowhere"), Need::Identity);
        // Image routes are charged per image by their handlers, everything else once by the gate.
        assert!(!need(&Method::POST, "/h/hash").1 && need(&Method::GET, "/m/raw_lookup").1);
        assert_eq!(route_label("/c/bank/ANY/content/7"), "/c/bank/{name}/content/{id}");
        assert_eq!(route_label("/c/bank/ANY/x/y"), "other");
    }

    #[test]
    fn grpc_codes_map_to_http_statuses() {
        assert_eq!(http_status(Code::Unauthenticated), StatusCode::UNAUTHORIZED);
        assert_eq!(http_status(Code::PermissionDenied), StatusCode::FORBIDDEN);
        assert_eq!(http_status(Code::ResourceExhausted), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(http_status(Code::Unavailable), StatusCode::SERVICE_UNAVAILABLE);
        let e = ApiError::from(Error::UnknownBank("B".into()));
        assert_eq!(e.status, StatusCode::NOT_FOUND);
    }
}
