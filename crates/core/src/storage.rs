//! Where an instance's root disk lives, and what evacuating it risks
//! (docs/recovery.md, "Storage classes").
//!
//! Evacuating an instance is a rebuild on another host. Its disk survives
//! only when the new host can reach it: a root volume (boot from volume) or
//! an ephemeral disk on storage every compute shares (Ceph RBD ephemeral,
//! an NFS `instances_path`). Anything else is on the dead host's own disk:
//! the rebuild starts from the image and the root disk's data is lost.
//!
//! Nova says whether an instance boots from volume; it does not say whether
//! a host's ephemeral storage is shared, so the operator declares that per
//! node (`config/shared_storage` in the K/V tree) or for all nodes
//! (`[evacuate] shared_storage`). An instance on a shared node may still be
//! declared `local` by its metadata (a disk known to be on the host's own
//! storage): a declaration can only make novaha more careful, never less.
//!
//! Pure: no I/O, no clock.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Where an instance's root disk lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageClass {
    /// Boots from a volume (no image, a root volume attached): the disk
    /// survives an evacuation.
    Volume,
    /// An ephemeral disk on storage every compute shares: survives.
    Shared,
    /// An ephemeral disk on the failed host's own storage: an evacuation is
    /// a rebuild from the image and the root disk's data is lost.
    Local,
}

impl StorageClass {
    /// The name written in the record, the status and the mails.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Volume => "volume",
            Self::Shared => "shared",
            Self::Local => "local",
        }
    }

    /// True when an evacuation keeps the root disk's data.
    pub fn keeps_disk(self) -> bool {
        !matches!(self, Self::Local)
    }
}

impl fmt::Display for StorageClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do with a `local` instance (`[evacuate] local_storage`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalStorage {
    /// Do not evacuate it: record `skipped` with the reason and tell its
    /// owner and the admins that it needs a human (default).
    #[default]
    Skip,
    /// Evacuate it anyway: rebuilt from its image, root disk data lost.
    Rebuild,
}

/// The storage side of the recovery policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoragePolicy {
    /// `[evacuate] shared_storage`: every node's ephemeral storage is
    /// shared unless the node's `config/shared_storage` says otherwise.
    pub shared_storage: bool,
    /// `[evacuate] local_storage`.
    pub local: LocalStorage,
    /// An instance whose metadata holds this key with a true value is
    /// rebuilt even under `local_storage = "skip"` (its owner accepts the
    /// loss of the root disk).
    pub rebuild_ok_key: String,
    /// An instance whose metadata holds this key with the value `local` is
    /// `local` even on a shared node.
    pub storage_key: String,
}

/// The default metadata key of [`StoragePolicy::rebuild_ok_key`].
pub const REBUILD_OK_KEY: &str = "novaha_rebuild_ok";
/// The default metadata key of [`StoragePolicy::storage_key`].
pub const STORAGE_KEY: &str = "novaha_storage";

impl Default for StoragePolicy {
    fn default() -> Self {
        Self {
            shared_storage: false,
            local: LocalStorage::Skip,
            rebuild_ok_key: REBUILD_OK_KEY.to_owned(),
            storage_key: STORAGE_KEY.to_owned(),
        }
    }
}

fn is_true(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "true" | "t" | "yes" | "1"
    )
}

impl StoragePolicy {
    /// Whether `node`'s ephemeral storage is shared: its own declaration
    /// (`config/shared_storage`, `None` when absent) else the default.
    pub fn node_shared(&self, node_override: Option<bool>) -> bool {
        node_override.unwrap_or(self.shared_storage)
    }

