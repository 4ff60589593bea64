//! `/c`: banks, their content (entries) and signals, signal and content types.
//!
//! An HMA bank is a Pharos bank; its content items are the bank's entries, with the entry id as HMA's
//! content id (ids count per bank in Pharos, from 0; HMA's count across banks, from 1). A Pharos bank holds
//! one signal type, so each content item carries one signal: a bank made here is a PDQ bank unless the
//! request names another `signal_type` (Pharos's addition to HMA's body).
//!
//! What HMA keeps on a content item maps onto the entry's fields: `metadata.content_id` → external id,
//! `metadata.content_uri` and `metadata.json` → the entry's metadata (`content_uri`, `json`), `note` → note,
//! the URL the media came from → metadata `original_media_uri`, `disable_until_ts` → the entry's state
//! (1: active, 0: disabled until enabled again, a Unix time: disabled until then).

use super::hashing::{fetch_url, hash_media, read_upload};
use super::hma::{self, SignalType};
use super::matching::{kind_size, now_s, selected_types};
use super::{caller, flask_json, json, model_json, unprocessable, Api, ApiError, ApiResult, Params};
use crate::banks::BankSummary;
use crate::error::Error;
use crate::matcher::AnyHash;
use crate::server::auth::Caller;
use crate::server::banks::audit_change;
use crate::store::{AuditEvent, BankPolicy, EntryMeta, EntryState, EntryUpdate, NewEntry, FULL_RATIO_PPM};
use axum::extract::{Path, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use axum::Extension;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Most signals in one `POST /c/bank/{name}/signals`.
pub(crate) const MAX_SIGNALS: usize = 100_000;

/// Longest note, as HMA's column.
const MAX_NOTE_CHARS: usize = 255;

/// Metadata keys an entry keeps for HMA.
const CONTENT_URI: &str = "content_uri";
const JSON_KEY: &str = "json";
const ORIGINAL_URI: &str = "original_media_uri";

fn bank_json(b: &BankSummary) -> Value {
    json!({ "matching_enabled_ratio": b.policy.match_ratio(), "name": b.name })
}

fn bank_not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("bank '{}' not found", hma::clip(name)))
}

/// The bank, or HMA's 404 (after the caller's grant: a restricted caller learns nothing of other banks).
fn find_bank(api: &Api, caller: &Caller, name: &str) -> ApiResult<BankSummary> {
    caller.check_bank(name)?;
    api.shared.banks.summary_of(name).map_err(|_| bank_not_found(name))
}

/// Runs a store call on the blocking pool.
async fn blocking<T: Send + 'static>(
    api: &Api,
    f: impl FnOnce(&crate::server::Shared) -> Result<T, Error> + Send + 'static,
) -> ApiResult<T> {
    let shared = api.shared.clone();
    tokio::task::spawn_blocking(move || f(&shared))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("task failed: {e}")))?
        .map_err(ApiError::from)
}

async fn read_body(req: Request, limit: usize) -> ApiResult<(axum::http::request::Parts, bytes::Bytes)> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "The data value transmitted exceeds the capacity limit.")
    })?;
    Ok((parts, bytes))
}

/// A ratio from JSON (HMA's float), in millionths; 400 outside 0 to 1.
fn ratio_ppm(v: &Value, what: &str) -> ApiResult<Option<u32>> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => match n.as_f64() {
            Some(r) if (0.0..=1.0).contains(&r) => Ok(Some((r * f64::from(FULL_RATIO_PPM)).round() as u32)),
            _ => Err(ApiError::bad_request(format!("{what} must be between 0 and 1"))),
        },
        Value::Bool(b) => Ok(Some(if *b { FULL_RATIO_PPM } else { 0 })),
        other => Err(unprocessable(what, "float_parsing", "Input should be a valid number", other.clone())),
    }
}

/// `GET /c/banks`: every bank the caller may use.
#[utoipa::path(get, path = "/c/banks", tag = "Curation",
    responses((status = 200, body = Vec<super::openapi::Bank>)), security(("bearer" = [])))]
