//! Whether a service's existing container may run its next task, keeping its root (as
//! Docker's restart policy keeps a container), or must be created afresh: a pure
//! decision on what containerd holds and what the service wants, tested by table.

use std::collections::HashMap;

use oci_spec::runtime::Spec;

use crate::LABEL_BOOT;

/// The service's container as containerd holds it.
pub(super) struct Existing<'a> {
    /// The container's id (the service's name).
    pub id: &'a str,
    pub image: &'a str,
    pub labels: &'a HashMap<String, String>,
    /// The stored OCI runtime spec (JSON), if any.
    pub spec: Option<&'a [u8]>,
    /// Its snapshot's key: the id for a snapshotter root, empty for an image-store root.
    pub snapshot_key: &'a str,
}

/// What the service's next start wants.
pub(super) struct Wanted<'a> {
    pub image: &'a str,
    pub labels: &'a HashMap<String, String>,
    pub spec: &'a Spec,
    /// Whether its root is an overlay of the unpacked image store (else a snapshot).
    pub store_root: bool,
}

/// The decision.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Reuse {
    /// A new task on the kept container and root.
    Keep,
    /// Remove it (with its root) and create it anew, for this reason.
    Recreate(&'static str),
}

/// Keep the container only when it was created in this boot (a reboot starts from a fresh
/// root) for the very same image, labels, spec and kind of root.
pub(super) fn decide(existing: &Existing<'_>, wanted: &Wanted<'_>) -> Reuse {
    if !wanted.labels.contains_key(LABEL_BOOT) {
        return Reuse::Recreate("no boot id to tell this boot's container from an earlier one");
    }
    if existing.image != wanted.image {
        return Reuse::Recreate("its image changed");
    }
    if existing.labels != wanted.labels {
        return Reuse::Recreate("its labels changed (another boot, or a changed definition)");
    }
    // Compared as specs: capability sets and maps are serialised in any order.
    let stored = existing
        .spec
        .and_then(|bytes| serde_json::from_slice::<Spec>(bytes).ok());
    if stored.as_ref() != Some(wanted.spec) {
        return Reuse::Recreate("its runtime spec changed");
    }
    let same_root = match wanted.store_root {
        true => existing.snapshot_key.is_empty(),
        false => existing.snapshot_key == existing.id,
    };
    if !same_root {
        return Reuse::Recreate("its kind of root changed");
    }
    Reuse::Keep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_is_kept_only_for_the_same_boot_image_labels_spec_and_root() {
        let labels: HashMap<String, String> =
            [(LABEL_BOOT.to_string(), "boot-1".to_string())].into();
        let other_boot: HashMap<String, String> =
            [(LABEL_BOOT.to_string(), "boot-2".to_string())].into();
        let no_boot = HashMap::new();
        let spec = Spec::default();
        let mut changed = Spec::default();
        changed.set_hostname(Some("elsewhere".into()));
        let stored = serde_json::to_vec(&spec).unwrap();
        let existing = |labels, spec, key| Existing {
            id: "ntp",
            image: "ros/ntp:1",
            labels,
            spec,
            snapshot_key: key,
        };
        let wanted = |labels, spec, store_root| Wanted {
            image: "ros/ntp:1",
            labels,
            spec,
            store_root,
        };
        let keep = Reuse::Keep;
        let table: Vec<(Existing<'_>, Wanted<'_>, Reuse)> = vec![
            (
                existing(&labels, Some(&stored), "ntp"),
                wanted(&labels, &spec, false),
                keep,
            ),
            (
                existing(&labels, Some(&stored), ""),
                wanted(&labels, &spec, true),
                Reuse::Keep,
            ),
            (
                existing(&labels, Some(&stored), "ntp"),
                wanted(&no_boot, &spec, false),
                Reuse::Recreate("no boot id to tell this boot's container from an earlier one"),
            ),
            (
                existing(&other_boot, Some(&stored), "ntp"),
                wanted(&labels, &spec, false),
                Reuse::Recreate("its labels changed (another boot, or a changed definition)"),
            ),
            (
                existing(&labels, Some(&stored), "ntp"),
                wanted(&labels, &changed, false),
                Reuse::Recreate("its runtime spec changed"),
            ),
            (
                existing(&labels, Some(b"{not json"), "ntp"),
                wanted(&labels, &spec, false),
                Reuse::Recreate("its runtime spec changed"),
            ),
            (
                existing(&labels, None, "ntp"),
                wanted(&labels, &spec, false),
                Reuse::Recreate("its runtime spec changed"),
            ),
            (
                existing(&labels, Some(&stored), "ntp"),
                wanted(&labels, &spec, true),
                Reuse::Recreate("its kind of root changed"),
            ),
            (
                existing(&labels, Some(&stored), ""),
                wanted(&labels, &spec, false),
                Reuse::Recreate("its kind of root changed"),
            ),
        ];
        for (i, (existing, wanted, want)) in table.iter().enumerate() {
            assert_eq!(&decide(existing, wanted), want, "row {i}");
        }
        let moved = Wanted {
            image: "ros/ntp:2",
            ..wanted(&labels, &spec, false)
        };
        assert_eq!(
            decide(&existing(&labels, Some(&stored), "ntp"), &moved),
            Reuse::Recreate("its image changed")
        );
    }
}
