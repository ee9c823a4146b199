//! Projected volumes: Secret, ConfigMap, downward API and ServiceAccount
//! token sources written into one directory, as the real kubelet's
//! projected volume plugin and token manager do. The ServiceAccount
//! admission plugin gives every pod one (`kube-api-access-XXXXX`: token,
//! `ca.crt`, `namespace`).
//!
//! Tokens come from TokenRequests for the pod's ServiceAccount, bound to
//! the pod, and are cached per pod. Like the real token manager, a token
//! is requested again once 80% of its lifetime has passed (or after 24
//! hours), by the pair's clock; the pod worker then rewrites the volume
//! (`Projector::refresh_due`).
//!
//! `kube-root-ca.crt`: the emulator runs no root CA publisher (its
//! ConfigMaps would show up in every namespace's Velero backup), so a
//! projected `configMap` source of that name that the namespace lacks is
//! filled with the cluster's CA, which is what the publisher would have
//! put there.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ProjectedVolumeSource, ServiceAccount};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube::ResourceExt as _;

use super::env::{self, PodFacts};
use super::sources::{KeyValues, Kind, Sources};
use super::state::Waiting;
use super::volumes::{file_mode, item_path, key_files, KeyFile};
use crate::context::ClusterContext;

/// The ConfigMap the root CA publisher keeps in every namespace.
const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";
/// A token source's lifetime when it names none (the API's default).
const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The longest the token manager keeps a token, whatever its lifetime.
const MAX_TOKEN_AGE: SignedDuration = SignedDuration::from_hours(24);

/// Which token a source asks for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct TokenKey {
    audience: Option<String>,
    expiration_seconds: i64,
}

/// A token the API server issued.
#[derive(Clone, Debug)]
struct Issued {
    token: String,
    /// When it should be replaced: 80% into its lifetime, or 24 hours
    /// after it was issued if that comes first.
    refresh_at: Timestamp,
}

/// What fills one pod's projected volumes beyond its namespace's Secrets
/// and ConfigMaps: its ServiceAccount tokens and the cluster's CA.
pub(super) struct Projector {
    ctx: Arc<ClusterContext>,
    tokens: HashMap<TokenKey, Issued>,
}

impl Projector {
    pub(super) fn new(ctx: Arc<ClusterContext>) -> Self {
        Self {
            ctx,
            tokens: HashMap::new(),
        }
    }

    /// Whether a token of the pod is due for renewal, by the pair's clock.
    pub(super) fn refresh_due(&self) -> bool {
        let now = self.ctx.shared.clock.now();
        self.tokens.values().any(|issued| now >= issued.refresh_at)
    }

