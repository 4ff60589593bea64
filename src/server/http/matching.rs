//! `/m`: lookups (one signal, many signals, an upload or a URL), hash comparison, index status.

use super::hashing::{fetch_url, hash_media, read_upload, Computed};
use super::hma::{self, SignalType};
use super::{caller, flask_json, json, Api, ApiError, ApiResult, Params};
use crate::banks::BankQuery;
use crate::matcher::{AnyHash, Kind};
use crate::server::auth::Caller;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Most signals in one `POST /m/lookup_batch`.
pub(crate) const MAX_BATCH: usize = 10_000;

/// Largest `POST /m/lookup_batch` body (10,000 SHA-256 signals in JSON are under 1 MiB).
const MAX_BATCH_BODY: usize = 16 << 20;

/// How a lookup treats banks' matching ratios.
#[derive(Clone, Debug)]
pub(crate) enum Coin {
    /// `raw_lookup`: every bank of the kind, whatever its ratio.
    Ignore,
    /// HMA's lookups: one flip per request and signal type; a bank takes part when its ratio is at least
    /// the flip. `bypass` (POST lookup's `bypass_coinflip=true`) makes every bank take part.
    Flip { seed: Option<String>, bypass: bool },
}

impl Coin {
    /// The coin of an upload or URL lookup's query: `seed`, and `bypass_coinflip` compared exactly with
    /// `true`, as HMA's POST lookup reads it.
    fn of_query(p: &Params) -> Coin {
        Coin::Flip {
            seed: p.get("seed").map(str::to_string),
            bypass: p.get("bypass_coinflip") == Some("true"),
        }
    }
}

/// Matches by bank: bank name → (entry id, distance), ids ascending.
pub(crate) type ByBank = BTreeMap<String, Vec<(u64, u32)>>;

/// The banks a lookup of a signal type searches: of its kind, granted to the caller, named by `banks`
/// when given (HMA's comma-separated list, items not trimmed), not negative (a negative bank's entries
/// never match; it still withholds matches of the others), taking part by the coin.
fn candidates(
    api: &Api,
    caller: &Caller,
    st: SignalType,
    banks: Option<&str>,
    coin: &Coin,
) -> ApiResult<Vec<String>> {
    let named: Option<BTreeSet<&str>> = banks.filter(|b| !b.is_empty()).map(|b| b.split(',').collect());
    if let Some(named) = &named {
        for b in named {
            caller.check_bank(b)?;
        }
    }
    let flip = match coin {
        Coin::Ignore | Coin::Flip { bypass: true, .. } => None,
        Coin::Flip { seed, bypass: false } => Some(hma::coin_flip(seed.as_deref(), st.name)),
    };
    Ok(api
        .shared
        .banks
        .list()
        .into_iter()
        .filter(|b| b.kind == st.kind && !b.policy.negative && caller.may_use(&b.name))
        .filter(|b| named.as_ref().is_none_or(|n| n.contains(b.name.as_str())))
        .filter(|b| flip.is_none_or(|f| hma::takes_part(b.policy.match_ratio(), f)))
        .map(|b| b.name)
        .collect())
}

/// Searches queries of one signal type in `targets` (on the blocking pool): one [`ByBank`] per query.
async fn search(
    api: &Api,
    caller: &Caller,
    targets: Vec<String>,
    queries: Vec<(AnyHash, Option<u32>)>,
) -> ApiResult<Vec<ByBank>> {
    if targets.is_empty() || queries.is_empty() {
        return Ok(vec![ByBank::new(); queries.len()]);
    }
    let who = caller.name().map(str::to_string);
    let qs: Vec<BankQuery> = queries
        .into_iter()
        .map(|(h, quality)| BankQuery { hashes: vec![h], quality, request_id: None, caller: who.clone() })
        .collect();
    let shared = api.shared.clone();
    let start = std::time::Instant::now();
    let found = tokio::task::spawn_blocking(move || {
        if qs.len() == 1 {
            shared.banks.search(&targets, &qs[0], None).map(|r| vec![r])
        } else {
            shared.banks.search_many(&targets, &qs, None)
        }
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("match task failed: {e}")))??;
    api.shared.metrics.stage_seconds.with_label_values(&["match"]).observe(start.elapsed().as_secs_f64());
    Ok(found
        .into_iter()
        .map(|r| {
            let mut by = ByBank::new();
            for h in r.hits {
                by.entry(h.bank).or_default().push((h.id, h.distance));
            }
            for v in by.values_mut() {
                v.sort_unstable();
            }
            by
        })
        .collect())
}

