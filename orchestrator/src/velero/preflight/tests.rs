use super::*;

fn location(name: &str, spec: Value, phase: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "velero.io/v1",
        "kind": "BackupStorageLocation",
        "metadata": {"name": name, "namespace": "velero"},
        "spec": spec,
        "status": {"phase": phase},
    }))
    .unwrap()
}

fn aws(bucket: &str, prefix: &str) -> Value {
    json!({"provider": "aws", "objectStorage": {"bucket": bucket, "prefix": prefix}})
}

#[test]
fn versions_are_read_from_tags_and_server_answers() {
    assert_eq!(Version::parse("v1.14.2"), Some(Version::new(1, 14, 2)));
    assert_eq!(Version::parse("1.12.0-rc.1"), Some(Version::new(1, 12, 0)));
    assert_eq!(Version::parse("v1.11"), Some(Version::new(1, 11, 0)));
    assert_eq!(Version::parse("latest"), None);
    assert_eq!(
        image_version("velero/velero:v1.13.1"),
        Some(Version::new(1, 13, 1))
    );
    assert_eq!(
        image_version("registry.example:5000/velero/velero:v1.15.0@sha256:abc"),
        Some(Version::new(1, 15, 0))
    );
    assert_eq!(
        image_version("registry.example:5000/oadp/velero@sha256:abc"),
        None
    );
    assert_eq!(image_version("registry.example:5000/velero"), None);
    assert_eq!(
        server_version(&json!({"status": {"phase": "Processed", "serverVersion": "v1.14.0"}})),
        Some("v1.14.0".into())
    );
    assert_eq!(server_version(&json!({"status": {"phase": "New"}})), None);
    assert!(Version::new(1, 11, 9) < Version::RESOURCE_MODIFIERS);
    assert!(Version::new(1, 12, 0) >= Version::RESOURCE_MODIFIERS);
    let needs = |resource_modifiers| {
        Needs {
            migration: "m",
            namespaces: &BTreeMap::new(),
            resource_modifiers,
        }
        .minimum_version()
    };
    assert_eq!(needs(true), Version::RESOURCE_MODIFIERS);
    assert_eq!(needs(false), Version::EXISTING_RESOURCE_POLICY);
}

#[test]
fn the_named_or_default_location_is_chosen() {
    let mut default = aws("b", "p");
    default["default"] = json!(true);
    let locations = [
        location("other", aws("x", ""), "Available"),
        location("main", default, "Available"),
    ];
    assert_eq!(
        choose_location(&locations, None).unwrap().name_any(),
        "main"
    );
    assert_eq!(
        choose_location(&locations, Some("other"))
            .unwrap()
            .name_any(),
        "other"
    );
    let missing = choose_location(&locations, Some("nope")).unwrap_err();
    assert!(
        missing.contains("\"nope\"") && missing.contains("velero.storageLocation"),
        "{missing}"
    );
    let none = choose_location(&locations[..1], None).unwrap_err();
    assert!(none.contains("default"), "{none}");
}

#[test]
fn locations_must_be_usable_and_share_the_bucket() {
    let from = location("default", aws("b", "migr/"), "Available");
    let to = location("default", aws("b", "migr"), "Available");
    assert!(
        location_problems("src", &from, "dst", &to).is_empty(),
        "a trailing slash is the same prefix"
    );

    let mut read_only = aws("b", "other");
    read_only["accessMode"] = json!("ReadOnly");
    let from = location("default", read_only, "Unavailable");
    let to = location("dr", aws("b", "migr"), "Unavailable");
    let problems = location_problems("src", &from, "dst", &to);
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(problems.len(), 4, "{text:#?}");
    assert!(
        text[0].starts_with("src: BackupStorageLocation velero/default: is Unavailable"),
        "{text:#?}"
    );
    assert!(text[1].contains("ReadOnly"), "{text:#?}");
    assert!(
        text[2].starts_with("dst: BackupStorageLocation velero/dr: is Unavailable"),
        "{text:#?}"
    );
    assert!(
        text[3].contains("prefix \"migr\"") && text[3].contains("prefix \"other\""),
        "{text:#?}"
    );
}

#[test]
fn other_migrations_in_flight_on_the_same_namespaces_conflict() {
    let velero = |kind: &str,
                  name: &str,
                  migration: &str,
                  spec: Value,
                  phase: &str|
     -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "velero.io/v1", "kind": kind,
            "metadata": {"name": name, "namespace": "velero", "labels": {VELERO_MIGRATION_LABEL: migration}},
            "spec": spec,
            "status": {"phase": phase},
        }))
        .unwrap()
    };
    let backups = [
        velero(
            "Backup",
            "a-initial",
            "a",
            json!({"includedNamespaces": ["shop"]}),
            "InProgress",
        ),
        velero(
            "Backup",
            "b-initial",
            "b",
            json!({"includedNamespaces": ["shop"]}),
            "Completed",
        ),
        velero(
            "Backup",
            "c-initial",
            "c",
            json!({"includedNamespaces": ["other"]}),
            "New",
        ),
        velero(
            "Backup",
            "me-initial",
            "me",
            json!({"includedNamespaces": ["shop"]}),
            "InProgress",
        ),
        velero(
            "Backup",
            "d-initial",
            "d",
            json!({"includedNamespaces": ["db"]}),
            "Completed",
        ),
    ];
    let restores = [
        velero(
            "Restore",
            "d-restore",
            "d",
            json!({"backupName": "d-initial", "namespaceMapping": {"db": "shop-copy"}}),
            "InProgress",
        ),
        velero(
            "Restore",
            "e-restore",
            "e",
            json!({"backupName": "gone"}),
            "Finalizing",
        ),
        velero(
            "Restore",
            "b-restore",
            "b",
            json!({"backupName": "b-initial"}),
            "Completed",
        ),
    ];
    let namespaces = BTreeMap::from([("shop".to_string(), "shop-copy".to_string())]);
    let found = in_flight_conflicts(&backups, &restores, "me", &namespaces);
    assert_eq!(
        found,
        vec![
            ("Backup", "a-initial".to_string(), "a".to_string()),
            ("Restore", "d-restore".to_string(), "d".to_string()),
        ]
    );
}
