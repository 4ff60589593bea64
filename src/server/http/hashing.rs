//! `/h`: hashing, and the upload and URL handling every route that takes media shares.

use super::hma::{self, ContentType, SignalType};
use super::{caller, json, Api, ApiError, ApiResult, Params};
use crate::hash::exact::ExactHashes;
use crate::matcher::AnyHash;
use crate::server::auth::Caller;
use axum::extract::{FromRequest as _, Request};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Arc;

/// PDQ below this quality is answered as `""`, as HMA does (such hashes are not trusted for matching).
pub(crate) const MIN_PDQ_QUALITY: u32 = 50;

/// A media file from a multipart upload: its content type (the form field's name) and bytes, and the
/// other form fields (text).
#[derive(Debug)]
pub(crate) struct Upload {
    pub(crate) content: ContentType,
    pub(crate) bytes: Bytes,
    pub(crate) form: BTreeMap<String, String>,
}

/// Reads a multipart body with exactly one file, in a field named `photo` or `video` (HMA's rule; the
/// file name and MIME type are ignored). Errors are HMA's messages.
pub(crate) async fn read_upload(req: Request) -> ApiResult<Upload> {
    let missing = || ApiError::bad_request("Missing multipart/form-data file upload");
    let mut multipart = axum::extract::Multipart::from_request(req, &()).await.map_err(|_| missing())?;
    let mut file: Option<(String, Bytes)> = None;
    let mut form = BTreeMap::new();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(multipart_error(e)),
        };
        let name = field.name().unwrap_or("").to_string();
        if field.file_name().is_some() {
            if file.is_some() {
                return Err(ApiError::bad_request("Only one file allowed per request"));
            }
            let bytes = field.bytes().await.map_err(multipart_error)?;
            file = Some((name, bytes));
        } else {
            let text = field.text().await.map_err(multipart_error)?;
            form.entry(name).or_insert(text);
        }
    }
    let (field, bytes) = file.ok_or_else(missing)?;
    let content = ContentType::parse(&field).map_err(ApiError::bad_request)?;
    Ok(Upload { content, bytes, form })
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "The data value transmitted exceeds the capacity limit.")
    } else {
        ApiError::bad_request(format!("malformed multipart/form-data body: {}", e.body_text()))
    }
}

/// Downloads a URL for hashing (see `fetch`): its content type from `content_type` or the response's
/// `Content-Type`, and its bytes.
pub(crate) async fn fetch_url(
    api: &Api,
    url: &str,
    content_type: Option<&str>,
) -> ApiResult<(ContentType, Bytes)> {
    let Some(fetcher) = &api.fetcher else {
        return Err(ApiError::bad_request(
            "Invalid or unsafe URL provided: fetching URLs is off on this server (http_fetch_hosts is empty)",
        ));
    };
    // A bad content_type is refused before anything is downloaded.
    let hint = match content_type.filter(|c| !c.is_empty()) {
        Some(c) => Some(ContentType::parse(c).map_err(ApiError::bad_request)?),
        None => None,
    };
    let fetched = fetcher.fetch(url).await.map_err(|(status, message)| ApiError::new(status, message))?;
    let content = match hint {
        Some(c) => c,
        None => ContentType::of_mime(fetched.content_type.as_deref().unwrap_or(""))
            .map_err(ApiError::bad_request)?,
    };
    Ok((content, fetched.bytes))
}

/// The hashes of one file for the selected signal types.
#[derive(Debug, Default)]
pub(crate) struct Computed {
    /// Signal type name → hash text as HMA answers it (`""` for a PDQ below quality 50).
    pub(crate) text: BTreeMap<&'static str, String>,
    /// The hashes to match with, by signal type (none for a PDQ below quality 50).
    pub(crate) hashes: Vec<(SignalType, AnyHash)>,
    /// PDQ quality, for photos.
    pub(crate) quality: Option<u32>,
}