pub(crate) async fn list_banks(Extension(api): Extension<Arc<Api>>, req: Request) -> Response {
    let caller = caller(req.extensions());
    let banks: Vec<Value> =
        api.shared.banks.list().iter().filter(|b| caller.may_use(&b.name)).map(bank_json).collect();
    json(Value::Array(banks))
}

/// `POST /c/banks`: creates a bank (a PDQ bank unless `signal_type` names another).
#[utoipa::path(post, path = "/c/banks", tag = "Curation",
    request_body(content = super::openapi::BankCreate, content_type = "application/json"),
    responses((status = 201, body = super::openapi::Bank),
              (status = 400, description = "a name that is not UPPER_WITH_UNDERSCORE, a ratio outside 0..1, an unknown signal type", body = super::openapi::Message),
              (status = 403, description = "`Bank already exists`", body = super::openapi::Message),
              (status = 422, description = "no JSON object, or no `name`")),
    security(("bearer" = ["admin"])))]
pub(crate) async fn create_bank(Extension(api): Extension<Arc<Api>>, req: Request) -> ApiResult<Response> {
    let caller = caller(req.extensions());
    let (parts, body) = read_body(req, 1 << 20).await?;
    let o = model_json(&parts.headers, &body, "BankCreateRequest")?;
    let name = match o.get("name") {
        Some(Value::String(s)) => s.clone(),
        None => return Err(unprocessable("name", "missing", "Field required", Value::Object(o.clone()))),
        Some(v) => {
            return Err(unprocessable("name", "string_type", "Input should be a valid string", v.clone()))
        }
    };
    // HMA's quirk: `enabled_ratio` defaults to 1, so `enabled` alone changes nothing.
    let ppm =
        ratio_ppm(o.get("enabled_ratio").unwrap_or(&Value::Null), "enabled_ratio")?.unwrap_or(FULL_RATIO_PPM);
    let st = match o.get("signal_type") {
        None | Some(Value::Null) => hma::signal_type("pdq").expect("pdq"),
        Some(Value::String(s)) => hma::signal_type(s)
            .ok_or_else(|| ApiError::bad_request(format!("No such signal type '{}'", hma::clip(s))))?,
        Some(_) => {
            return Err(unprocessable(
                "signal_type",
                "string_type",
                "Input should be a valid string",
                Value::Null,
            ))
        }
    };
    if !hma::valid_bank_name(&name) {
        return Err(ApiError::bad_request(hma::BANK_NAME_RULE));
    }
    caller.check_bank(&name)?;
    let policy =
        BankPolicy { match_ratio_ppm: (ppm != FULL_RATIO_PPM).then_some(ppm), ..BankPolicy::default() };
    let created = blocking(&api, move |s| {
        let b = s.banks.create_with(&name, st.kind, policy)?;
        audit_change(s, AuditEvent::BankCreated, &b.name, 0, None, &caller);
        Ok(b)
    })
    .await
    .map_err(|e| {
        if e.status == StatusCode::CONFLICT {
            ApiError::new(StatusCode::FORBIDDEN, "Bank already exists")
        } else {
            e
        }
    })?;
    tracing::info!(bank = %created.name, kind = %created.kind, "bank created (HTTP)");
    Ok((StatusCode::CREATED, axum::Json(bank_json(&created))).into_response())
}

/// `GET /c/bank/{name}`.
#[utoipa::path(get, path = "/c/bank/{name}", tag = "Curation", params(("name" = String, Path)),
    responses((status = 200, body = super::openapi::Bank), (status = 404, body = super::openapi::Message)),
    security(("bearer" = [])))]
pub(crate) async fn get_bank(
    Extension(api): Extension<Arc<Api>>,
    Path(name): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let caller = caller(req.extensions());
    Ok(json(bank_json(&find_bank(&api, &caller, &name)?)))
}

/// `PUT /c/bank/{name}`: sets `enabled` (ratio 1 or 0) and/or `enabled_ratio`. Renaming is not
/// supported (501): bank names are how partners, exports and the audit refer to a bank.
#[utoipa::path(put, path = "/c/bank/{name}", tag = "Curation", params(("name" = String, Path)),
    request_body(content = super::openapi::BankUpdate, content_type = "application/json"),
    responses((status = 200, body = super::openapi::Bank), (status = 404, body = super::openapi::Message),
              (status = 501, description = "a new `name`", body = super::openapi::Message)),
    security(("bearer" = ["admin"])))]