/// One signal's lookup as HMA answers it: `{"BANK": [{"bank_content_id": id, "distance": "d"}]}`.
fn by_bank_json(kind: Kind, by: &ByBank) -> Value {
    let mut out = Map::new();
    for (bank, hits) in by {
        let list: Vec<Value> = hits
            .iter()
            .map(|(id, d)| json!({ "bank_content_id": id, "distance": hma::distance_text(kind, *d) }))
            .collect();
        out.insert(bank.clone(), Value::Array(list));
    }
    Value::Object(out)
}

/// The signal type of a request's `signal_type`, or HMA's 400.
fn signal_type_of(name: &str) -> ApiResult<SignalType> {
    hma::signal_type(name)
        .ok_or_else(|| ApiError::bad_request(format!("No such SignalType '{}'", hma::clip(name))))
}

/// A lookup's signal, or HMA's 400 (`invalid signal: invalid PDQ hash`).
fn signal_of(st: SignalType, text: &str) -> ApiResult<AnyHash> {
    hma::parse_signal(st, text).map_err(|why| ApiError::bad_request(format!("invalid signal: {why}")))
}

/// `GET /m/raw_lookup`: the entries within the signal type's threshold of one signal, from every bank
/// of its kind (or those named), regardless of matching ratios.
#[utoipa::path(get, path = "/m/raw_lookup", tag = "Matching",
    params(("signal" = String, Query, description = "the hash (PDQ: 64 lowercase hex digits)"),
           ("signal_type" = String, Query, description = "`pdq`, `video_md5`, `phash`, `md5`, `sha1` or `sha256`"),
           ("banks" = Option<String>, Query, description = "comma-separated bank names"),
           ("include_distance" = Option<bool>, Query, description = "answer `{bank_content_id, distance}` objects instead of ids")),
    responses((status = 200, description = "`{\"matches\": [id, …]}` or `{\"matches\": [{\"bank_content_id\": id, \"distance\": \"d\"}, …]}`, nearest first", body = super::openapi::RawLookup),
              (status = 400, body = super::openapi::Message), (status = 422, description = "`signal` or `signal_type` missing")),
    security(("bearer" = ["match"])))]
pub(crate) async fn raw_lookup(Extension(api): Extension<Arc<Api>>, req: Request) -> ApiResult<Response> {
    let caller = caller(req.extensions());
    let p = Params::parse(req.uri().query())?;
    let signal = p.required("signal")?;
    let st_name = p.required("signal_type")?;
    let include_distance = p.pydantic_bool("include_distance", false)?;
    let st = signal_type_of(st_name)?;
    let hash = signal_of(st, signal)?;
    let targets = candidates(&api, &caller, st, p.get("banks"), &Coin::Ignore)?;
    let found = search(&api, &caller, targets, vec![(hash, None)]).await?.pop().unwrap_or_default();
    let mut hits: Vec<(u32, u64)> = found.values().flatten().map(|(id, d)| (*d, *id)).collect();
    hits.sort_unstable();
    let matches: Vec<Value> = if include_distance {
        hits.iter()
            .map(|(d, id)| json!({ "bank_content_id": id, "distance": hma::distance_text(st.kind, *d) }))
            .collect()
    } else {
        hits.iter().map(|(_, id)| json!(id)).collect()
    };
    Ok(json(json!({ "matches": matches })))
}

