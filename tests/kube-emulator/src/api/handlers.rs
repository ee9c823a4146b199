//! Routing a request to what it asks for: discovery, a collection (list,
//! watch, create, deletecollection), an object (get, replace, patch,
//! delete) or a subresource (status, scale, log, exec, portforward).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Query, State as AxumState};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::admission::Write;
use super::apply;
use super::authn::tls::Peer;
use super::authz::{self, Attributes, RequestInfo, UserInfo};
use super::deletion::{DeleteOptions, Deleted};
use super::error::{ApiError, ApiResult};
use super::objects::{check_resource_version, Location, Part};
use super::patch::{self, PatchKind};
use super::resources::{Kind, ResourceType};
use super::selectors::{FieldSelector, LabelSelector, Selectors};
use super::watch::{self, WatchRequest};
use super::{discovery, json_response, logs, openapi, scale, streams, table, Server};

/// One request, parsed.
struct Request {
    server: Arc<Server>,
    /// Who sent it (authenticated, and authorized for what it asks).
    user: UserInfo,
    method: Method,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
    /// The whole URI (streaming subresources read repeated query keys).
    uri: Uri,
    /// The WebSocket upgrade the request asks for, if it is one.
    upgrade: Option<WebSocketUpgrade>,
}

/// A resource request's target.
struct Target {
    rt: ResourceType,
    version: String,
    /// The path's namespace; `None` for cluster-scoped resources and for
    /// lists across all namespaces.
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

impl Target {
    fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }

    fn at<'a>(&'a self, name: &'a str) -> Location<'a> {
        Location {
            rt: &self.rt,
            version: &self.version,
            namespace: self.namespace(),
            name,
        }
    }
}

pub async fn handle(
    AxumState(server): AxumState<Arc<Server>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    body: Bytes,
) -> Response {
    let query = Query::<HashMap<String, String>>::try_from_uri(&uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let segments: Vec<String> = uri
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    // Authentication, then authorization, before anything is routed.
    let info = RequestInfo::parse(&method, uri.path(), &segments, &query);
    let user = {
        let state = server.lock();
        let body = authz::Body {
            headers: &headers,
            bytes: &body,
            parse: parse_body,
        };
        server
            .authenticator
            .authenticate(&state, &headers, peer.certificate_user.as_ref())
            .and_then(|user| impersonate(&state, user, &headers))
            .and_then(|user| {
                authz::authorize(&state, &server.policy, &user, &info, &body)?;
                Ok(user)
            })
    };
    let user = match user {
        Ok(user) => user,
        Err(error) => return error.into_response(),
    };
    let request = Request {
        server,
        user,
        method,
        query,
        headers,
        body,
        uri: uri.clone(),
        upgrade: upgrade.ok(),
    };
    match route(request, &segments).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn route(request: Request, segments: &[&str]) -> ApiResult<Response> {
    let ok = |value: Value| Ok(json_response(StatusCode::OK, &value));
    let catalog = || request.server.lock().catalog.clone();
    match segments {
        ["version"] => ok(discovery::version()),
        ["healthz"] | ["livez"] | ["readyz"] => Ok((StatusCode::OK, "ok").into_response()),
        ["api"] => ok(discovery::core_versions(&request.server.address)),
        ["apis"] => ok(discovery::groups(&catalog())),
        ["apis", group] => ok(discovery::group(&catalog(), group)?),
        ["api", version] => ok(discovery::resources(&catalog(), "", version)?),
        ["openapi", "v3"] => ok(openapi::index(&catalog())),
        ["openapi", "v3", "api", version] => ok(openapi_document(&request, "", version)?),
        ["openapi", "v3", "apis", group, version] => {
            ok(openapi_document(&request, group, version)?)
        }
        ["apis", group, version] => ok(discovery::resources(&catalog(), group, version)?),
        ["api", version, rest @ ..] => {
            let target = target(&request, "", version, rest)?;
            resource(request, target).await
        }
        ["apis", group, version, rest @ ..] => {
            let target = target(&request, group, version, rest)?;
            resource(request, target).await
        }
        _ => Err(ApiError::no_such_path()),
    }
}

/// `GET /openapi/v3/...`: the group version's document, with the schemas
/// of the CRDs stored now.
fn openapi_document(request: &Request, group: &str, version: &str) -> ApiResult<Value> {
    let state = request.server.lock();
    let crd_key =
        super::resources::Catalog::builtin("apiextensions.k8s.io", "customresourcedefinitions")
            .key();
    let crds = state.store.list(&crd_key, None);
    openapi::group_version(&state.catalog, crds, group, version)
}

/// Parses `[namespaces/{ns}/]{resource}[/{name}[/{subresource}]]`.
fn target(request: &Request, group: &str, version: &str, rest: &[&str]) -> ApiResult<Target> {
    let namespace_subresource =
        rest.len() == 3 && rest[0] == "namespaces" && matches!(rest[2], "status" | "finalize");
    let (namespace, rest) = match rest {
        ["namespaces", namespace, rest @ ..] if !rest.is_empty() && !namespace_subresource => {
            (Some(namespace.to_string()), rest)
        }
        _ => (None, rest),
    };
    let (plural, name, subresource) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(name.to_string()), None),
        [plural, name, sub] => (*plural, Some(name.to_string()), Some(sub.to_string())),
        _ => return Err(ApiError::no_such_path()),
    };
    let rt = request
        .server
        .lock()
        .catalog
        .find(group, version, plural)
        .cloned()
        .ok_or_else(ApiError::no_such_path)?;
    let scoped_right = match (&namespace, &name) {
        (Some(_), _) => rt.namespaced,
        // a namespaced resource without a namespace: only lists and watches
        (None, Some(_)) => !rt.namespaced,
        (None, None) => true,
    };
    let subresource_known = match subresource.as_deref() {
        None => true,
        Some("status") => rt.status,
        Some("scale") => rt.scale,
        Some("log") => rt.log,
        Some("finalize") => rt.is_namespace(),
        Some("token") => rt.is("", "serviceaccounts"),
        Some("exec" | "portforward") => rt.is("", "pods"),
        Some(_) => false,
    };
    if !scoped_right || !subresource_known {
        return Err(ApiError::no_such_path());
    }
    Ok(Target {
        rt,
        version: version.to_string(),
        namespace,
        name,
        subresource,
    })
}