pub(crate) async fn update_bank(
    Extension(api): Extension<Arc<Api>>,
    Path(name): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let caller = caller(req.extensions());
    let (parts, body) = read_body(req, 1 << 20).await?;
    let o = model_json(&parts.headers, &body, "BankUpdateRequest")?;
    caller.check_bank(&name)?;
    if api.shared.banks.kind(&name).is_err() {
        return Err(ApiError::not_found("Bank not found"));
    }
    match o.get("name") {
        None | Some(Value::Null) => {}
        Some(Value::String(n)) if *n == name => {}
        Some(Value::String(n)) if !hma::valid_bank_name(n) => {
            return Err(ApiError::bad_request(hma::BANK_NAME_RULE))
        }
        Some(Value::String(_)) => {
            return Err(ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "renaming a bank is not supported by Pharos (create a bank and copy its entries)",
            ))
        }
        Some(v) => {
            return Err(unprocessable("name", "string_type", "Input should be a valid string", v.clone()))
        }
    }
    let enabled = match o.get("enabled") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(v) => {
            return Err(unprocessable("enabled", "bool_type", "Input should be a valid boolean", v.clone()))
        }
    };
    let ratio = ratio_ppm(o.get("enabled_ratio").unwrap_or(&Value::Null), "enabled_ratio")?;
    // `enabled_ratio` is applied after `enabled`, as in HMA.
    let ppm = ratio.or(enabled.map(|e| if e { FULL_RATIO_PPM } else { 0 }));
    let bank = match ppm {
        None => find_bank(&api, &caller, &name)?,
        Some(ppm) => {
            blocking(&api, move |s| {
                let b = s.banks.set_match_ratio(&name, ppm)?;
                audit_change(s, AuditEvent::PolicySet, &b.name, 0, None, &caller);
                Ok(b)
            })
            .await?
        }
    };
    let mut out = bank_json(&bank);
    // HMA answers the ratio set through `enabled` as an integer (1 or 0).
    if ratio.is_none() {
        if let Some(e) = enabled {
            out["matching_enabled_ratio"] = json!(i32::from(e));
        }
    }
    Ok(json(out))
}

/// `DELETE /c/bank/{name}`: deletes the bank and its entries; `{"message": "Done"}` even when there was
/// no such bank (as HMA).
#[utoipa::path(delete, path = "/c/bank/{name}", tag = "Curation", params(("name" = String, Path)),
    responses((status = 200, body = super::openapi::Message)), security(("bearer" = ["admin"])))]
pub(crate) async fn delete_bank(
    Extension(api): Extension<Arc<Api>>,
    Path(name): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let caller = caller(req.extensions());
    caller.check_bank(&name)?;
    let deleted = blocking(&api, move |s| match s.banks.delete(&name) {
        Ok(()) => {
            audit_change(s, AuditEvent::BankDeleted, &name, 0, None, &caller);
            tracing::info!(bank = %name, "bank deleted (HTTP)");
            Ok(())
        }
        Err(Error::UnknownBank(_)) => Ok(()),
        Err(e) => Err(e),
    })
    .await;
    deleted?;
    Ok(json(json!({ "message": "Done" })))
}

/// A note from JSON or a form: `""` and null are no note; at most 255 characters.
fn note_of(v: Option<&Value>) -> ApiResult<Option<String>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s.chars().count() > MAX_NOTE_CHARS => {
            Err(ApiError::bad_request("note must be at most 255 characters"))
        }
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::bad_request("note should be a string")),
    }
}

