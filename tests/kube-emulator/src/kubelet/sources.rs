//! Secrets and ConfigMaps as containers read them (env vars and volume
//! files), fetched from the API once per container start, with the error
//! messages a real kubelet gives when one is missing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;

use super::state::Waiting;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Kind {
    Secret,
    ConfigMap,
}

impl Kind {
    /// The resource name in messages: `secret "x" not found`.
    fn resource(self) -> &'static str {
        match self {
            Kind::Secret => "secret",
            Kind::ConfigMap => "configmap",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Kind::Secret => "Secret",
            Kind::ConfigMap => "ConfigMap",
        }
    }
}

/// The keys and values of one Secret or ConfigMap.
pub(super) struct KeyValues {
    kind: Kind,
    namespace: String,
    name: String,
    pub(super) data: BTreeMap<String, Vec<u8>>,
}

impl KeyValues {
    /// Values that come from elsewhere than the API, named as the object
    /// they stand for.
    pub(super) fn new(
        kind: Kind,
        namespace: &str,
        name: &str,
        data: BTreeMap<String, Vec<u8>>,
    ) -> Self {
        Self {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
            data,
        }
    }

    pub(super) fn get(&self, key: &str) -> Result<&[u8], Waiting> {
        self.data.get(key).map(Vec::as_slice).ok_or_else(|| {
            Waiting::config(format!(
                "couldn't find key {key} in {} {}/{}",
                self.kind.kind(),
                self.namespace,
                self.name
            ))
        })
    }
}

/// The Secrets and ConfigMaps of one namespace, each fetched at most once.
pub(super) struct Sources {
    client: kube::Client,
    namespace: String,
    fetched: HashMap<(Kind, String), Option<Arc<KeyValues>>>,
}

impl Sources {
    pub(super) fn new(client: kube::Client, namespace: &str) -> Self {
        Self {
            client,
            namespace: namespace.to_string(),
            fetched: HashMap::new(),
        }
    }

    /// The Secret or ConfigMap `name`; `None` if it does not exist and
    /// `optional` says that is fine.
    pub(super) async fn get(
        &mut self,
        kind: Kind,
        name: &str,
        optional: bool,
    ) -> Result<Option<Arc<KeyValues>>, Waiting> {
        let key = (kind, name.to_string());
        if !self.fetched.contains_key(&key) {
            let data = self.fetch(kind, name).await?;
            let values = data.map(|data| {
                Arc::new(KeyValues {
                    kind,
                    namespace: self.namespace.clone(),
                    name: name.to_string(),
                    data,
                })
            });
            self.fetched.insert(key.clone(), values);
        }
        match self.fetched.get(&key).cloned().flatten() {
            Some(values) => Ok(Some(values)),
            None if optional => Ok(None),
            None => Err(Waiting::config(format!(
                "{} \"{name}\" not found",
                kind.resource()
            ))),
        }
    }

    async fn fetch(
        &self,
        kind: Kind,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, Waiting> {
        let failed = |error: kube::Error| {
            Waiting::config(format!("getting {} \"{name}\": {error}", kind.resource()))
        };
        Ok(match kind {
            Kind::Secret => Api::<Secret>::namespaced(self.client.clone(), &self.namespace)
                .get_opt(name)
                .await
                .map_err(failed)?
                .map(secret_data),
            Kind::ConfigMap => Api::<ConfigMap>::namespaced(self.client.clone(), &self.namespace)
                .get_opt(name)
                .await
                .map_err(failed)?
                .map(config_map_data),
        })
    }
}

/// A Secret's `data`, plus its `stringData` in case the API server kept it
/// as written rather than folding it into `data`.
fn secret_data(secret: Secret) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = secret
        .string_data
        .unwrap_or_default()
        .into_iter()
        .map(|(key, value)| (key, value.into_bytes()))
        .collect();
    data.extend(
        secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(key, value)| (key, value.0)),
    );
    data
}

fn config_map_data(config_map: ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = config_map
        .binary_data
        .unwrap_or_default()
        .into_iter()
        .map(|(key, value)| (key, value.0))
        .collect();
    data.extend(
        config_map
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(key, value)| (key, value.into_bytes())),
    );
    data
}