async fn resource(request: Request, target: Target) -> ApiResult<Response> {
    if target.rt.behaviour == Kind::Review
        && (target.name.is_some() || request.method != Method::POST)
    {
        return Err(ApiError::method_not_allowed(format!(
            "{} only accepts create (POST)",
            target.rt.group_resource()
        )));
    }
    let Some(name) = target.name.clone() else {
        return collection(request, target);
    };
    let method = request.method.clone();
    match (target.subresource.as_deref(), method) {
        (Some("log"), Method::GET) => {
            logs::pod_log(
                request.server.clone(),
                &target.rt,
                target.namespace(),
                &name,
                &request.query,
            )
            .await
        }
        // GET for a WebSocket upgrade, POST for a SPDY one.
        (Some(sub @ ("exec" | "portforward")), Method::GET | Method::POST) => {
            let pod = request
                .server
                .lock()
                .get(&target.rt, target.namespace(), &name)?;
            let query = streams::Query::parse(&request.uri)?;
            match sub {
                "exec" => streams::exec::serve(request.server, pod, &query, request.upgrade).await,
                _ => streams::portforward::serve(pod, &query, request.upgrade),
            }
        }
        (Some("token"), Method::POST) => {
            let body = parse_body(&request.headers, &request.body)?;
            let state = request.server.lock();
            let token = super::authn::token_request(
                &request.server.authenticator,
                &state,
                target.namespace(),
                &name,
                body,
            )?;
            Ok(json_response(StatusCode::CREATED, &token))
        }
        (Some("scale"), method) => {
            let content_type = header_text(&request.headers, header::CONTENT_TYPE);
            let mut write = request.write();
            let mut state = request.server.lock();
            let body = &request.body;
            let response = scale::handle(
                &mut state,
                target.at(&name),
                &method,
                content_type,
                body,
                &mut write,
            )?;
            Ok(with_warnings(response, &write))
        }
        (Some("status") | None | Some("finalize"), Method::GET) => {
            let object = request
                .server
                .lock()
                .get(&target.rt, target.namespace(), &name)?;
            Ok(respond(&request, &target, StatusCode::OK, object))
        }
        (sub @ (None | Some("status") | Some("finalize")), Method::PUT) => {
            let part = part(sub);
            let body = parse_body(&request.headers, &request.body)?;
            let mut write = request.write();
            let object = request
                .server
                .lock()
                .update(target.at(&name), body, part, &mut write)?;
            let response = respond(&request, &target, StatusCode::OK, object);
            Ok(with_warnings(response, &write))
        }
        (sub @ (None | Some("status")), Method::PATCH) => patch(request, &target, &name, part(sub)),
        (None, Method::DELETE) => {
            let body = if request.body.is_empty() {
                Value::Null
            } else {
                parse_body(&request.headers, &request.body)?
            };
            let options = delete_options(&request, &body);
            let deleted =
                request
                    .server
                    .lock()
                    .delete(&target.rt, target.namespace(), &name, &options)?;
            Ok(match deleted {
                Deleted::Pending(object) => {
                    respond(&request, &target, StatusCode::ACCEPTED, object)
                }
                Deleted::Gone(object) => {
                    json_response(StatusCode::OK, &success(&target.rt, &object))
                }
            })
        }
        (sub, method) => Err(ApiError::method_not_allowed(format!(
            "{method} is not supported on {}{}",
            target.rt.group_resource(),
            sub.map(|s| format!("/{s}")).unwrap_or_default()
        ))),
    }
}