/// HMA's content metadata (`content_id`, `content_uri`, `json`; `collab` is dropped) into entry fields.
fn metadata_into(v: Option<&Value>, meta: &mut EntryMeta) -> ApiResult<()> {
    let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(()) };
    let Value::Object(o) = v else { return Err(ApiError::bad_request("metadata should be a json object")) };
    for (k, v) in o {
        match (k.as_str(), v) {
            (_, Value::Null) | ("collab", _) => {}
            ("content_id", Value::String(s)) => meta.external_id = Some(s.clone()),
            ("content_uri", Value::String(s)) => {
                meta.metadata.insert(CONTENT_URI.into(), s.clone());
            }
            ("json", Value::Object(_)) => {
                meta.metadata.insert(JSON_KEY.into(), v.to_string());
            }
            ("content_id" | "content_uri", _) => {
                return Err(ApiError::bad_request(format!(
                    "Invalid metadata: {k}: Input should be a valid string"
                )))
            }
            ("json", _) => {
                return Err(ApiError::bad_request(
                    "Invalid metadata: json: Input should be a valid dictionary",
                ))
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "Invalid metadata: {}: Extra inputs are not permitted",
                    hma::clip(k)
                )))
            }
        }
    }
    Ok(())
}

/// Adds content items to a bank (one transaction) and audits it: HMA's `{"id", "signals"}` answer of
/// each, in order.
async fn add_items(
    api: &Api,
    caller: &Arc<Caller>,
    bank: &str,
    items: Vec<(SignalType, NewEntry)>,
) -> ApiResult<Vec<Value>> {
    let answers: Vec<(&'static str, String)> =
        items.iter().map(|(st, e)| (st.name, e.hash.to_hex())).collect();
    let entries: Vec<NewEntry> = items.into_iter().map(|(_, e)| e).collect();
    let (bank, caller, count) = (bank.to_string(), caller.clone(), entries.len() as u64);
    let first = blocking(api, move |s| {
        let first = s.banks.add(&bank, &entries)?;
        audit_change(s, AuditEvent::EntriesAdded, &bank, first, Some(count), &caller);
        Ok(first)
    })
    .await?;
    Ok(answers
        .into_iter()
        .enumerate()
        .map(|(i, (name, text))| json!({ "id": first + i as u64, "signals": { name: text } }))
        .collect())
}

/// One signal of a `/signal` body: its type must be the bank's.
fn signal_entry(bank: &BankSummary, o: &Map<String, Value>) -> ApiResult<(SignalType, NewEntry)> {
    // The note first, as HMA checks it.
    let note = note_of(o.get("note"))?;
    let mut found: Option<(SignalType, AnyHash, String)> = None;
    for (k, v) in o {
        if k == "note" || k == "metadata" {
            continue;
        }
        let st = hma::signal_type(k)
            .ok_or_else(|| ApiError::bad_request(format!("No such signal type {}", hma::clip(k))))?;
        let text =
            v.as_str().ok_or_else(|| ApiError::bad_request(format!("Invalid {k} signal: not a string")))?;
        let h = hma::parse_signal(st, text)
            .map_err(|why| ApiError::bad_request(format!("Invalid {k} signal: {why}")))?;
        if found.is_some() {
            return Err(ApiError::bad_request(
                "a Pharos bank holds one signal type: send one signal per content item",
            ));
        }
        found = Some((st, h, k.clone()));
    }
    let (st, hash, _) = found.ok_or_else(|| ApiError::bad_request("No signals given"))?;
    if st.kind != bank.kind {
        return Err(ApiError::bad_request(format!(
            "bank '{}' holds {} signals, not {}: a Pharos bank holds one signal type",
            bank.name,
            hma::signal_type_of(bank.kind).name,
            st.name
        )));
    }
    let mut meta = EntryMeta { note, ..EntryMeta::default() };
    metadata_into(o.get("metadata"), &mut meta)?;
    Ok((st, NewEntry { hash, meta, added_ms: None, state: EntryState::Active }))
}

/// `POST /c/bank/{name}/signal`: adds one content item from its hash: `{"<type>": "<hash>", "note": …}`.
#[utoipa::path(post, path = "/c/bank/{name}/signal", tag = "Curation", params(("name" = String, Path)),
    request_body(content = Object, content_type = "application/json", description = "`{\"pdq\": \"<64 hex>\", \"note\": \"…\"}`"),
    responses((status = 200, body = super::openapi::ContentAdded), (status = 400, body = super::openapi::Message),
              (status = 404, body = super::openapi::Message)),
    security(("bearer" = ["write"])))]
