//! Authentication and RBAC as a real API server does them, on Docker-less
//! clusters: HTTPS with the cluster's CA, client certificates, tokens and
//! ServiceAccount tokens, anonymous requests, 401 and 403 with the real
//! messages, role bindings, resourceNames and subresources, escalation
//! prevention, access reviews, through kube-rs and the real kubectl.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{
    LocalSubjectAccessReview, ResourceAttributes, SelfSubjectAccessReview,
    SelfSubjectAccessReviewSpec, SelfSubjectRulesReview, SelfSubjectRulesReviewSpec,
    SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube_emulator::api::Authority;
use kube_emulator::{Cluster, ClusterOptions, Credentials, Policy, Shared};
use serde_json::json;

const NS: &str = "x";

struct TestCluster {
    cluster: Cluster,
    dir: tempfile::TempDir,
}

async fn start(policy: Policy) -> TestCluster {
    let dir = tempfile::tempdir().expect("temporary directory");
    let shared = Arc::new(Shared {
        velero_bucket: dir.path().join("bucket"),
        instance: "rbac-test".to_string(),
        ..Shared::default()
    });
    std::fs::create_dir_all(&shared.velero_bucket).expect("bucket directory");
    let options = ClusterOptions {
        policy,
        ..ClusterOptions::new("rbac", false)
    };
    let cluster = Cluster::start(&options, dir.path(), shared)
        .await
        .expect("starting the emulated cluster");
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    let namespace = serde_json::from_value(json!({"metadata": {"name": NS}})).expect("namespace");
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .expect("creating the test namespace");
    TestCluster { cluster, dir }
}

impl TestCluster {
    fn as_token(&self, token: &str) -> kube::Client {
        self.client(&Credentials::Token(token.to_string()))
    }

    fn client(&self, credentials: &Credentials) -> kube::Client {
        self.cluster.client_with(credentials).expect("client")
    }

    /// A client as `developer`, with the certificate the kubeconfig has.
    fn developer(&self) -> kube::Client {
        let certificate = self
            .cluster
            .certificate_for("developer", &[])
            .expect("a certificate");
        self.client(&Credentials::Certificate(certificate))
    }

    fn kubeconfig(&self) -> PathBuf {
        let path = self.dir.path().join("kubeconfig");
        std::fs::write(&path, self.cluster.kubeconfig()).expect("kubeconfig");
        path
    }

    /// Binds the ClusterRole `role` to `subject` in the test namespace, as
    /// the administrator.
    async fn bind(&self, name: &str, kind: &str, role: &str, subject: Subject) {
        let binding = RoleBinding {
            metadata: meta(name),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: kind.into(),
                name: role.into(),
            },
            subjects: Some(vec![subject]),
        };
        Api::<RoleBinding>::namespaced(self.cluster.client.clone(), NS)
            .create(&PostParams::default(), &binding)
            .await
            .expect("binding a role");
    }

    async fn role(&self, name: &str, rules: Vec<PolicyRule>) {
        let role = Role {
            metadata: meta(name),
            rules: Some(rules),
        };
        Api::<Role>::namespaced(self.cluster.client.clone(), NS)
            .create(&PostParams::default(), &role)
            .await
            .expect("creating a role");
    }
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        ..ObjectMeta::default()
    }
}

fn user(name: &str) -> Subject {
    Subject {
        kind: "User".into(),
        api_group: Some("rbac.authorization.k8s.io".into()),
        name: name.into(),
        namespace: None,
    }
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let strings = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    PolicyRule {
        api_groups: Some(strings(groups)),
        resources: Some(strings(resources)),
        verbs: strings(verbs),
        ..PolicyRule::default()
    }
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }))
    .expect("pod")
}