fn part(subresource: Option<&str>) -> Part {
    if subresource == Some("status") {
        Part::Status
    } else {
        Part::Main
    }
}

/// The `Status` a delete returns when the object is gone at once.
fn success(rt: &ResourceType, object: &Value) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {
            "name": object["metadata"]["name"],
            "group": rt.group,
            "kind": rt.plural,
            "uid": object["metadata"]["uid"],
        },
    })
}

fn collection(request: Request, target: Target) -> ApiResult<Response> {
    let rt = &target.rt;
    match request.method {
        Method::GET if truthy(request.query.get("watch")) => {
            let watch = WatchRequest {
                rt: rt.clone(),
                version: target.version.clone(),
                namespace: target.namespace.clone(),
                selectors: selectors(&request.query)?,
                resource_version: request.query.get("resourceVersion").cloned(),
                timeout: request
                    .query
                    .get("timeoutSeconds")
                    .and_then(|t| t.parse().ok())
                    .map(Duration::from_secs),
                bookmarks: truthy(request.query.get("allowWatchBookmarks")),
                send_initial_events: truthy(request.query.get("sendInitialEvents")),
            };
            watch::watch(request.server.clone(), watch)
        }
        Method::GET => list(&request, &target),
        Method::POST if rt.behaviour == Kind::Review => {
            let mut review = parse_body(&request.headers, &request.body)?;
            super::meta::check_type(rt, &target.version, &mut review)?;
            let state = request.server.lock();
            let policy = &request.server.policy;
            let review = authz::review(
                &state,
                policy,
                &request.user,
                rt,
                target.namespace(),
                review,
            )?;
            Ok(json_response(StatusCode::CREATED, &review))
        }
        Method::POST if target.namespace.is_some() || !rt.namespaced => {
            let body = parse_body(&request.headers, &request.body)?;
            let mut write = request.write();
            let object = request.server.lock().create(
                rt,
                &target.version,
                target.namespace(),
                body,
                &mut write,
            )?;
            let response = respond(&request, &target, StatusCode::CREATED, object);
            Ok(with_warnings(response, &write))
        }
        Method::DELETE => {
            let selectors = selectors(&request.query)?;
            let body = if request.body.is_empty() {
                Value::Null
            } else {
                parse_body(&request.headers, &request.body)?
            };
            let options = delete_options(&request, &body);
            let mut state = request.server.lock();
            let doomed: Vec<(String, String)> = state
                .store
                .list(&rt.key(), target.namespace.as_deref())
                .filter(|o| selectors.matches(o))
                .map(super::store::object_key)
                .collect();
            let mut items = Vec::new();
            for (namespace, name) in doomed {
                match state.delete(rt, &namespace, &name, &options) {
                    Ok(Deleted::Gone(object) | Deleted::Pending(object)) => items.push(object),
                    Err(error) if error.code == 404 => {}
                    Err(error) => return Err(error),
                }
            }
            let rv = state.store.rv();
            drop(state);
            Ok(json_response(
                StatusCode::OK,
                &list_object(&target, items, rv, None),
            ))
        }
        _ => Err(ApiError::method_not_allowed(format!(
            "{} is not supported on the collection of {}",
            request.method,
            rt.group_resource()
        ))),
    }
}

/// A delete request's options: its body's, its query's, and whether a
/// kubelet finishes pods' deletions here.
fn delete_options(request: &Request, body: &Value) -> DeleteOptions {
    DeleteOptions {
        kubelet: request.server.kubelet.is_some(),
        ..DeleteOptions::parse(
            body,
            request.query.get("propagationPolicy").map(String::as_str),
            dry_run(&request.query),
        )
    }
}