pub(crate) async fn add_signal(
    Extension(api): Extension<Arc<Api>>,
    Path(name): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let caller = caller(req.extensions());
    let (parts, body) = read_body(req, 1 << 20).await?;
    let bank = find_bank(&api, &caller, &name)?;
    let v = flask_json(&parts.headers, &body)?;
    let Value::Object(o) = v else { return Err(ApiError::bad_request("the body must be a JSON object")) };
    let item = signal_entry(&bank, &o)?;
    let mut added = add_items(&api, &caller, &name, vec![item]).await?;
    Ok(json(added.swap_remove(0)))
}

/// `POST /c/bank/{name}/signals` (Pharos): many content items at once, in one transaction:
/// `{"signals": [{"pdq": "<hash>", "note": …, "metadata": {…}}, …]}` → `[{"id": …, "signals": {…}}, …]`.
#[utoipa::path(post, path = "/c/bank/{name}/signals", tag = "Curation (Pharos)", params(("name" = String, Path)),
    request_body(content = super::openapi::SignalsBatch, content_type = "application/json"),
    responses((status = 200, body = Vec<super::openapi::ContentAdded>), (status = 400, body = super::openapi::Message),
              (status = 404, body = super::openapi::Message)),
    security(("bearer" = ["write"])))]
pub(crate) async fn add_signals(
    Extension(api): Extension<Arc<Api>>,
    Path(name): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let caller = caller(req.extensions());
    let (parts, body) = read_body(req, 256 << 20).await?;
    let bank = find_bank(&api, &caller, &name)?;
    let v = flask_json(&parts.headers, &body)?;
    let list = v
        .get("signals")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::bad_request("signals (a list of objects) is required"))?;
    if list.is_empty() {
        return Err(ApiError::bad_request("No signals given"));
    }
    if list.len() > MAX_SIGNALS {
        return Err(ApiError::bad_request(format!(
            "{} signals; at most {MAX_SIGNALS} per request",
            list.len()
        )));
    }
    let mut items = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let Value::Object(o) = item else {
            return Err(ApiError::bad_request(format!("signals[{i}] is not an object")));
        };
        items.push(
            signal_entry(&bank, o)
                .map_err(|e| ApiError::new(e.status, format!("signals[{i}]: {}", e.message)))?,
        );
    }
    Ok(json(Value::Array(add_items(&api, &caller, &name, items).await?)))
}

/// `POST /c/bank/{name}/content`: hashes media (a multipart upload, or `?url=`) and adds it.
#[utoipa::path(post, path = "/c/bank/{name}/content", tag = "Curation", params(("name" = String, Path),
        ("url" = Option<String>, Query, description = "media to download (else a multipart upload)"),
        ("content_type" = Option<String>, Query), ("types" = Option<String>, Query)),
    request_body(content_type = "multipart/form-data", description = "one file in a field named `photo` or `video`, optional `metadata` (JSON text) and `note`; with `url`, optionally a JSON body `{\"metadata\": {…}, \"note\": …}`"),
    responses((status = 200, body = super::openapi::ContentAdded), (status = 400, body = super::openapi::Message),
              (status = 404, body = super::openapi::Message)),
    security(("bearer" = ["write"])))]