    /// The storage class of an instance (booted from a volume or not, with
    /// its server `metadata`) on a node whose ephemeral storage is `shared`
    /// (see [`StoragePolicy::node_shared`]).
    pub fn classify(
        &self,
        boot_from_volume: bool,
        metadata: &BTreeMap<String, String>,
        shared: bool,
    ) -> StorageClass {
        if boot_from_volume {
            return StorageClass::Volume;
        }
        let declared_local = metadata
            .get(&self.storage_key)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("local"));
        if shared && !declared_local {
            StorageClass::Shared
        } else {
            StorageClass::Local
        }
    }

    /// Why an instance of class `class` with `metadata` is not evacuated,
    /// or `None` when it is. Only `local` instances are ever held back, and
    /// only under `local_storage = "skip"` without the owner's opt-in.
    pub fn skip_reason(
        &self,
        class: StorageClass,
        metadata: &BTreeMap<String, String>,
    ) -> Option<String> {
        if class != StorageClass::Local || self.local == LocalStorage::Rebuild {
            return None;
        }
        if metadata
            .get(&self.rebuild_ok_key)
            .is_some_and(|v| is_true(v))
        {
            return None;
        }
        Some(format!(
            "root disk on the failed host's local storage: evacuating would rebuild it \
             from its image and lose the disk's data; needs a human (metadata {}=true \
             accepts the rebuild)",
            self.rebuild_ok_key
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::Instance;

    fn class(p: &StoragePolicy, i: &Instance, shared: bool) -> StorageClass {
        p.classify(i.boot_from_volume, &i.metadata, shared)
    }

    fn inst(bfv: bool, md: &[(&str, &str)]) -> Instance {
        Instance {
            id: "u".into(),
            boot_from_volume: bfv,
            metadata: md
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Instance::default()
        }
    }

    #[test]
    fn boot_from_volume_is_volume_whatever_the_node() {
        let p = StoragePolicy::default();
        assert_eq!(class(&p, &inst(true, &[]), false), StorageClass::Volume);
        assert_eq!(class(&p, &inst(true, &[]), true), StorageClass::Volume);
        // A volume instance declared local is still a volume: its root disk
        // is the volume.
        let declared = inst(true, &[(STORAGE_KEY, "local")]);
        assert_eq!(class(&p, &declared, true), StorageClass::Volume);
    }

    #[test]
    fn image_backed_follows_the_node_and_the_local_declaration() {
        let p = StoragePolicy::default();
        assert_eq!(class(&p, &inst(false, &[]), true), StorageClass::Shared);
        assert_eq!(class(&p, &inst(false, &[]), false), StorageClass::Local);
        let declared = inst(false, &[(STORAGE_KEY, " Local ")]);
        assert_eq!(class(&p, &declared, true), StorageClass::Local);
        // Metadata cannot claim shared storage on a local node.
        let claims = inst(false, &[(STORAGE_KEY, "shared")]);
        assert_eq!(class(&p, &claims, false), StorageClass::Local);
    }

    #[test]
    fn node_override_beats_the_default() {
        let p = StoragePolicy {
            shared_storage: true,
            ..StoragePolicy::default()
        };
        assert!(p.node_shared(None));
        assert!(!p.node_shared(Some(false)));
        assert!(StoragePolicy::default().node_shared(Some(true)));
    }

    #[test]
    fn only_local_instances_are_skipped_and_opt_in_or_rebuild_lets_them_go() {
        let p = StoragePolicy::default();
        let none = BTreeMap::new();
        assert_eq!(p.skip_reason(StorageClass::Volume, &none), None);
        assert_eq!(p.skip_reason(StorageClass::Shared, &none), None);
        let why = p.skip_reason(StorageClass::Local, &none).expect("skipped");
        assert!(why.contains("lose the disk's data"), "{why}");
        assert!(why.contains(REBUILD_OK_KEY), "{why}");
        let ok = inst(false, &[(REBUILD_OK_KEY, "yes")]).metadata;
        assert_eq!(p.skip_reason(StorageClass::Local, &ok), None);
        let no = inst(false, &[(REBUILD_OK_KEY, "false")]).metadata;
        assert!(p.skip_reason(StorageClass::Local, &no).is_some());
        let rebuild = StoragePolicy {
            local: LocalStorage::Rebuild,
            ..StoragePolicy::default()
        };
        assert_eq!(rebuild.skip_reason(StorageClass::Local, &none), None);
    }

    #[test]
    fn names_round_trip_through_serde() {
        for c in [
            StorageClass::Volume,
            StorageClass::Shared,
            StorageClass::Local,
        ] {
            let v = serde_json::to_value(c).expect("serialise");
            assert_eq!(v, c.as_str());
            assert_eq!(serde_json::from_value::<StorageClass>(v).expect("parse"), c);
        }
        assert_eq!(
            serde_json::from_str::<LocalStorage>("\"rebuild\"").expect("parse"),
            LocalStorage::Rebuild
        );
    }
}