/// Looks up every hash computed from a file: `{"<type>": {"BANK": [...]}}`.
async fn lookup_computed(
    api: &Api,
    caller: &Caller,
    computed: &Computed,
    banks: Option<&str>,
    coin: &Coin,
    hma_quirks: bool,
) -> ApiResult<Map<String, Value>> {
    let mut out = Map::new();
    for name in computed.text.keys() {
        let st = hma::signal_type(name).expect("computed signal types are known");
        let found = match computed.hashes.iter().find(|(s, _)| s.name == *name) {
            Some((_, h)) => {
                let targets = candidates(api, caller, st, banks, coin)?;
                search(api, caller, targets, vec![(*h, computed.quality)]).await?.pop().unwrap_or_default()
            }
            // A PDQ below quality 50 (`""`): HMA looks that up and refuses it; Pharos's own
            // hash_lookup answers no matches for it instead.
            None if hma_quirks => return Err(ApiError::bad_request("invalid signal: invalid PDQ hash")),
            None => ByBank::new(),
        };
        out.insert(name.to_string(), by_bank_json(st.kind, &found));
    }
    Ok(out)
}

/// `GET /m/lookup`: one signal (`signal` + `signal_type`) or a URL to hash; matches by bank, after
/// the banks' matching ratios.
#[utoipa::path(get, path = "/m/lookup", tag = "Matching",
    params(("signal" = Option<String>, Query, description = "the hash (with `signal_type`)"),
           ("signal_type" = Option<String>, Query, description = "its signal type; with `url`, selects that type's answer"),
           ("url" = Option<String>, Query, description = "media to download and hash instead (host allowed by `http_fetch_hosts`)"),
           ("content_type" = Option<String>, Query, description = "with `url`: `photo` or `video`"),
           ("types" = Option<String>, Query, description = "with `url`: signal types to hash"),
           ("banks" = Option<String>, Query, description = "comma-separated bank names"),
           ("seed" = Option<String>, Query, description = "makes the matching-ratio coin flip a function of this text")),
    responses((status = 200, description = "signal form: `{\"BANK\": [{\"bank_content_id\": id, \"distance\": \"d\"}]}`; URL form: the same under each signal type", body = Object),
              (status = 400, body = super::openapi::Message)),
    security(("bearer" = ["match"])))]
pub(crate) async fn lookup_get(Extension(api): Extension<Arc<Api>>, req: Request) -> ApiResult<Response> {
    let caller = caller(req.extensions());
    let p = Params::parse(req.uri().query())?;
    // Validated as HMA's model does, though GET ignores it.
    p.pydantic_bool("bypass_coinflip", false)?;
    let coin = Coin::Flip { seed: p.get("seed").map(str::to_string), bypass: false };
    let banks = p.get("banks");
    if let Some(url) = p.get("url").filter(|u| !u.is_empty()) {
        let (content, bytes) = fetch_url(&api, url, p.get("content_type")).await?;
        let computed = hash_media(&api, &caller, content, bytes, p.get("types")).await?;
        let all = lookup_computed(&api, &caller, &computed, banks, &coin, true).await?;
        return Ok(json(match p.get("signal_type") {
            Some(st) => all.get(st).cloned().unwrap_or_else(|| json!({})),
            None => Value::Object(all),
        }));
    }
    let (Some(signal), Some(st_name)) =
        (p.get("signal").filter(|s| !s.is_empty()), p.get("signal_type").filter(|s| !s.is_empty()))
    else {
        return Err(ApiError::bad_request("Either url or both signal and signal_type are required"));
    };
    // The route is charged per image by its handler; this form has none, so it is one request.
    caller.charge(&api.shared.metrics)?;
    let st = signal_type_of(st_name)?;
    let hash = signal_of(st, signal)?;
    let targets = candidates(&api, &caller, st, banks, &coin)?;
    let found = search(&api, &caller, targets, vec![(hash, None)]).await?.pop().unwrap_or_default();
    Ok(json(by_bank_json(st.kind, &found)))
}