/// The Status of a failed kube call.
fn api_error<T: std::fmt::Debug>(result: kube::Result<T>) -> Box<kube::core::Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Runs kubectl with `kubeconfig`; returns (success, stdout, stderr).
async fn kubectl(kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .await
        .expect("running kubectl");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn get_text(client: &kube::Client, path: &str) -> Result<String, kube::Error> {
    let request = http::Request::get(path).body(Vec::new()).expect("request");
    client.request_text(request).await
}

#[tokio::test]
async fn clients_trust_the_cluster_ca_and_anonymous_requests_see_only_public_information() {
    let test = start(Policy::default()).await;
    assert!(test.cluster.api_url.starts_with("https://127.0.0.1:"));
    let namespaces: Api<Namespace> = Api::all(test.cluster.client.clone());
    namespaces
        .get(NS)
        .await
        .expect("the admin reads over HTTPS");

    // a client trusting another CA does not get through the handshake
    let stranger = Authority::new("other").expect("a CA");
    let config = kube_emulator::cluster::client_config(
        &test.cluster.api_url,
        &stranger,
        &Credentials::Anonymous,
    )
    .expect("config");
    let untrusting = kube::Client::try_from(config).expect("client");
    let refused = get_text(&untrusting, "/version").await;
    assert!(
        !matches!(refused, Ok(_) | Err(kube::Error::Api(_))),
        "the server's certificate must not verify against another CA: {refused:?}"
    );

    let anonymous = test.client(&Credentials::Anonymous);
    get_text(&anonymous, "/version")
        .await
        .expect("/version is public");
    get_text(&anonymous, "/healthz")
        .await
        .expect("/healthz is public");
    let discovery = api_error(get_text(&anonymous, "/api").await);
    assert_eq!(
        (
            discovery.code,
            discovery.reason.as_str(),
            discovery.message.as_str()
        ),
        (
            403,
            "Forbidden",
            r#"forbidden: User "system:anonymous" cannot get path "/api""#
        )
    );
    let pods: Api<Pod> = Api::namespaced(anonymous, NS);
    let listed = api_error(pods.list(&Default::default()).await);
    assert_eq!(
        listed.message,
        r#"pods is forbidden: User "system:anonymous" cannot list resource "pods" in API group "" in the namespace "x""#
    );

    // a bad token is refused outright, not taken for anonymous
    let bad = test.as_token("not-a-token");
    let unauthorized = api_error(get_text(&bad, "/version").await);
    assert_eq!(
        (
            unauthorized.code,
            unauthorized.reason.as_str(),
            unauthorized.message.as_str()
        ),
        (401, "Unauthorized", "Unauthorized")
    );

    // a minted token authenticates with its user and groups
    let token = test.cluster.token_for("alice", &["team-a", "team-b"]);
    let reviews: Api<SelfSubjectReview> = Api::all(test.as_token(&token));
    let review = reviews
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .expect("whoami");
    let info = review.status.and_then(|s| s.user_info).expect("userInfo");
    assert_eq!(info.username.as_deref(), Some("alice"));
    assert_eq!(
        info.groups.unwrap_or_default(),
        ["team-a", "team-b", "system:authenticated"]
    );
}

#[tokio::test]
async fn kubectl_as_developer_is_forbidden_until_a_role_is_bound() {
    let test = start(Policy::default()).await;
    let kubeconfig = test.kubeconfig();
    let developer = ["--context", "rbac-developer"];
    let run = |args: &[&str]| {
        let args: Vec<String> = developer
            .iter()
            .chain(args)
            .map(|s| s.to_string())
            .collect();
        let kubeconfig = kubeconfig.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            kubectl(&kubeconfig, &args).await
        }
    };

    let (ok, out, err) = run(&["get", "pods", "-n", NS]).await;
    assert!(!ok, "{out}{err}");
    assert!(
        err.contains(r#"Error from server (Forbidden): pods is forbidden: User "developer" cannot list resource "pods" in API group "" in the namespace "x""#),
        "{err}"
    );
    let (ok, out, _) = run(&["auth", "can-i", "create", "pods", "-n", NS]).await;
    assert!(!ok && out.trim() == "no", "{out}");
    let (ok, out, err) = run(&["auth", "whoami"]).await;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("developer") && out.contains("system:authenticated"),
        "{out}"
    );

    // the administrator binds view with kubectl (a protobuf RoleBinding)
    let (ok, out, err) = kubectl(
        &kubeconfig,
        &[
            "--context",
            "rbac",
            "create",
            "rolebinding",
            "dev-view",
            "--clusterrole=view",
            "--user=developer",
            "-n",
            NS,
        ],
    )
    .await;
    assert!(ok, "{out}{err}");
    let (ok, out, err) = run(&["get", "pods", "-n", NS]).await;
    assert!(ok && err.contains("No resources found"), "{out}{err}");
    let (ok, out, _) = run(&["auth", "can-i", "create", "pods", "-n", NS]).await;
    assert!(!ok && out.trim() == "no", "view does not create: {out}");
    let (ok, out, _) = run(&["auth", "can-i", "list", "pods", "-n", NS]).await;
    assert!(ok && out.trim() == "yes", "{out}");
    let (ok, out, err) = run(&["auth", "can-i", "--list", "-n", NS]).await;
    assert!(ok, "{out}{err}");
    let pods = out
        .lines()
        .find(|line| line.starts_with("pods "))
        .unwrap_or_else(|| panic!("no pods line in {out}"));
    assert!(pods.contains("[get list watch]"), "{out}");

    let (ok, out, err) = kubectl(
        &kubeconfig,
        &[
            "--context",
            "rbac",
            "create",
            "rolebinding",
            "dev-edit",
            "--clusterrole=edit",
            "--user=developer",
            "-n",
            NS,
        ],
    )
    .await;
    assert!(ok, "{out}{err}");
    let (ok, out, _) = run(&["auth", "can-i", "create", "pods", "-n", NS]).await;
    assert!(ok && out.trim() == "yes", "{out}");
    let (ok, out, _) = run(&["auth", "can-i", "create", "pods", "-n", "default"]).await;
    assert!(!ok && out.trim() == "no", "only in x: {out}");

    // the admin contexts keep working; `kubectl create token` (a protobuf
    // TokenRequest) gives a token of the ServiceAccount
    let admin = |args: &[&str]| {
        let args: Vec<String> = ["--context", "rbac"]
            .iter()
            .chain(args)
            .map(|s| s.to_string())
            .collect();
        let kubeconfig = kubeconfig.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            kubectl(&kubeconfig, &args).await
        }
    };
    let (ok, out, err) = admin(&["get", "nodes,ns"]).await;
    assert!(ok && out.contains("namespace/x"), "{out}{err}");
    let (ok, out, err) = admin(&["create", "serviceaccount", "robot", "-n", NS]).await;
    assert!(ok, "{out}{err}");
    let (ok, token, err) = admin(&["create", "token", "robot", "-n", NS, "--duration=20m"]).await;
    assert!(ok, "{token}{err}");
    let reviews: Api<SelfSubjectReview> = Api::all(test.as_token(token.trim()));
    let review = reviews
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .expect("whoami with the token");
    let info = review.status.and_then(|s| s.user_info).expect("userInfo");
    assert_eq!(
        info.username.as_deref(),
        Some("system:serviceaccount:x:robot")
    );
    assert_eq!(
        info.groups.unwrap_or_default(),
        [
            "system:serviceaccounts",
            "system:serviceaccounts:x",
            "system:authenticated"
        ]
    );
}