pub(crate) async fn add_content(
    Extension(api): Extension<Arc<Api>>,
    Path(name): Path<String>,
    req: Request,
) -> ApiResult<Response> {
    let caller = caller(req.extensions());
    let p = Params::parse(req.uri().query())?;
    let bank = find_bank(&api, &caller, &name)?;
    let mut meta = EntryMeta::default();
    let (content, bytes) = match p.get("url").filter(|u| !u.is_empty()) {
        Some(url) => {
            let (parts, body) = read_body(req, 1 << 20).await?;
            if !body.is_empty() {
                let v = flask_json(&parts.headers, &body)?;
                let Value::Object(o) = v else {
                    return Err(ApiError::bad_request("metadata should be a json object"));
                };
                meta.note = note_of(o.get("note"))?;
                metadata_into(o.get("metadata"), &mut meta)?;
            }
            meta.metadata.insert(ORIGINAL_URI.into(), url.to_string());
            fetch_url(&api, url, p.get("content_type")).await?
        }
        None => {
            let is_multipart = req
                .headers()
                .get(axum::http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("multipart/form-data"));
            if !is_multipart {
                return Err(ApiError::bad_request("Neither `url` nor multipart file upload was received"));
            }
            let upload = read_upload(req).await?;
            if let Some(n) = upload.form.get("note") {
                meta.note = note_of(Some(&Value::String(n.clone())))?;
            }
            if let Some(m) = upload.form.get("metadata") {
                let v: Value = serde_json::from_str(m)
                    .map_err(|_| ApiError::bad_request("metadata form field must be valid JSON"))?;
                metadata_into(Some(&v), &mut meta)?;
            }
            (upload.content, upload.bytes)
        }
    };
    let computed = hash_media(&api, &caller, content, bytes, p.get("types")).await?;
    if computed.text.is_empty() {
        return Err(ApiError::bad_request("No signals given"));
    }
    // One signal per content item: the one of the bank's kind.
    let st = hma::signal_type_of(bank.kind);
    let Some((_, hash)) = computed.hashes.iter().find(|(s, _)| s.kind == bank.kind) else {
        if computed.text.keys().any(|k| hma::signal_type(k).is_some_and(|s| s.kind == bank.kind)) {
            // A photo below PDQ quality 50 (HMA: `""`, then refused).
            return Err(ApiError::bad_request(format!("Invalid {} signal: invalid PDQ hash", st.name)));
        }
        return Err(ApiError::bad_request(format!(
            "bank '{}' holds {} signals; this media gave {}",
            bank.name,
            st.name,
            computed.text.keys().copied().collect::<Vec<_>>().join(", ")
        )));
    };
    let entry = NewEntry { hash: *hash, meta, added_ms: None, state: EntryState::Active };
    let mut added = add_items(&api, &caller, &name, vec![(st, entry)]).await?;
    Ok(json(added.swap_remove(0)))
}

/// The content id of a path, or Flask's HTML 404 (HMA's route takes only integers).
fn content_id(id: &str) -> Option<u64> {
    id.parse::<u64>().ok().filter(|_| id.bytes().all(|b| b.is_ascii_digit()))
}

/// HMA's `disable_until_ts` of an entry state.
fn disable_until_ts(state: EntryState) -> i64 {
    match state {
        EntryState::Active => 1,
        EntryState::Disabled { until_ms: None } => 0,
        EntryState::Disabled { until_ms: Some(ms) } => (ms / 1000) as i64,
    }
}

/// The user metadata HMA shows, or `None` when the entry has none.
fn user_metadata(meta: &EntryMeta) -> Option<Value> {
    let uri = meta.metadata.get(CONTENT_URI);
    let js = meta.metadata.get(JSON_KEY).and_then(|s| serde_json::from_str::<Value>(s).ok());
    if meta.external_id.is_none() && uri.is_none() && js.is_none() {
        return None;
    }
    Some(json!({ "content_id": meta.external_id, "content_uri": uri, "json": js }))
}

/// `GET /c/bank/{name}/content/{id}`: a content item (its signal only with `include_signals=true`).
#[utoipa::path(get, path = "/c/bank/{name}/content/{id}", tag = "Curation",
    params(("name" = String, Path), ("id" = u64, Path),
           ("include_signals" = Option<bool>, Query, description = "add `signals` (needs the `read` role)"),
           ("include_metadata" = Option<bool>, Query, description = "add `metadata` [default: true]")),
    responses((status = 200, body = super::openapi::Content), (status = 404, body = super::openapi::Message)),
    security(("bearer" = ["read"])))]
