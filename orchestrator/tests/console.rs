//! The web console of `orchestrator controller` (the real binary) against
//! a Docker-less emulated pair (the destination as host), over HTTP as a
//! browser talks to it: logins with real tokens, RBAC deciding as the
//! user, the plan form's validation, runs started and cancelled, event
//! streams following resources, and the pages served with their policy.

use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube_emulator::PairOptions;
use orchestrator::controller::plan::MigrationPlan;
use reqwest::StatusCode;
use serde_json::{json, Value};

mod host;

use host::{create, register_clusters, NS};

/// The controller's host (see `host`), with namespace `shop` and its PVC
/// `data` on the source.
struct Setup {
    host: host::Setup,
}

async fn setup() -> Setup {
    let host = host::setup(&PairOptions::default()).await;
    register_clusters(&host.pair).await;
    let source = host.pair.source.client.clone();
    create(
        &Api::<Namespace>::all(source.clone()),
        json!({"metadata": {"name": "shop"}}),
    )
    .await;
    create(
        &Api::<PersistentVolumeClaim>::namespaced(source, "shop"),
        json!({"metadata": {"name": "data"},
               "spec": {"accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}}}}),
    )
    .await;
    Setup { host }
}

impl Setup {
    /// A token of the host for `user`, bound to a Role in the controller's
    /// namespace with `verbs` on the mover.io resources (none: no binding).
    async fn user(&self, user: &str, verbs: &[&str]) -> String {
        if !verbs.is_empty() {
            let host = self.host.pair.destination.client.clone();
            create(
                &Api::<Role>::namespaced(host.clone(), NS),
                json!({"metadata": {"name": user},
                       "rules": [{"apiGroups": ["mover.io"],
                                  "resources": ["migrationclusters", "migrationplans", "migrations"],
                                  "verbs": verbs}]}),
            )
            .await;
            create(
                &Api::<RoleBinding>::namespaced(host, NS),
                json!({"metadata": {"name": user},
                       "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": user},
                       "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}),
            )
            .await;
        }
        self.host.pair.destination.token_for(user, &[])
    }

    /// A browser logged in with `token`.
    async fn login(&self, token: &str) -> Browser {
        let browser = Browser {
            base: self.host.controller.console.clone(),
            http: reqwest::Client::new(),
            cookie: None,
        };
        let response = browser
            .send(
                reqwest::Method::POST,
                "/api/login",
                Some(json!({"token": token})),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK, "logging in");
        let set_cookie = response
            .headers()
            .get("set-cookie")
            .expect("a session cookie")
            .to_str()
            .unwrap()
            .to_string();
        assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
        assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
        let cookie = set_cookie.split(';').next().unwrap().to_string();
        Browser {
            cookie: Some(cookie),
            ..browser
        }
    }

    fn anonymous(&self) -> Browser {
        Browser {
            base: self.host.controller.console.clone(),
            http: reqwest::Client::new(),
            cookie: None,
        }
    }
}

/// What a page's script does: requests with the session cookie, and the
/// CSRF header on changes.
struct Browser {
    base: String,
    http: reqwest::Client,
    cookie: Option<String>,
}

impl Browser {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if method != reqwest::Method::GET {
            request = request.header("X-Console", "1");
        }
        if let Some(cookie) = &self.cookie {
            request = request.header("Cookie", cookie);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }

    /// A JSON request: (status, body).
    async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let response = self.send(method, path, body).await;
        let status = response.status();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path} answered {status} with non-JSON {text:?}: {e}"));
        (status, value)
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.json(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.json(reqwest::Method::GET, path, None).await
    }

    /// The event stream at `path`, as (event, data) pairs.
    async fn events(&self, path: &str) -> Events {
        let response = self.send(reqwest::Method::GET, path, None).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Events {
            stream: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        }
    }
}

type ByteStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

struct Events {
    stream: ByteStream,
    buffer: String,
}

impl Events {
    /// The next event: its name and its data as JSON.
    async fn next(&mut self) -> (String, Value) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(name) = line.strip_prefix("event: ") {
                        event = name.to_string();
                    } else if let Some(text) = line.strip_prefix("data: ") {
                        data.push_str(text);
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return (event, serde_json::from_str(&data).unwrap());
            }
            let chunk = tokio::time::timeout(Duration::from_secs(60), self.stream.next())
                .await
                .expect("an event within a minute")
                .expect("the stream to go on")
                .unwrap();
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Events until one `matches`; panics if the stream ends first.
    async fn until(&mut self, matches: impl Fn(&str, &Value) -> bool) -> Value {
        loop {
            let (event, data) = self.next().await;
            if matches(&event, &data) {
                return data;
            }
        }
    }
}

const RIGHTS: &[&str] = &["get", "list", "watch", "create", "delete"];

#[tokio::test(flavor = "multi_thread")]
async fn logins_are_checked_by_the_host_and_requests_need_them() {
    let setup = setup().await;
    let anonymous = setup.anonymous();

    let (status, body) = anonymous
        .post(
            "/api/login",
            json!({"token": "not-a-token-of-this-cluster"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("does not accept"),
        "{body}"
    );
    let (status, body) = anonymous
        .post(
            "/api/login",
            json!({"token": "bad token; with=cookie syntax"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // Without a session: no data, and the session says nobody.
    let (status, _) = anonymous.get("/api/watch/clusters").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = anonymous.get("/api/clusters/source/namespaces").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = anonymous.get("/api/session").await;
    assert_eq!((status, &body["user"]), (StatusCode::OK, &Value::Null));
    let forged = Browser {
        cookie: Some("mover-console-token=\"x,y\"".into()),
        ..setup.anonymous()
    };
    let (status, _) = forged.get("/api/watch/plans").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A change without the CSRF header is refused before anything else.
    let token = setup.user("alice", RIGHTS).await;
    let alice = setup.login(&token).await;
    let response = alice
        .http
        .post(format!("{}/api/plans", alice.base))
        .header("Cookie", alice.cookie.as_deref().unwrap())
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.text().await.unwrap().contains("X-Console"));

    let (status, body) = alice.get("/api/session").await;
    assert_eq!(
        (status, body["user"].as_str()),
        (StatusCode::OK, Some("alice"))
    );

    // Logging out clears the cookie.
    let response = alice.send(reqwest::Method::POST, "/api/logout", None).await;
    let cleared = response.headers()["set-cookie"].to_str().unwrap();
    assert!(cleared.starts_with("mover-console-token=;"), "{cleared}");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");

    // Secure when the request came over HTTPS through a Route.
    let response = anonymous
        .http
        .post(format!("{}/api/login", anonymous.base))
        .header("X-Console", "1")
        .header("X-Forwarded-Proto", "https")
        .json(&json!({"token": token}))
        .send()
        .await
        .unwrap();
    assert!(response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Secure"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_users_rights_decide_not_the_controllers() {
    let setup = setup().await;
    // Bob's token is valid but bound to nothing.
    let bob = setup.login(&setup.user("bob", &[]).await).await;
    let (status, body) = bob.get("/api/watch/plans").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["message"].as_str().unwrap().contains("bob"), "{body}");
    let (status, _) = bob.get("/api/clusters/source/namespaces").await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Carol may read but not create: her plan is refused though the
    // controller could create it.
    let carol = setup
        .login(&setup.user("carol", &["get", "list", "watch"]).await)
        .await;
    let (status, body) = carol.post("/api/plans", plan_form("shop-move")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("carol"),
        "{body}"
    );
    let plans: Api<MigrationPlan> = Api::namespaced(setup.host.pair.destination.client.clone(), NS);
    assert!(plans.get_opt("shop-move").await.unwrap().is_none());

    // Alice may: the plan is created as the form said.
    let alice = setup.login(&setup.user("alice", RIGHTS).await).await;
    let (status, body) = alice.post("/api/plans", plan_form("shop-move")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let plan = plans.get("shop-move").await.unwrap();
    assert_eq!(plan.spec.source_cluster, "source");
    assert_eq!(plan.spec.destination_cluster, "host");
    assert_eq!(plan.spec.plan["namespaces"], json!(["shop"]));
    assert_eq!(plan.spec.plan["pvcs"], json!(["shop/data"]));

    // The registered cluster's inventory, listed with the controller's
    // credential once the user may read the MigrationCluster.
    let (status, namespaces) = alice.get("/api/clusters/source/namespaces").await;
    assert_eq!(status, StatusCode::OK, "{namespaces}");
    assert!(namespaces.as_array().unwrap().contains(&json!("shop")));
    let (status, pvcs) = alice.get("/api/clusters/source/pvcs?namespaces=shop").await;
    assert_eq!(status, StatusCode::OK, "{pvcs}");
    assert_eq!(pvcs[0]["name"], "data");
    assert_eq!(pvcs[0]["size"], "1Gi");
    assert_eq!(pvcs[0]["accessModes"], json!(["ReadWriteOnce"]));
    let (status, body) = alice
        .get("/api/clusters/source/pvcs?namespaces=shop,..%2Fnodes")
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = alice.get("/api/clusters/elsewhere/namespaces").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // A stage run, then its cancel, both as Alice.
    let (status, run) = alice
        .post("/api/plans/shop-move/runs", json!({"kind": "stage"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    let name = run["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("shop-move-stage-"), "{name}");
    let migrations = Api::<DynamicObject>::namespaced_with(
        setup.host.pair.destination.client.clone(),
        NS,
        &orchestrator::migration::resource(),
    );
    let migration = migrations.get(&name).await.unwrap();
    assert_eq!(migration.data["spec"]["planRef"], "shop-move");
    assert_eq!(migration.data["spec"]["kind"], "stage");
    let (status, body) = carol
        .json(
            reqwest::Method::DELETE,
            &format!("/api/migrations/{name}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = alice
        .json(
            reqwest::Method::DELETE,
            &format!("/api/migrations/{name}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let deleting = migrations.get_opt(&name).await.unwrap();
    assert!(
        deleting.is_none_or(|m| m.metadata.deletion_timestamp.is_some()),
        "the Migration is going"
    );
}

fn plan_form(name: &str) -> Value {
    json!({"name": name, "sourceCluster": "source", "destinationCluster": "host",
           "namespaces": ["shop"], "pvcs": ["shop/data"]})
}

#[tokio::test(flavor = "multi_thread")]
async fn the_plan_form_says_what_is_wrong_at_each_field() {
    let setup = setup().await;
    let alice = setup.login(&setup.user("alice", RIGHTS).await).await;
    let fields = |body: &Value| -> Vec<String> {
        body["fields"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };

    let (status, body) = alice.post("/api/plans", json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        fields(&body),
        [
            "destination-cluster",
            "namespace",
            "plan-name",
            "source-cluster"
        ]
    );

    let mut form = plan_form("Not_A_Name");
    form["sourceCluster"] = json!("nowhere");
    let (_, body) = alice.post("/api/plans", form).await;
    assert_eq!(fields(&body), ["plan-name"], "{body}");
    let (_, body) = alice
        .post("/api/plans", {
            let mut form = plan_form("p");
            form["sourceCluster"] = json!("nowhere");
            form
        })
        .await;
    assert_eq!(fields(&body), ["source-cluster"], "{body}");
    assert!(body["fields"]["source-cluster"]
        .as_str()
        .unwrap()
        .contains("nowhere"));

    let mut form = plan_form("p");
    form["namespaces"] = json!(["shop", "gone"]);
    let (_, body) = alice.post("/api/plans", form).await;
    assert_eq!(fields(&body), ["namespace"], "{body}");
    assert!(body["fields"]["namespace"]
        .as_str()
        .unwrap()
        .contains("gone"));

    let mut form = plan_form("p");
    form["pvcs"] = json!(["shop/missing"]);
    let (_, body) = alice.post("/api/plans", form).await;
    assert_eq!(fields(&body), ["pvc"], "{body}");
    let mut form = plan_form("p");
    form["pvcs"] = json!([]);
    let (_, body) = alice.post("/api/plans", form).await;
    assert!(body["fields"]["pvc"]
        .as_str()
        .unwrap()
        .contains("at least one PVC"));

    let (status, _) = alice.post("/api/plans", plan_form("p")).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = alice.post("/api/plans", plan_form("p")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fields(&body), ["plan-name"], "{body}");
    assert!(body["fields"]["plan-name"]
        .as_str()
        .unwrap()
        .contains("exists"));
}

#[tokio::test(flavor = "multi_thread")]
async fn event_streams_follow_status_changes() {
    let setup = setup().await;
    let alice = setup.login(&setup.user("alice", RIGHTS).await).await;
    let migrations = Api::<DynamicObject>::namespaced_with(
        setup.host.pair.destination.client.clone(),
        NS,
        &orchestrator::migration::resource(),
    );
    // A Migration no controller drives (no planRef): only this test
    // writes its status.
    let migration: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "mover.io/v1alpha1", "kind": "Migration",
        "metadata": {"name": "by-hand"},
        "spec": {"planName": "by-hand", "kind": "stage"},
    }))
    .unwrap();
    migrations
        .create(&PostParams::default(), &migration)
        .await
        .unwrap();

    let mut events = alice.events("/api/watch/migrations?name=by-hand").await;
    assert_eq!(events.next().await.0, "reset");
    let first = events.until(|event, _| event == "apply").await;
    assert_eq!(first["metadata"]["name"], "by-hand");
    assert!(first["metadata"].get("managedFields").is_none());
    events.until(|event, _| event == "ready").await;

    migrations
        .patch_status(
            "by-hand",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running", "step": "CopyVolumes",
                "pvcs": [{"namespace": "shop", "name": "data", "state": "copying",
                          "bytes_done": 512, "bytes_examined": 1024}]}})),
        )
        .await
        .unwrap();
    let changed = events
        .until(|event, data| event == "apply" && data["status"]["step"] == "CopyVolumes")
        .await;
    assert_eq!(changed["status"]["pvcs"][0]["bytes_done"], 512);

    migrations
        .delete("by-hand", &Default::default())
        .await
        .unwrap();
    let gone = events.until(|event, _| event == "delete").await;
    assert_eq!(gone["metadata"]["name"], "by-hand");

    // Streams of other kinds, and a kind that does not exist.
    let mut clusters = alice.events("/api/watch/clusters").await;
    let source = clusters
        .until(|event, data| event == "apply" && data["metadata"]["name"] == "source")
        .await;
    assert_eq!(source["spec"]["secretRef"]["name"], "source-token");
    let (status, _) = alice.get("/api/watch/secrets").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_and_assets_are_served_with_a_strict_policy() {
    let setup = setup().await;
    let browser = setup.anonymous();
    for path in [
        "/",
        "/login",
        "/clusters",
        "/plans",
        "/plans/new",
        "/plans/shop-move",
        "/migrations/shop-move-stage-x",
    ] {
        let response = browser.send(reqwest::Method::GET, path, None).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let csp = response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(csp.starts_with("default-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        let html = response.text().await.unwrap();
        assert!(html.contains(r#"<script type="module" src="/assets/app.js">"#));
    }

    // Every module the page imports, followed from app.js, is served as
    // JavaScript: a file missing from the binary would break the page.
    let import = regex::Regex::new(r#"(?m)^import .* from '(\./|\.\./)([^']+)';$"#).unwrap();
    let mut pending = vec!["app.js".to_string()];
    let mut seen = std::collections::BTreeSet::new();
    while let Some(path) = pending.pop() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let response = browser
            .send(reqwest::Method::GET, &format!("/assets/{path}"), None)
            .await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript"));
        let text = response.text().await.unwrap();
        let dir = path.rsplit_once('/').map_or("", |(dir, _)| dir);
        for found in import.captures_iter(&text) {
            let target = match (&found[1], dir) {
                ("./", "") => found[2].to_string(),
                ("./", dir) => format!("{dir}/{}", &found[2]),
                _ => found[2].to_string(),
            };
            pending.push(target);
        }
    }
    assert!(seen.len() >= 10, "{seen:?}");

    for (path, kind) in [
        ("/assets/console.css", "text/css"),
        ("/favicon.ico", "image/svg+xml"),
    ] {
        let response = browser.send(reqwest::Method::GET, path, None).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with(kind));
    }
    let (status, _) = browser.get("/assets/nothing.js").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = browser.get("/api/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