#[tokio::test]
async fn service_account_tokens_follow_their_account_and_the_clock() {
    let test = start(Policy::default()).await;
    let accounts: Api<ServiceAccount> = Api::namespaced(test.cluster.client.clone(), NS);
    accounts
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: meta("app"),
                ..Default::default()
            },
        )
        .await
        .expect("service account");
    let request = |seconds: i64| TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(seconds),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let too_short = api_error(
        accounts
            .create_subresource::<_, TokenRequest>(
                "token",
                "app",
                &PostParams::default(),
                &request(60),
            )
            .await,
    );
    assert_eq!(too_short.code, 422, "{}", too_short.message);
    assert!(too_short
        .message
        .contains("may not specify a duration less than 10 minutes"));
    let missing = api_error(
        accounts
            .create_subresource::<_, TokenRequest>(
                "token",
                "nobody",
                &PostParams::default(),
                &request(600),
            )
            .await,
    );
    assert_eq!(missing.code, 404);

    let issue = || async {
        let issued: TokenRequest = accounts
            .create_subresource("token", "app", &PostParams::default(), &request(600))
            .await
            .expect("a token");
        issued.status.expect("status").token.expect("token")
    };
    let token = issue().await;
    let pods: Api<Pod> = Api::namespaced(test.as_token(&token), NS);
    let refused = api_error(pods.list(&Default::default()).await);
    assert_eq!(
        refused.message,
        r#"pods is forbidden: User "system:serviceaccount:x:app" cannot list resource "pods" in API group "" in the namespace "x""#
    );
    test.role("pod-reader", vec![rule(&[""], &["pods"], &["get", "list"])])
        .await;
    let account = Subject {
        kind: "ServiceAccount".into(),
        api_group: None,
        name: "app".into(),
        namespace: Some(NS.into()),
    };
    test.bind("app-reads-pods", "Role", "pod-reader", account)
        .await;
    pods.list(&Default::default())
        .await
        .expect("the bound ServiceAccount lists pods");

    // the pair's clock passes the expiration: 401
    test.cluster
        .context
        .shared
        .clock
        .advance(Duration::from_secs(601));
    let expired = api_error(pods.list(&Default::default()).await);
    assert_eq!(
        (expired.code, expired.reason.as_str()),
        (401, "Unauthorized")
    );

    // a fresh token works until its ServiceAccount is deleted
    let token = issue().await;
    let pods: Api<Pod> = Api::namespaced(test.as_token(&token), NS);
    pods.list(&Default::default()).await.expect("a fresh token");
    accounts
        .delete("app", &DeleteParams::default())
        .await
        .expect("deleting the ServiceAccount");
    let gone = api_error(pods.list(&Default::default()).await);
    assert_eq!(gone.code, 401);
}

