//! Keystone reads for notification: a user (with its e-mail) and a
//! project's members through effective role assignments. Implements
//! core's `Directory`.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use novaha_core::drivers::{Directory, DirectoryError, Person};
use serde::Deserialize;

use crate::error::OpenStackError;
use crate::session::{Call, ServiceType, Session};

/// A Keystone user as novaha needs it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct User {
    /// The id.
    pub id: String,
    /// The login name.
    #[serde(default)]
    pub name: Option<String>,
    /// Its e-mail address (an extra attribute; often unset).
    #[serde(default)]
    pub email: Option<String>,
    /// Whether the user is enabled.
    #[serde(default)]
    pub enabled: Option<bool>,
}

impl User {
    /// The core crate's view of this user.
    pub fn to_person(&self) -> Person {
        Person {
            user_id: self.id.clone(),
            name: self.name.clone(),
            email: self.email.clone().filter(|e| !e.trim().is_empty()),
        }
    }
}

#[derive(Deserialize)]
struct UserBody {
    user: User,
}

#[derive(Deserialize)]
struct AssignmentsBody {
    role_assignments: Vec<Assignment>,
}

#[derive(Deserialize)]
struct Assignment {
    #[serde(default)]
    user: Option<IdOnly>,
}

#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Keystone v3 reads through the shared session. Cheap to clone.
#[derive(Clone, Debug)]
pub struct KeystoneClient {
    session: Arc<Session>,
}

impl KeystoneClient {
    /// A client on `session` (the identity endpoint from the catalog, or
    /// the auth URL when the catalog lists none).
    pub fn new(session: Arc<Session>) -> Self {
        Self { session }
    }

    /// One user; `Ok(None)` when Keystone answers 404. Read-only, retried.
    pub async fn user(&self, user_id: &str) -> Result<Option<User>, OpenStackError> {
        let call = Call::get(
            "keystone get user",
            ServiceType::Identity,
            format!("/users/{}", enc(user_id)),
        );
        match self.session.json::<UserBody>(&call).await {
            Ok(b) => Ok(Some(b.user)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The ids of the users with an effective role on `project_id` (group
    /// memberships expanded by Keystone), each once, sorted.
    pub async fn project_member_ids(
        &self,
        project_id: &str,
    ) -> Result<Vec<String>, OpenStackError> {
        let call = Call::get(
            "keystone list role assignments",
            ServiceType::Identity,
            format!(
                "/role_assignments?scope.project.id={}&effective",
                enc(project_id)
            ),
        );
        let body: AssignmentsBody = self.session.json(&call).await?;
        let ids: BTreeSet<String> = body
            .role_assignments
            .into_iter()
            .filter_map(|a| a.user.map(|u| u.id))
            .collect();
        Ok(ids.into_iter().collect())
    }

    /// The users with an effective role on `project_id`; users that vanished
    /// between the two reads are left out.
    pub async fn project_members(&self, project_id: &str) -> Result<Vec<User>, OpenStackError> {
        let mut out = Vec::new();
        for id in self.project_member_ids(project_id).await? {
            if let Some(u) = self.user(&id).await? {
                out.push(u);
            }
        }
        Ok(out)
    }
}

fn directory_error(e: OpenStackError) -> DirectoryError {
    if e.is_retryable() {
        DirectoryError::Unavailable(e.to_string())
    } else {
        DirectoryError::Refused(e.to_string())
    }
}

#[async_trait]
impl Directory for KeystoneClient {
    async fn user(&self, user_id: &str) -> Result<Option<Person>, DirectoryError> {
        KeystoneClient::user(self, user_id)
            .await
            .map(|u| u.map(|u| u.to_person()))
            .map_err(directory_error)
    }

    async fn project_members(&self, project_id: &str) -> Result<Vec<Person>, DirectoryError> {
        KeystoneClient::project_members(self, project_id)
            .await
            .map(|us| us.iter().map(User::to_person).collect())
            .map_err(directory_error)
    }
}