/// `POST /m/lookup`: hashes an upload (multipart, field `photo` or `video`) and looks up every hash.
#[utoipa::path(post, path = "/m/lookup", tag = "Matching",
    params(("types" = Option<String>, Query, description = "signal types to hash"),
           ("banks" = Option<String>, Query, description = "comma-separated bank names"),
           ("seed" = Option<String>, Query, description = "seed of the matching-ratio coin flip"),
           ("bypass_coinflip" = Option<String>, Query, description = "`true`: every bank takes part, whatever its ratio")),
    request_body(content_type = "multipart/form-data", description = "one file, in a field named `photo` or `video`"),
    responses((status = 200, description = "`{\"<type>\": {\"BANK\": [{\"bank_content_id\": id, \"distance\": \"d\"}]}}`", body = Object),
              (status = 400, body = super::openapi::Message)),
    security(("bearer" = ["match"])))]
pub(crate) async fn lookup_post(Extension(api): Extension<Arc<Api>>, req: Request) -> ApiResult<Response> {
    let caller = caller(req.extensions());
    let p = Params::parse(req.uri().query())?;
    let coin = Coin::of_query(&p);
    let banks = p.get("banks").map(str::to_string);
    let types = p.get("types").map(str::to_string);
    let upload = read_upload(req).await?;
    let computed = hash_media(&api, &caller, upload.content, upload.bytes, types.as_deref()).await?;
    Ok(json(Value::Object(lookup_computed(&api, &caller, &computed, banks.as_deref(), &coin, true).await?)))
}

/// `GET /m/hash_lookup?url=…` (Pharos): the hashes of a URL's media and their matches, in one call.
#[utoipa::path(get, path = "/m/hash_lookup", tag = "Matching (Pharos)",
    params(("url" = String, Query, description = "media to download and hash"),
           ("content_type" = Option<String>, Query), ("types" = Option<String>, Query),
           ("banks" = Option<String>, Query), ("seed" = Option<String>, Query),
           ("bypass_coinflip" = Option<String>, Query)),
    responses((status = 200, description = "`{\"hashes\": {\"<type>\": \"<hash>\"}, \"matches\": {\"<type>\": {\"BANK\": [...]}}}`", body = super::openapi::HashLookup),
              (status = 400, body = super::openapi::Message)),
    security(("bearer" = ["match"])))]
pub(crate) async fn hash_lookup_url(
    Extension(api): Extension<Arc<Api>>,
    req: Request,
) -> ApiResult<Response> {
    let caller = caller(req.extensions());
    let p = Params::parse(req.uri().query())?;
    let url = p.required("url")?;
    let coin = Coin::of_query(&p);
    let (content, bytes) = fetch_url(&api, url, p.get("content_type")).await?;
    let computed = hash_media(&api, &caller, content, bytes, p.get("types")).await?;
    let matches = lookup_computed(&api, &caller, &computed, p.get("banks"), &coin, false).await?;
    Ok(json(json!({ "hashes": computed.text, "matches": matches })))
}

/// `POST /m/hash_lookup` (Pharos): the hashes of an upload and their matches, in one call (what HMA
/// issue 1827 asks for: `/h/hash` and `/m/lookup` answer only half each).
#[utoipa::path(post, path = "/m/hash_lookup", tag = "Matching (Pharos)",
    params(("types" = Option<String>, Query), ("banks" = Option<String>, Query), ("seed" = Option<String>, Query),
           ("bypass_coinflip" = Option<String>, Query)),
    request_body(content_type = "multipart/form-data", description = "one file, in a field named `photo` or `video`"),
    responses((status = 200, description = "`{\"hashes\": {…}, \"matches\": {…}}`", body = super::openapi::HashLookup),
              (status = 400, body = super::openapi::Message)),
    security(("bearer" = ["match"])))]