#[tokio::test]
async fn resource_names_subresources_and_scopes_are_authorized_as_rbac_does() {
    let test = start(Policy::default()).await;
    let admin_pods: Api<Pod> = Api::namespaced(test.cluster.client.clone(), NS);
    for name in ["web", "db"] {
        admin_pods
            .create(&PostParams::default(), &pod(name))
            .await
            .expect("pod");
    }
    let mut named = rule(&[""], &["pods"], &["get"]);
    named.resource_names = Some(vec!["web".into()]);
    test.role("web-only", vec![named]).await;
    test.bind("dev-web", "Role", "web-only", user("developer"))
        .await;
    let pods: Api<Pod> = Api::namespaced(test.developer(), NS);
    pods.get("web").await.expect("the named pod");
    let db = api_error(pods.get("db").await);
    assert_eq!(
        db.message,
        r#"pods "db" is forbidden: User "developer" cannot get resource "pods" in API group "" in the namespace "x""#
    );
    let details = db.details.expect("details");
    assert_eq!(
        (
            details.name.as_str(),
            details.kind.as_str(),
            details.group.as_str()
        ),
        ("db", "pods", "")
    );
    let listed = api_error(pods.list(&Default::default()).await);
    assert_eq!(listed.code, 403, "resourceNames never allow a list");

    let log = api_error(pods.logs("web", &Default::default()).await);
    assert_eq!(
        log.message,
        r#"pods "web" is forbidden: User "developer" cannot get resource "pods/log" in API group "" in the namespace "x""#
    );
    test.role("logs", vec![rule(&[""], &["pods/log"], &["get"])])
        .await;
    test.bind("dev-logs", "Role", "logs", user("developer"))
        .await;
    let no_kubelet = api_error(pods.logs("web", &Default::default()).await);
    assert_eq!(
        no_kubelet.code, 404,
        "authorized, then no kubelet to ask: {}",
        no_kubelet.message
    );

    let nodes: Api<Node> = Api::all(test.developer());
    let node = api_error(nodes.get("n1").await);
    assert_eq!(
        node.message,
        r#"nodes "n1" is forbidden: User "developer" cannot get resource "nodes" in API group "" at the cluster scope"#
    );
    let namespaces: Api<Namespace> = Api::all(test.developer());
    let namespace = api_error(namespaces.get(NS).await);
    assert_eq!(
        namespace.message,
        r#"namespaces "x" is forbidden: User "developer" cannot get resource "namespaces" in API group "" in the namespace "x""#
    );
}

