//! Args validation and canonical form (docs/REGISTRY.md): any JSON a client posts as `args`.
//!
//! The input is parsed as JSON and validated against every query of the example registry
//! and against one optional arg of every declared type (`{"int4": …, "numeric[]": …}`), so
//! each coercion is reached. Validation must not panic, and an accepted value's canonical
//! form is a fixed point: validating it again, as a value or re-read from its JSON text,
//! gives the same canonical JSON, hence the same signature; every canonical value reads as a
//! matcher key of its type. Building the accepted
//! signature's watch entries and checking its `auth` rules must not panic either.

#![no_main]

use std::collections::BTreeMap;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use statgate::auth::Claims;
use statgate::matcher::{key_of, Matcher};
use statgate::registry::args::{self, ArgSpec, ArgType, CanonicalArgs};
use statgate::registry::Registry;

static REGISTRY: LazyLock<Registry> = LazyLock::new(statgate_fuzz::registry);

/// One optional arg per type, named after it, sorted by name as the registry keeps them.
static EVERY_TYPE: LazyLock<Vec<ArgSpec>> = LazyLock::new(|| {
    let bases = [
        "int4",
        "int8",
        "float8",
        "numeric",
        "text",
        "uuid",
        "bool",
        "date",
        "timestamptz",
    ];
    let mut specs: BTreeMap<String, ArgSpec> = BTreeMap::new();
    for base in bases {
        for name in [base.to_owned(), format!("{base}[]")] {
            let spec = ArgSpec {
                name: name.clone(),
                ty: ArgType::parse(&name).expect("a declared type"),
                optional: true,
                default: None,
                max_length: 16,
                max_items: 4,
            };
            specs.insert(name, spec);
        }
    }
    specs.into_values().collect()
});

static CLAIMS: LazyLock<Claims> = LazyLock::new(|| Claims {
    user: "alice".into(),
    exp: u64::MAX,
    all: Map::from_iter([("sub".to_owned(), Value::from("alice"))]),
});

/// Every canonical value can be read as a key of its type: the matcher indexes signatures by
/// these keys, and an array element it could not read would silently drop out of a watch.
fn assert_keys_readable(specs: &[ArgSpec], canonical: &CanonicalArgs) {
    for spec in specs {
        let Some(value) = canonical.values.get(&spec.name) else {
            continue;
        };
        let kind = spec.ty.base.key_kind();
        let items = match value {
            Value::Array(items) if spec.ty.array => items.as_slice(),
            scalar => std::slice::from_ref(scalar),
        };
        for item in items {
            assert!(
                key_of(kind, item).is_some(),
                "canonical {} value {item} is not a {kind:?} key",
                spec.ty
            );
        }
    }
}

/// Validating a canonical value again, directly or through its JSON text, changes nothing.
fn assert_fixed_point(specs: &[ArgSpec], canonical: &CanonicalArgs) {
    assert_eq!(
        canonical.json,
        Value::Object(canonical.values.clone()).to_string()
    );
    let again = args::validate(specs, &Value::Object(canonical.values.clone()))
        .expect("a canonical value is valid");
    assert_eq!(&again, canonical, "validating a canonical value changed it");
    let reread: Value = serde_json::from_str(&canonical.json).expect("canonical JSON parses");
    let again = args::validate(specs, &reread).expect("re-read canonical JSON is valid");
    assert_eq!(
        again.json, canonical.json,
        "re-reading canonical JSON changed the signature"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if let Ok(canonical) = args::validate(&EVERY_TYPE, &value) {
        assert_fixed_point(&EVERY_TYPE, &canonical);
        assert_keys_readable(&EVERY_TYPE, &canonical);
    }
    for query in REGISTRY.queries() {
        let Ok(canonical) = query.validate(&value) else {
            continue;
        };
        assert_fixed_point(&query.args, &canonical);
        assert_keys_readable(&query.args, &canonical);
        assert_eq!(
            query.signature(&canonical),
            format!("{}::{}", query.name, canonical.json)
        );
        let _ = query.authorize(&canonical, &CLAIMS);
        let entries = query.watch_entries(&canonical.values);
        assert_eq!(entries.len(), query.watch.len());
        Matcher::new().insert(1, entries);
    }
});