pub(crate) async fn hash_lookup_upload(
    Extension(api): Extension<Arc<Api>>,
    req: Request,
) -> ApiResult<Response> {
    let caller = caller(req.extensions());
    let p = Params::parse(req.uri().query())?;
    let coin = Coin::of_query(&p);
    let banks = p.get("banks").map(str::to_string);
    let types = p.get("types").map(str::to_string);
    let upload = read_upload(req).await?;
    let computed = hash_media(&api, &caller, upload.content, upload.bytes, types.as_deref()).await?;
    let matches = lookup_computed(&api, &caller, &computed, banks.as_deref(), &coin, false).await?;
    Ok(json(json!({ "hashes": computed.text, "matches": matches })))
}

/// `POST /m/lookup_batch` (Pharos): many signals of one type in one call, searched in parallel.
#[utoipa::path(post, path = "/m/lookup_batch", tag = "Matching (Pharos)",
    request_body(content = super::openapi::LookupBatch, content_type = "application/json"),
    responses((status = 200, description = "`{\"results\": [{\"BANK\": [{\"bank_content_id\": id, \"distance\": \"d\"}]}, …]}`, one per signal, in order", body = super::openapi::LookupBatchResults),
              (status = 400, body = super::openapi::Message)),
    security(("bearer" = ["match"])))]
pub(crate) async fn lookup_batch(Extension(api): Extension<Arc<Api>>, req: Request) -> ApiResult<Response> {
    let caller = caller(req.extensions());
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, MAX_BATCH_BODY).await.map_err(|_| {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "The data value transmitted exceeds the capacity limit.")
    })?;
    let v = flask_json(&parts.headers, &body)?;
    let Value::Object(o) = v else { return Err(ApiError::bad_request("Request input was not a dict")) };
    let st_name = o
        .get("signal_type")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("signal_type (a string) is required"))?;
    let st = signal_type_of(st_name)?;
    let signals = o
        .get("signals")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::bad_request("signals (a list of hashes) is required"))?;
    if signals.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!(
            "{} signals; at most {MAX_BATCH} per request",
            signals.len()
        )));
    }
    let mut queries = Vec::with_capacity(signals.len());
    for (i, s) in signals.iter().enumerate() {
        let text =
            s.as_str().ok_or_else(|| ApiError::bad_request(format!("signals[{i}] is not a string")))?;
        let h = hma::parse_signal(st, text)
            .map_err(|why| ApiError::bad_request(format!("invalid signal at signals[{i}]: {why}")))?;
        queries.push((h, None));
    }
    let banks = match o.get("banks") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|b| {
                    b.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| ApiError::bad_request("banks must be a list of names"))
                })
                .collect::<ApiResult<Vec<_>>>()?
                .join(","),
        ),
        Some(_) => {
            return Err(ApiError::bad_request("banks must be a comma-separated string or a list of names"))
        }
    };
    let coin = Coin::Flip {
        seed: o.get("seed").and_then(Value::as_str).map(str::to_string),
        bypass: o.get("bypass_coinflip").and_then(Value::as_bool).unwrap_or(false),
    };
    let targets = candidates(&api, &caller, st, banks.as_deref(), &coin)?;
    let found = search(&api, &caller, targets, queries).await?;
    let results: Vec<Value> = found.iter().map(|b| by_bank_json(st.kind, b)).collect();
    Ok(json(json!({ "results": results })))
}

/// `POST /m/compare`: `{"<type>": [h1, h2]}` → `{"<type>": [matches, {"distance": d}]}`.
#[utoipa::path(post, path = "/m/compare", tag = "Matching",
    request_body(content = BTreeMap<String, Vec<String>>, content_type = "application/json", description = "signal type → exactly two hashes"),
    responses((status = 200, description = "signal type → `[match, {\"distance\": d}]` (PDQ matches at distance ≤ 31; digests: equal, `{}`)", body = Object),
              (status = 400, body = super::openapi::Message), (status = 415, body = super::openapi::Message)),
    security(("bearer" = ["match"])))]