#[tokio::test]
async fn granting_more_than_one_holds_is_refused_unless_one_may_escalate_or_bind() {
    let test = start(Policy::default()).await;
    test.role(
        "manager",
        vec![
            rule(
                &["rbac.authorization.k8s.io"],
                &["roles", "rolebindings"],
                &["create", "update", "patch", "get"],
            ),
            rule(&[""], &["pods"], &["get", "list"]),
        ],
    )
    .await;
    test.bind("dev-manager", "Role", "manager", user("developer"))
        .await;
    let roles: Api<Role> = Api::namespaced(test.developer(), NS);
    let bindings: Api<RoleBinding> = Api::namespaced(test.developer(), NS);

    let held = Role {
        metadata: meta("pod-reader"),
        rules: Some(vec![rule(&[""], &["pods"], &["get"])]),
    };
    roles
        .create(&PostParams::default(), &held)
        .await
        .expect("granting what one holds");
    let secrets = Role {
        metadata: meta("secret-reader"),
        rules: Some(vec![rule(&[""], &["secrets", "pods"], &["get", "delete"])]),
    };
    let refused = api_error(roles.create(&PostParams::default(), &secrets).await);
    assert_eq!((refused.code, refused.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        refused.message,
        "roles.rbac.authorization.k8s.io \"secret-reader\" is forbidden: user \"developer\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"delete\"]}\n{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\" \"delete\"]}"
    );

    let edit = RoleBinding {
        metadata: meta("dev-edit"),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: "edit".into(),
        },
        subjects: Some(vec![user("developer")]),
    };
    let refused = api_error(bindings.create(&PostParams::default(), &edit).await);
    assert_eq!(refused.code, 403);
    assert!(
        refused.message.starts_with(r#"rolebindings.rbac.authorization.k8s.io "dev-edit" is forbidden: user "developer" (groups=["system:authenticated"]) is attempting to grant RBAC permissions not currently held:"#),
        "{}",
        refused.message
    );

    // `bind` on that ClusterRole (by name) lets the binding through, and
    // `escalate` on roles the role
    let mut bind = rule(&["rbac.authorization.k8s.io"], &["clusterroles"], &["bind"]);
    bind.resource_names = Some(vec!["edit".into()]);
    test.role(
        "binder",
        vec![
            bind,
            rule(&["rbac.authorization.k8s.io"], &["roles"], &["escalate"]),
        ],
    )
    .await;
    test.bind("dev-binder", "Role", "binder", user("developer"))
        .await;
    bindings
        .create(&PostParams::default(), &edit)
        .await
        .expect("bind allows the binding");
    roles
        .create(&PostParams::default(), &secrets)
        .await
        .expect("escalate allows the role");
    let mut admin = edit.clone();
    admin.metadata = meta("dev-admin");
    admin.role_ref.name = "admin".into();
    let refused = api_error(bindings.create(&PostParams::default(), &admin).await);
    assert_eq!(
        refused.code, 403,
        "bind names edit only: {}",
        refused.message
    );
}

#[tokio::test]
async fn access_reviews_answer_from_rbac() {
    let test = start(Policy::default()).await;
    let attributes = |verb: &str, resource: &str, namespace: &str| ResourceAttributes {
        verb: Some(verb.into()),
        resource: Some(resource.into()),
        namespace: Some(namespace.into()),
        ..ResourceAttributes::default()
    };
    let reviews: Api<SubjectAccessReview> = Api::all(test.cluster.client.clone());
    let review = |verb: &str, user: &str| SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.into()),
            resource_attributes: Some(attributes(verb, "pods", NS)),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let status = |review: SubjectAccessReview| review.status.expect("status");
    let denied = status(
        reviews
            .create(&PostParams::default(), &review("list", "developer"))
            .await
            .expect("review"),
    );
    assert!(!denied.allowed);
    test.bind("dev-view", "ClusterRole", "view", user("developer"))
        .await;
    let allowed = status(
        reviews
            .create(&PostParams::default(), &review("list", "developer"))
            .await
            .expect("review"),
    );
    assert!(allowed.allowed);
    assert_eq!(
        allowed.reason.as_deref(),
        Some(
            r#"RBAC: allowed by RoleBinding "dev-view/x" of ClusterRole "view" to User "developer""#
        )
    );
    // the emulator's components hold explicit verbs, never `use` or `bind`
    let mut scc = review("use", "system:kube-controller-manager");
    scc.spec.resource_attributes = Some(ResourceAttributes {
        group: Some("security.openshift.io".into()),
        resource: Some("securitycontextconstraints".into()),
        name: Some("privileged".into()),
        ..attributes("use", "", NS)
    });
    assert!(
        !status(
            reviews
                .create(&PostParams::default(), &scc)
                .await
                .expect("review")
        )
        .allowed
    );
    let create = review("create", "system:kube-controller-manager");
    assert!(
        status(
            reviews
                .create(&PostParams::default(), &create)
                .await
                .expect("review")
        )
        .allowed
    );

    // a developer may not ask about others, but may ask about itself
    let by_developer: Api<SubjectAccessReview> = Api::all(test.developer());
    let refused = api_error(
        by_developer
            .create(&PostParams::default(), &review("list", "admin"))
            .await,
    );
    assert_eq!(
        refused.message,
        r#"subjectaccessreviews.authorization.k8s.io is forbidden: User "developer" cannot create resource "subjectaccessreviews" in API group "authorization.k8s.io" at the cluster scope"#
    );
    let own: Api<SelfSubjectAccessReview> = Api::all(test.developer());
    let self_review = |verb: &str| SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(attributes(verb, "pods", NS)),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let watch = own
        .create(&PostParams::default(), &self_review("watch"))
        .await
        .expect("review");
    assert!(watch.status.expect("status").allowed);
    let delete = own
        .create(&PostParams::default(), &self_review("delete"))
        .await
        .expect("review");
    assert!(!delete.status.expect("status").allowed);

    // a local review stays in its namespace
    let local: Api<LocalSubjectAccessReview> = Api::namespaced(test.cluster.client.clone(), NS);
    let review_in = |namespace: &str| LocalSubjectAccessReview {
        metadata: ObjectMeta {
            namespace: Some(NS.into()),
            ..ObjectMeta::default()
        },
        spec: SubjectAccessReviewSpec {
            user: Some("developer".into()),
            resource_attributes: Some(attributes("get", "pods", namespace)),
            ..SubjectAccessReviewSpec::default()
        },
        ..LocalSubjectAccessReview::default()
    };
    let answered = local
        .create(&PostParams::default(), &review_in(NS))
        .await
        .expect("review");
    assert!(answered.status.expect("status").allowed);
    let elsewhere = api_error(
        local
            .create(&PostParams::default(), &review_in("default"))
            .await,
    );
    assert_eq!(elsewhere.code, 400);

    // the rules review lists what view grants, the aggregated additions
    // included
    let aggregated: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": "secrets-viewer", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
    }))
    .expect("cluster role");
    Api::<ClusterRole>::all(test.cluster.client.clone())
        .create(&PostParams::default(), &aggregated)
        .await
        .expect("aggregated cluster role");
    let secrets: Api<Secret> = Api::namespaced(test.developer(), NS);
    let missing = api_error(secrets.get("none").await);
    assert_eq!(
        missing.code, 404,
        "view now reads secrets: {}",
        missing.message
    );
    let rules: Api<SelfSubjectRulesReview> = Api::all(test.developer());
    let review = SelfSubjectRulesReview {
        spec: SelfSubjectRulesReviewSpec {
            namespace: Some(NS.into()),
        },
        ..SelfSubjectRulesReview::default()
    };
    let status = rules
        .create(&PostParams::default(), &review)
        .await
        .expect("rules review")
        .status
        .expect("status");
    assert!(!status.incomplete);
    let grants = |resource: &str, verb: &str| {
        status.resource_rules.iter().any(|rule| {
            rule.resources.iter().flatten().any(|r| r == resource)
                && rule.verbs.iter().any(|v| v == verb)
        })
    };
    assert!(grants("pods", "list") && grants("secrets", "get"));
    assert!(!grants("pods", "create"));
    assert!(status.non_resource_rules.iter().any(|rule| rule
        .non_resource_urls
        .iter()
        .flatten()
        .any(|u| u == "/api")));
}

#[tokio::test]
async fn with_authorization_off_everyone_may_do_anything_but_is_still_authenticated() {
    let test = start(Policy {
        authorization: false,
        ..Policy::default()
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(test.developer(), NS);
    pods.create(&PostParams::default(), &pod("web"))
        .await
        .expect("anything goes");
    let anonymous: Api<Pod> = Api::namespaced(test.client(&Credentials::Anonymous), NS);
    anonymous
        .list(&Default::default())
        .await
        .expect("even anonymously");
    let reviews: Api<SelfSubjectAccessReview> = Api::all(test.developer());
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some("delete".into()),
                resource: Some("nodes".into()),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let answered = reviews
        .create(&PostParams::default(), &review)
        .await
        .expect("review");
    assert!(answered.status.expect("status").allowed);
    let bad = api_error(get_text(&test.as_token("forged"), "/api").await);
    assert_eq!(bad.code, 401, "authentication still applies");
}