/// Hashes a file: photos through the pipeline (decode, PDQ and pHash, digests when selected), other files
/// as digests of their bytes. Charged to the caller as one image.
pub(crate) async fn compute(
    api: &Api,
    caller: &Caller,
    content: ContentType,
    bytes: Bytes,
    selected: &[SignalType],
) -> ApiResult<Computed> {
    let shared = &api.shared;
    let mut out = Computed::default();
    let digests = match content {
        ContentType::Photo => {
            let exact = selected.iter().any(|s| s.kind.is_exact());
            let what = crate::server::hashing::What { dihedral: false, exif: false, exact };
            let rec = shared.hash_one(bytes, what, None, caller).await?;
            out.quality = Some(rec.pdq.quality);
            for s in selected {
                match s.kind {
                    crate::matcher::Kind::Pdq => {
                        if rec.pdq.quality < MIN_PDQ_QUALITY {
                            out.text.insert(s.name, String::new());
                        } else {
                            out.text.insert(s.name, rec.pdq.hash.to_hex());
                            out.hashes.push((*s, AnyHash::Pdq(rec.pdq.hash)));
                        }
                    }
                    crate::matcher::Kind::Phash => {
                        out.text.insert(s.name, rec.phash.to_hex());
                        out.hashes.push((*s, AnyHash::Phash(rec.phash)));
                    }
                    _ => {}
                }
            }
            rec.exact
        }
        ContentType::Video => {
            if bytes.is_empty() {
                return Err(ApiError::bad_request("the uploaded file is empty"));
            }
            let _slot = caller.admit_image(&shared.metrics)?;
            let d = tokio::task::spawn_blocking(move || ExactHashes::of(&bytes)).await.map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("hashing failed: {e}"))
            })?;
            Some(d)
        }
    };
    if let Some(d) = digests {
        for s in selected {
            let h = match s.kind {
                crate::matcher::Kind::Md5 => AnyHash::Md5(d.md5),
                crate::matcher::Kind::Sha1 => AnyHash::Sha1(d.sha1),
                crate::matcher::Kind::Sha256 => AnyHash::Sha256(d.sha256),
                _ => continue,
            };
            out.text.insert(s.name, h.to_hex());
            out.hashes.push((*s, h));
        }
    }
    Ok(out)
}

/// Hashes an upload or a URL for the `types` asked (or the content type's defaults).
pub(crate) async fn hash_media(
    api: &Api,
    caller: &Caller,
    content: ContentType,
    bytes: Bytes,
    types: Option<&str>,
) -> ApiResult<Computed> {
    let selected = hma::selected(content, types).map_err(ApiError::bad_request)?;
    compute(api, caller, content, bytes, &selected).await
}

/// `GET /h/hash?url=…`: downloads the URL (only hosts in `http_fetch_hosts`) and hashes it.
#[utoipa::path(get, path = "/h/hash", tag = "Hashing",
    params(("url" = String, Query, description = "http(s) URL of the media; its host must be allowed by `http_fetch_hosts`"),
           ("content_type" = Option<String>, Query, description = "`photo` or `video`; default: from the response's Content-Type"),
           ("types" = Option<String>, Query, description = "comma-separated signal types (default: `pdq` for photos, `video_md5` for videos)")),
    responses((status = 200, description = "signal type → hash (`\"\"` for a PDQ below quality 50)", body = BTreeMap<String, String>),
              (status = 400, body = super::openapi::Message), (status = 413, body = super::openapi::Message),
              (status = 422, description = "`url` missing")),
    security(("bearer" = ["hash"])))]
pub(crate) async fn hash_url(Extension(api): Extension<Arc<Api>>, req: Request) -> ApiResult<Response> {
    let caller = caller(req.extensions());
    let params = Params::parse(req.uri().query())?;
    let url = params.required("url")?;
    let (content, bytes) = fetch_url(&api, url, params.get("content_type")).await?;
    let computed = hash_media(&api, &caller, content, bytes, params.get("types")).await?;
    Ok(json(serde_json::to_value(&computed.text).unwrap_or_default()))
}

/// `POST /h/hash`: hashes an uploaded file (multipart, one file in a field named `photo` or `video`).
#[utoipa::path(post, path = "/h/hash", tag = "Hashing",
    params(("types" = Option<String>, Query, description = "comma-separated signal types")),
    request_body(content_type = "multipart/form-data", description = "one file, in a field named `photo` or `video`"),
    responses((status = 200, description = "signal type → hash", body = BTreeMap<String, String>),
              (status = 400, body = super::openapi::Message), (status = 413, body = super::openapi::Message)),
    security(("bearer" = ["hash"])))]
pub(crate) async fn hash_upload(Extension(api): Extension<Arc<Api>>, req: Request) -> ApiResult<Response> {
    let caller = caller(req.extensions());
    let params = Params::parse(req.uri().query())?;
    let upload = read_upload(req).await?;
    let computed = hash_media(&api, &caller, upload.content, upload.bytes, params.get("types")).await?;
    Ok(json(serde_json::to_value(&computed.text).unwrap_or_default()))
}
