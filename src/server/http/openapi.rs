//! `GET /openapi.json`: the HTTP API's OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! annotations and the schema types below (a test checks that every route of the router is in it).

use axum::response::{IntoResponse as _, Response};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// An error: `{"message": "…"}` (HMA's shape).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Message {
    /// What went wrong.
    pub message: String,
}

/// A bank as HMA shows it.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Bank {
    /// The share of lookups that search the bank (HMA's coin flip): 1 always, 0 never.
    pub matching_enabled_ratio: f64,
    /// `UPPER_WITH_UNDERSCORE`.
    pub name: String,
}

/// `POST /c/banks`.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct BankCreate {
    /// `UPPER_WITH_UNDERSCORE`, at most 64 characters.
    pub name: String,
    /// 0 to 1 [default: 1].
    pub enabled_ratio: Option<f64>,
    /// Accepted and ignored without `enabled_ratio` (as HMA).
    pub enabled: Option<bool>,
    /// Pharos: the bank's signal type [default: `pdq`].
    pub signal_type: Option<String>,
}

/// `PUT /c/bank/{name}`.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct BankUpdate {
    /// A new name: not supported (501).
    pub name: Option<String>,
    /// Ratio 1 (true) or 0 (false).
    pub enabled: Option<bool>,
    /// 0 to 1; applied after `enabled`.
    pub enabled_ratio: Option<f64>,
}

/// A content item added.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ContentAdded {
    /// Its id in the bank (the Pharos entry id).
    pub id: u64,
    /// Signal type → hash.
    pub signals: BTreeMap<String, String>,
}

/// A content item (`GET /c/bank/{name}/content/{id}`).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Content {
    /// The entry id.
    pub id: u64,
    /// 1: active; 0: disabled until enabled again; else disabled until this Unix time.
    pub disable_until_ts: i64,
    /// The URL the media was downloaded from, when added by URL.
    pub original_media_uri: Option<String>,
    /// Its bank.
    pub bank: Bank,
    /// Signal type → hash (with `include_signals=true`).
    pub signals: Option<BTreeMap<String, String>>,
    /// `content_id`, `content_uri`, `json`, `collab`, when any was given.
    pub metadata: Option<serde_json::Value>,
    /// Its note.
    pub note: Option<String>,
}

/// `PUT /c/bank/{name}/content/{id}`.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ContentUpdate {
    /// 1, 0 or a Unix time (at most 5 years ahead); an integer or its text.
    pub disable_until_ts: Option<serde_json::Value>,
    /// A note (at most 255 characters); `""` or null clears it.
    pub note: Option<String>,
}

/// `GET /m/raw_lookup`.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct RawLookup {
    /// Entry ids, or `{"bank_content_id": id, "distance": "d"}` objects with `include_distance=true`.
    pub matches: Vec<serde_json::Value>,
}

/// `/m/hash_lookup`.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct HashLookup {
    /// Signal type → hash, as `/h/hash`.
    pub hashes: BTreeMap<String, String>,
    /// Signal type → bank → matches, as `POST /m/lookup`.
    pub matches: serde_json::Value,
}

/// `POST /m/lookup_batch`.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct LookupBatch {
    /// The signals' type.
    pub signal_type: String,
    /// At most 10,000 hashes.
    pub signals: Vec<String>,
    /// Bank names (a list, or HMA's comma-separated text).
    pub banks: Option<serde_json::Value>,
    /// Seed of the matching-ratio coin flip.
    pub seed: Option<String>,
    /// Every bank takes part, whatever its ratio.
    pub bypass_coinflip: Option<bool>,
}

/// `POST /m/lookup_batch`'s answer.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct LookupBatchResults {
    /// One `{"BANK": [{"bank_content_id": id, "distance": "d"}]}` per signal, in order.
    pub results: Vec<serde_json::Value>,
}

/// `POST /c/bank/{name}/signals`.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct SignalsBatch {
    /// At most 100,000 objects like `/signal`'s body: `{"pdq": "<hash>", "note": "…", "metadata": {…}}`.
    pub signals: Vec<serde_json::Value>,
}

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token of the daemon's auth file (`--auth`); the role each route needs is listed as \
                         its scope. Without `--auth` no credentials are needed (loopback only).",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document's source: every route.
#[derive(OpenApi)]
#[openapi(
    info(title = "Pharos HTTP API (HMA-compatible)", description = "Meta's HMA (OpenMediaMatch) REST API as Pharos serves it, plus Pharos's batch and hash-and-lookup routes. Errors are `{\"message\": \"…\"}`; request validation failures are 422 with a list of `{type, loc, msg}`."),
    paths(
        super::status, super::status_live,
        super::hashing::hash_url, super::hashing::hash_upload,
        super::matching::raw_lookup, super::matching::lookup_get, super::matching::lookup_post,
        super::matching::lookup_batch, super::matching::hash_lookup_url, super::matching::hash_lookup_upload,
        super::matching::compare, super::matching::index_status,
        super::curation::list_banks, super::curation::create_bank, super::curation::get_bank,
        super::curation::update_bank, super::curation::delete_bank, super::curation::add_signal,
        super::curation::add_signals, super::curation::add_content, super::curation::get_content,
        super::curation::update_content, super::curation::delete_content, super::curation::signal_types,
        super::curation::signal_type_index, super::curation::content_types,
    ),
    components(schemas(Message, Bank, BankCreate, BankUpdate, ContentAdded, Content, ContentUpdate, RawLookup,
        HashLookup, LookupBatch, LookupBatchResults, SignalsBatch)),
    modifiers(&Bearer),
)]
pub struct ApiDoc;

/// The document, as JSON.
pub fn document() -> serde_json::Value {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    serde_json::to_value(&doc).unwrap_or_default()
}

/// `GET /openapi.json`.
pub(crate) async fn serve() -> Response {
    static DOC: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    axum::Json(DOC.get_or_init(document).clone()).into_response()
}