fn list(request: &Request, target: &Target) -> ApiResult<Response> {
    let selectors = selectors(&request.query)?;
    let limit = match request.query.get("limit").map(|l| l.parse::<usize>()) {
        Some(Ok(0)) | None => usize::MAX,
        Some(Ok(limit)) => limit,
        Some(Err(_)) => {
            return Err(ApiError::bad_request(
                "limit must be a non-negative integer",
            ))
        }
    };
    // The continue token is the `namespace/name` of the last item sent.
    let after = request
        .query
        .get("continue")
        .filter(|c| !c.is_empty())
        .map(|c| match c.split_once('/') {
            Some((ns, name)) => (ns.to_string(), name.to_string()),
            None => (String::new(), c.clone()),
        });
    let state = request.server.lock();
    let rv = state.store.rv();
    let mut items: Vec<Value> = state
        .store
        .list(&target.rt.key(), target.namespace.as_deref())
        .filter(|o| {
            after
                .as_ref()
                .is_none_or(|after| super::store::object_key(o) > *after)
        })
        .filter(|o| selectors.matches(o))
        .take(limit.saturating_add(1))
        .cloned()
        .collect();
    drop(state);
    let more = items.len() > limit;
    items.truncate(limit);
    let next = more
        .then(|| items.last().map(super::store::object_key))
        .flatten()
        .map(|(ns, name)| format!("{ns}/{name}"));
    if wants_table(&request.headers) {
        let include = request.query.get("includeObject").map(String::as_str);
        let items: Vec<Value> = items.iter().map(|o| present(target, o.clone())).collect();
        let store = &request.server.lock().store;
        let table = table::table(store, &target.rt, &target.version, &items, rv, include);
        return Ok(json_response(StatusCode::OK, &table));
    }
    Ok(json_response(
        StatusCode::OK,
        &list_object(target, items, rv, next),
    ))
}

fn list_object(target: &Target, items: Vec<Value>, rv: u64, next: Option<String>) -> Value {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let Some(next) = next {
        metadata["continue"] = json!(next);
    }
    json!({
        "kind": format!("{}List", target.rt.kind),
        "apiVersion": target.rt.api_version(&target.version),
        "metadata": metadata,
        "items": items.into_iter().map(|o| present(target, o)).collect::<Vec<_>>(),
    })
}

fn patch(request: Request, target: &Target, name: &str, part: Part) -> ApiResult<Response> {
    let kind = PatchKind::from_content_type(header_text(&request.headers, header::CONTENT_TYPE))?;
    let body = parse_value(&request.body, true)?;
    let mut write = request.write();
    let mut state = request.server.lock();
    if kind == PatchKind::Apply {
        let manager = request
            .query
            .get("fieldManager")
            .map(String::as_str)
            .unwrap_or("");
        let (object, created) =
            apply::apply(&mut state, target.at(name), part, body, manager, &mut write)?;
        drop(state);
        let code = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        let response = respond(&request, target, code, object);
        return Ok(with_warnings(response, &write));
    }
    let current = state.get(&target.rt, target.namespace(), name)?;
    let mut patched = present(target, current.clone());
    patch::apply(kind, &mut patched, &body)?;
    if super::meta::text(&patched, "name") != name {
        return Err(ApiError::bad_request(
            "a patch may not change metadata.name",
        ));
    }
    check_resource_version(&target.rt, &current, &patched)?;
    super::meta::check_type(&target.rt, &target.version, &mut patched)?;
    let object = state.commit(&target.rt, current, patched, part, &mut write)?;
    drop(state);
    let response = respond(&request, target, StatusCode::OK, object);
    Ok(with_warnings(response, &write))
}

impl Request {
    /// What the admission chain needs of this write: who asks, and
    /// whether it is a dry run.
    fn write(&self) -> Write {
        Write::new(self.user.clone(), dry_run(&self.query))
    }
}