    /// Whether the pod holds any token (and so needs looking after).
    pub(super) fn has_tokens(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The files of the pod's projected volume `volume`, with the
    /// volume's default mode applied; the token files belong to `owners`.
    pub(super) async fn files(
        &mut self,
        volume: &str,
        source: &ProjectedVolumeSource,
        pod: &Pod,
        sources: &mut Sources,
        owners: Owners,
    ) -> Result<Vec<KeyFile>, Waiting> {
        let namespace = pod.namespace().unwrap_or_default();
        let host_ip = self.ctx.router_ip.to_string();
        let facts = PodFacts {
            pod,
            host_ip: &host_ip,
            pod_ip: None,
            api_server: self.ctx.api_server.address,
        };
        let mut files = Vec::new();
        for projection in source.sources.iter().flatten() {
            let keyed = if let Some(secret) = &projection.secret {
                let optional = secret.optional.unwrap_or(false);
                let values = sources.get(Kind::Secret, &secret.name, optional).await?;
                Some((values, secret.items.as_deref()))
            } else if let Some(config_map) = &projection.config_map {
                let name = &config_map.name;
                let root_ca = name == ROOT_CA_CONFIG_MAP;
                let optional = config_map.optional.unwrap_or(false) || root_ca;
                let values = match sources.get(Kind::ConfigMap, name, optional).await? {
                    None if root_ca => Some(Arc::new(KeyValues::new(
                        Kind::ConfigMap,
                        &namespace,
                        name,
                        BTreeMap::from([(
                            "ca.crt".to_string(),
                            self.ctx.api_server.ca_pem.clone().into_bytes(),
                        )]),
                    ))),
                    values => values,
                };
                Some((values, config_map.items.as_deref()))
            } else {
                None
            };
            if let Some((Some(values), items)) = keyed {
                files.extend(key_files(volume, &values, items, source.default_mode)?);
            }
            if let Some(downward) = &projection.downward_api {
                for item in downward.items.iter().flatten() {
                    let Some(field) = &item.field_ref else {
                        return Err(Waiting::config(format!(
                            "volume \"{volume}\": downwardAPI item {}: only fieldRef is \
                             supported by the emulator's kubelet",
                            item.path
                        )));
                    };
                    files.push(KeyFile {
                        path: item_path(volume, &item.path)?,
                        data: env::volume_field(&field.field_path, &facts)?.into_bytes(),
                        mode: file_mode(volume, item.mode.or(source.default_mode))?,
                        owner: None,
                    });
                }
            }
            if let Some(token) = &projection.service_account_token {
                let key = TokenKey {
                    audience: token.audience.clone().filter(|a| !a.is_empty()),
                    expiration_seconds: token
                        .expiration_seconds
                        .unwrap_or(DEFAULT_EXPIRATION_SECONDS),
                };
                let issued = self.token(pod, key).await?;
                // As the real plugin: a token only its user (or group) reads
                // when the pod names them.
                let (file_mode, owner) = match owners {
                    Owners {
                        user: None,
                        group: None,
                    } => (file_mode(volume, source.default_mode)?, None),
                    Owners { user, .. } => (0o600, user),
                };
                files.push(KeyFile {
                    path: item_path(volume, &token.path)?,
                    data: issued.into_bytes(),
                    mode: file_mode,
                    owner,
                });
            }
        }
        Ok(files)
    }

    /// The token for `key`: the cached one while it is fresh, else a new
    /// one from a TokenRequest bound to the pod.
    async fn token(&mut self, pod: &Pod, key: TokenKey) -> Result<String, Waiting> {
        let now = self.ctx.shared.clock.now();
        if let Some(issued) = self.tokens.get(&key).filter(|i| now < i.refresh_at) {
            return Ok(issued.token.clone());
        }
        let namespace = pod.namespace().unwrap_or_default();
        let account = pod
            .spec
            .as_ref()
            .and_then(|spec| spec.service_account_name.clone())
            .unwrap_or_else(|| "default".to_string());
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: key.audience.clone().map(|audience| vec![audience]),
                expiration_seconds: Some(key.expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".to_string()),
                    kind: Some("Pod".to_string()),
                    name: Some(pod.name_any()),
                    uid: pod.uid(),
                }),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let failed = |why: String| {
            Waiting::creating(format!(
                "MountVolume.SetUp failed: failed to fetch token: {why}"
            ))
        };
        let answer: TokenRequest =
            Api::<ServiceAccount>::namespaced(self.ctx.client.clone(), &namespace)
                .create_subresource("token", &account, &PostParams::default(), &request)
                .await
                .map_err(|error| failed(error.to_string()))?;
        let status = answer.status.unwrap_or_default();
        let (Some(token), Some(expires)) = (status.token, status.expiration_timestamp) else {
            return Err(failed("the TokenRequest came back without a token".into()));
        };
        let lifetime = answer
            .spec
            .and_then(|spec| spec.expiration_seconds)
            .unwrap_or(key.expiration_seconds);
        let expires = expires.0;
        let issued_at = expires - SignedDuration::from_secs(lifetime);
        let refresh_at = std::cmp::min(
            expires - SignedDuration::from_secs(lifetime / 5),
            issued_at + MAX_TOKEN_AGE,
        );
        let issued = Issued { token, refresh_at };
        self.tokens.insert(key, issued.clone());
        Ok(issued.token)
    }
}

/// Who the real kubelet makes a projected token's file belong to: the
/// pod's fsGroup, and the user every container runs as when they all
/// name the same one (`fsUser`).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Owners {
    pub user: Option<u32>,
    pub group: Option<u32>,
}

impl Owners {
    pub(super) fn of(pod: &Pod) -> Self {
        let Some(spec) = pod.spec.as_ref() else {
            return Self::default();
        };
        let pod_context = spec.security_context.as_ref();
        let group = pod_context
            .and_then(|c| c.fs_group)
            .and_then(|gid| u32::try_from(gid).ok());
        let users: Vec<Option<i64>> = spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .map(|container| {
                container
                    .security_context
                    .as_ref()
                    .and_then(|c| c.run_as_user)
                    .or(pod_context.and_then(|c| c.run_as_user))
            })
            .collect();
        let user = match users.first() {
            Some(Some(first)) if users.iter().all(|u| *u == Some(*first)) => {
                u32::try_from(*first).ok()
            }
            _ => None,
        };
        Self { user, group }
    }
}