pub(crate) async fn get_content(
    Extension(api): Extension<Arc<Api>>,
    Path((name, id)): Path<(String, String)>,
    req: Request,
) -> ApiResult<Response> {
    let caller = caller(req.extensions());
    let Some(id) = content_id(&id) else { return Ok(super::flask_404().await) };
    let p = Params::parse(req.uri().query())?;
    let include_signals = p.get("include_signals").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let include_metadata = p.get("include_metadata").is_none_or(|v| v.eq_ignore_ascii_case("true"));
    let bank = find_bank(&api, &caller, &name)?;
    if include_signals && !caller.may_read(&name) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("caller '{}' lacks the 'read' role needed for include_signals", caller.label()),
        ));
    }
    let (hash, meta, state) = entry_of(&api, &name, id).await?;
    let mut out = json!({
        "id": id,
        "disable_until_ts": disable_until_ts(state),
        "original_media_uri": meta.metadata.get(ORIGINAL_URI),
        "bank": bank_json(&bank),
    });
    if include_signals {
        out["signals"] = json!({ hma::signal_type_of(bank.kind).name: hash.to_hex() });
    }
    if include_metadata {
        if let Some(mut m) = user_metadata(&meta) {
            m["collab"] = Value::Null;
            out["metadata"] = m;
        }
    }
    if let Some(n) = &meta.note {
        out["note"] = json!(n);
    }
    Ok(json(out))
}

async fn entry_of(api: &Api, bank: &str, id: u64) -> ApiResult<(AnyHash, EntryMeta, EntryState)> {
    let b = bank.to_string();
    blocking(api, move |s| s.banks.entry(&b, id)).await.map_err(|e| {
        if e.status == StatusCode::NOT_FOUND {
            ApiError::not_found(format!("content '{id}' not found"))
        } else {
            e
        }
    })
}

/// `PUT /c/bank/{name}/content/{id}`: sets `disable_until_ts` and/or `note`.
#[utoipa::path(put, path = "/c/bank/{name}/content/{id}", tag = "Curation",
    params(("name" = String, Path), ("id" = u64, Path)),
    request_body(content = super::openapi::ContentUpdate, content_type = "application/json"),
    responses((status = 200, body = Object), (status = 400, body = super::openapi::Message), (status = 404, body = super::openapi::Message)),
    security(("bearer" = ["write"])))]
pub(crate) async fn update_content(
    Extension(api): Extension<Arc<Api>>,
    Path((name, id)): Path<(String, String)>,
    req: Request,
) -> ApiResult<Response> {
    let caller = caller(req.extensions());
    let Some(id) = content_id(&id) else { return Ok(super::flask_404().await) };
    let (parts, body) = read_body(req, 1 << 20).await?;
    let bank = find_bank(&api, &caller, &name)?;
    let v = flask_json(&parts.headers, &body)?;
    let (_, meta_before, state_before) = entry_of(&api, &name, id).await?;
    let mut update = EntryUpdate::default();
    if let Some(ts) = v.get("disable_until_ts").filter(|t| !t.is_null()) {
        let ts: i64 = match ts {
            Value::Number(n) => {
                n.as_i64().ok_or_else(|| ApiError::bad_request(format!("Invalid int: '{n}'")))?
            }
            Value::String(s) => s
                .trim()
                .parse()
                .map_err(|_| ApiError::bad_request(format!("Invalid int: '{}'", hma::clip(s))))?,
            other => return Err(ApiError::bad_request(format!("Invalid int: '{other}'"))),
        };
        if ts < 0 {
            return Err(ApiError::bad_request("disable_until_ts must be a non-negative integer"));
        }
        if ts > now_s() + 5 * 366 * 86_400 {
            return Err(ApiError::bad_request("disable_until_ts must be less than 5 years in the future"));
        }
        update.state = Some(match ts {
            1 => EntryState::Active,
            0 => EntryState::Disabled { until_ms: None },
            t => EntryState::Disabled { until_ms: Some(t as u64 * 1000) },
        });
    }
    if v.get("note").is_some() {
        update.note = Some(note_of(v.get("note"))?);
    }
    let (meta, state) = if update.is_empty() {
        (meta_before, state_before)
    } else {
        let b = name.clone();
        let by = caller.clone();
        blocking(&api, move |s| {
            let after = s.banks.update(&b, &[(id, update)])?;
            audit_change(s, AuditEvent::EntriesUpdated, &b, id, Some(1), &by);
            Ok(after.into_iter().next().unwrap_or_default())
        })
        .await?
    };
    Ok(json(json!({
        "bank": bank_json(&bank),
        "collab_metadata": {},
        "disable_until_ts": disable_until_ts(state),
        "id": id,
        "note": meta.note,
        "original_media_uri": meta.metadata.get(ORIGINAL_URI),
        "user_metadata": user_metadata(&meta),
    })))
}