/// The identity a request acts as: the authenticated user, or the one it
/// impersonates (`Impersonate-User`/`-Group`: `kubectl --as`, `--as-group`)
/// when that user may `impersonate` it, as the real server's
/// impersonation filter decides before authorization. An impersonated
/// user gets the groups asked for, or a service account's groups when none
/// are, plus `system:authenticated`.
fn impersonate(
    state: &super::objects::State,
    user: UserInfo,
    headers: &HeaderMap,
) -> ApiResult<UserInfo> {
    let Some(name) = headers
        .get("impersonate-user")
        .and_then(|v| v.to_str().ok())
        .filter(|name| !name.is_empty())
    else {
        return Ok(user);
    };
    let mut groups: Vec<String> = headers
        .get_all("impersonate-group")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect();
    let account = name
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'));
    let (resource, namespace, object) = match account {
        Some((namespace, account)) => ("serviceaccounts", namespace, account),
        None => ("users", "", name),
    };
    let asks = std::iter::once((resource, namespace, object))
        .chain(groups.iter().map(|g| ("groups", "", g.as_str())));
    for (resource, namespace, object) in asks {
        let attributes = Attributes {
            verb: "impersonate",
            resource,
            namespace,
            name: object,
            ..Attributes::default()
        };
        if !authz::allows(state, &user, &attributes) {
            return Err(ApiError::forbidden_on(
                "",
                resource,
                object,
                &format!(
                    "User {:?} cannot impersonate resource {resource:?} in API group \"\" {}",
                    user.name,
                    if namespace.is_empty() {
                        "at the cluster scope".to_string()
                    } else {
                        format!("in the namespace {namespace:?}")
                    }
                ),
            ));
        }
    }
    if groups.is_empty() {
        if let Some((namespace, _)) = account {
            groups = super::admission::service_account_groups(namespace);
        }
    }
    if !groups.iter().any(|g| g == "system:authenticated") {
        groups.push("system:authenticated".to_string());
    }
    Ok(UserInfo {
        name: name.to_string(),
        uid: String::new(),
        groups,
    })
}

/// Adds the admission chain's warnings as `Warning: 299 - "text"`
/// headers, quoted as the real server quotes them (kubectl prints them).
fn with_warnings(mut response: Response, write: &Write) -> Response {
    for text in &write.warnings {
        let mut quoted = String::with_capacity(text.len() + 2);
        quoted.push('"');
        for c in text.chars() {
            if c == '"' || c == '\\' {
                quoted.push('\\');
            }
            quoted.push(c);
        }
        quoted.push('"');
        if let Ok(value) = header::HeaderValue::from_str(&format!("299 - {quoted}")) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

/// The object as served at the request's version (or as a Table).
fn respond(request: &Request, target: &Target, code: StatusCode, object: Value) -> Response {
    let object = present(target, object);
    if wants_table(&request.headers) {
        let include = request.query.get("includeObject").map(String::as_str);
        let rv = super::meta::text(&object, "resourceVersion")
            .parse()
            .unwrap_or(0);
        let store = &request.server.lock().store;
        let table = table::table(store, &target.rt, &target.version, &[object], rv, include);
        return json_response(code, &table);
    }
    json_response(code, &object)
}

fn present(target: &Target, mut object: Value) -> Value {
    object["apiVersion"] = json!(target.rt.api_version(&target.version));
    object["kind"] = json!(target.rt.kind);
    object
}

fn wants_table(headers: &HeaderMap) -> bool {
    table::wanted(header_text(headers, header::ACCEPT))
}

/// A header's value, `""` when missing or not text.
fn header_text(headers: &HeaderMap, name: header::HeaderName) -> &str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn selectors(query: &HashMap<String, String>) -> ApiResult<Selectors> {
    let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))
        .map_err(|why| ApiError::bad_request(format!("unable to parse labelSelector: {why}")))?;
    let fields = FieldSelector::parse(query.get("fieldSelector").map_or("", String::as_str))
        .map_err(|why| ApiError::bad_request(format!("unable to parse fieldSelector: {why}")))?;
    Ok(Selectors { labels, fields })
}

fn truthy(value: Option<&String>) -> bool {
    value.is_some_and(|v| v == "true" || v == "1")
}

fn dry_run(query: &HashMap<String, String>) -> bool {
    query.get("dryRun").is_some_and(|d| d == "All")
}

/// A create/replace body: JSON, or YAML when the Content-Type says so.
fn parse_body(headers: &HeaderMap, body: &Bytes) -> ApiResult<Value> {
    let content_type = header_text(headers, header::CONTENT_TYPE);
    let media = content_type.split(';').next().unwrap_or("").trim();
    let yaml = match media {
        super::protobuf::CONTENT_TYPE => return super::protobuf::decode(body),
        "application/json" | "" | "*/*" => false,
        "application/yaml" | "application/x-yaml" | "text/yaml" => true,
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    parse_value(body, yaml)
}

fn parse_value(body: &Bytes, yaml: bool) -> ApiResult<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    let value: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(json_error) if !yaml => {
            return Err(ApiError::bad_request(format!(
                "the request body is not valid JSON: {json_error}"
            )))
        }
        Err(_) => serde_yaml::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the request body is not valid YAML: {e}"))
        })?,
    };
    if !value.is_object() && !value.is_array() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON or YAML object",
        ));
    }
    Ok(value)
}

/// Decodes `%XX` escapes in a path segment.
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