pub(crate) async fn compare(req: Request) -> ApiResult<Response> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .map_err(|e| ApiError::bad_request(format!("cannot read the body: {e}")))?;
    let v = flask_json(&parts.headers, &body)?;
    let Value::Object(o) = v else { return Err(ApiError::bad_request("Request input was not a dict")) };
    let mut out = Map::new();
    for (name, pair) in &o {
        let Value::Array(pair) = pair else {
            return Err(ApiError::bad_request(format!(
                "Comparison hashes for {} was not a list",
                hma::clip(name)
            )));
        };
        if pair.len() != 2 {
            return Err(ApiError::bad_request("Comparison hash list length must be exactly 2"));
        }
        let st = signal_type_of(name)?;
        let parse = |v: &Value| -> ApiResult<AnyHash> {
            let text = v
                .as_str()
                .ok_or_else(|| ApiError::bad_request(format!("Invalid {name} hash: not a string")))?;
            hma::parse_signal(st, text)
                .map_err(|why| ApiError::bad_request(format!("Invalid {name} hash: {why}")))
        };
        let (a, b) = (parse(&pair[0])?, parse(&pair[1])?);
        let result = if st.kind.is_exact() {
            json!([a == b, {}])
        } else {
            let d = match (a, b) {
                (AnyHash::Pdq(x), AnyHash::Pdq(y)) => x.distance(&y),
                (AnyHash::Phash(x), AnyHash::Phash(y)) => x.distance(&y),
                _ => u32::MAX,
            };
            json!([d <= st.kind.default_radius(), { "distance": d }])
        };
        out.insert(name.clone(), result);
    }
    Ok(json(Value::Object(out)))
}

/// `GET /m/index/status`: per signal type, whether an index exists, its size and when it was last built
/// (Pharos's indexes follow every write at once: `built_to` is now while it holds entries).
#[utoipa::path(get, path = "/m/index/status", tag = "Matching",
    params(("signal_type" = Option<String>, Query, description = "only this signal type")),
    responses((status = 200, description = "`{\"<type>\": {\"present\": bool, \"built_to\": unix_s, \"size\": n}}`", body = Object),
              (status = 400, body = super::openapi::Message)),
    security(("bearer" = [])))]
pub(crate) async fn index_status(Extension(api): Extension<Arc<Api>>, req: Request) -> ApiResult<Response> {
    let caller = caller(req.extensions());
    let p = Params::parse(req.uri().query())?;
    let mut out = Map::new();
    for st in selected_types(p.get("signal_type"))? {
        // Pharos's indexes always exist (HMA's exist once first built).
        let size = kind_size(&api, &caller, st.kind);
        let built_to = if size > 0 { now_s() } else { -1 };
        out.insert(st.name.into(), json!({ "present": true, "built_to": built_to, "size": size }));
    }
    Ok(json(Value::Object(out)))
}

/// The signal types a status route reports: all, or the one asked (HMA's 400 for an unknown one).
pub(crate) fn selected_types(asked: Option<&str>) -> ApiResult<Vec<SignalType>> {
    match asked {
        None => Ok(hma::SIGNAL_TYPES.to_vec()),
        Some(name) => hma::signal_type(name)
            .map(|s| vec![s])
            .ok_or_else(|| ApiError::bad_request(format!("No such signal type '{}'", hma::clip(name)))),
    }
}

/// The live entries of the banks of a kind that the caller may use, together.
pub(crate) fn kind_size(api: &Api, caller: &Caller, kind: Kind) -> u64 {
    api.shared.banks.list().iter().filter(|b| b.kind == kind && caller.may_use(&b.name)).map(|b| b.size).sum()
}

/// Now, in Unix seconds.
pub(crate) fn now_s() -> i64 {
    (crate::store::now_ms() / 1000) as i64
}