/// `DELETE /c/bank/{name}/content/{id}`: `{"deleted": 1}`, or 0 when the bank holds no such entry.
#[utoipa::path(delete, path = "/c/bank/{name}/content/{id}", tag = "Curation",
    params(("name" = String, Path), ("id" = u64, Path)),
    responses((status = 200, description = "`{\"deleted\": 0 | 1}`", body = Object), (status = 404, body = super::openapi::Message)),
    security(("bearer" = ["write"])))]
pub(crate) async fn delete_content(
    Extension(api): Extension<Arc<Api>>,
    Path((name, id)): Path<(String, String)>,
    req: Request,
) -> ApiResult<Response> {
    let caller = caller(req.extensions());
    let Some(id) = content_id(&id) else { return Ok(super::flask_404().await) };
    find_bank(&api, &caller, &name)?;
    let deleted = blocking(&api, move |s| match s.banks.remove(&name, &[id]) {
        Ok(()) => {
            audit_change(s, AuditEvent::EntriesRemoved, &name, id, Some(1), &caller);
            Ok(1)
        }
        Err(Error::UnknownEntry { .. }) => Ok(0),
        Err(e) => Err(e),
    })
    .await?;
    Ok(json(json!({ "deleted": deleted })))
}

/// `GET /c/signal_type`: every signal type (none can be switched off).
#[utoipa::path(get, path = "/c/signal_type", tag = "Curation",
    responses((status = 200, description = "`[{\"enabled_ratio\": 1.0, \"name\": \"pdq\"}, …]`", body = Vec<Object>)), security(("bearer" = [])))]
pub(crate) async fn signal_types() -> Response {
    json(Value::Array(
        hma::SIGNAL_TYPES.iter().map(|s| json!({ "enabled_ratio": 1.0, "name": s.name })).collect(),
    ))
}

/// `GET /c/signal_type/index`: per signal type, the size of its banks and of their index (always equal:
/// indexes follow every write).
#[utoipa::path(get, path = "/c/signal_type/index", tag = "Curation",
    params(("signal_type" = Option<String>, Query)),
    responses((status = 200, description = "`{\"<type>\": {\"db_size\", \"index_size\", \"index_out_of_date\", \"newest_db_item\", \"index_built_to\"}}`", body = Object),
              (status = 400, body = super::openapi::Message)),
    security(("bearer" = [])))]
pub(crate) async fn signal_type_index(
    Extension(api): Extension<Arc<Api>>,
    req: Request,
) -> ApiResult<Response> {
    let caller = caller(req.extensions());
    let p = Params::parse(req.uri().query())?;
    let mut out = Map::new();
    for st in selected_types(p.get("signal_type"))? {
        let size = kind_size(&api, &caller, st.kind);
        let ts = if size > 0 { now_s() } else { -1 };
        out.insert(
            st.name.into(),
            json!({ "db_size": size, "index_size": size, "index_out_of_date": false, "newest_db_item": ts, "index_built_to": ts }),
        );
    }
    Ok(json(Value::Object(out)))
}

/// `GET /c/content_type`.
#[utoipa::path(get, path = "/c/content_type", tag = "Curation",
    responses((status = 200, description = "`[{\"enabled\": true, \"name\": \"photo\"}, …]`", body = Vec<Object>)), security(("bearer" = [])))]
pub(crate) async fn content_types() -> Response {
    json(Value::Array(
        hma::ContentType::ALL.iter().map(|c| json!({ "enabled": true, "name": c.name() })).collect(),
    ))
}
