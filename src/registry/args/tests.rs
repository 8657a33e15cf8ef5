use super::*;
use serde_json::json;

fn spec(name: &str, ty: &str) -> ArgSpec {
    ArgSpec {
        name: name.into(),
        ty: ArgType::parse(ty).expect("type"),
        optional: false,
        default: None,
        max_length: 10,
        max_items: 3,
    }
}

fn accepts(ty: &str, input: Value, canonical: Value) {
    let spec = spec("x", ty);
    assert_eq!(
        canonical_value(&spec, &input),
        Ok(canonical),
        "{ty} {input}"
    );
}

fn rejects(ty: &str, input: Value, reason_part: &str) {
    let spec = spec("x", ty);
    let reason = canonical_value(&spec, &input).expect_err(&format!("{ty} should reject {input}"));
    assert!(reason.contains(reason_part), "{ty} {input}: {reason}");
}

#[test]
fn integers_coerce_and_check_range() {
    accepts("int8", json!(17), json!(17));
    accepts("int8", json!("17"), json!(17));
    accepts("int8", json!(17.0), json!(17));
    accepts("int4", json!(-2147483648_i64), json!(-2147483648_i64));
    rejects("int4", json!(2147483648_i64), "out of range for int4");
    rejects(
        "int8",
        json!("9223372036854775808"),
        "out of range for int8",
    );
    rejects("int8", json!(1.5), "expected an integer");
    rejects("int8", json!("abc"), "expected an integer");
    rejects("int8", json!(true), "got a boolean");
}

#[test]
fn floats_and_numerics_normalise() {
    accepts("float8", json!(1.5), json!(1.5));
    accepts("float8", json!("2.25"), json!(2.25));
    rejects("float8", json!("NaN"), "finite");
    rejects("float8", json!([1]), "got an array");
    accepts("numeric", json!("001.500"), json!("1.5"));
    accepts("numeric", json!(2), json!("2"));
    accepts("numeric", json!("-0.0"), json!("0"));
    accepts("numeric", json!("+3."), json!("3"));
    accepts("numeric", json!(".5"), json!("0.5"));
    rejects("numeric", json!("1.2.3"), "decimal");
    rejects("numeric", json!("1".repeat(200)), "at most");
}

#[test]
fn text_uuid_bool_are_checked() {
    accepts("text", json!("hello"), json!("hello"));
    rejects("text", json!("x".repeat(11)), "exceeds the limit of 10");
    rejects("text", json!("a\u{0}b"), "NUL");
    rejects("text", json!(5), "got a number");
    accepts(
        "uuid",
        json!("6F9619FF-8B86-D011-B42D-00CF4FC964FF"),
        json!("6f9619ff-8b86-d011-b42d-00cf4fc964ff"),
    );
    rejects("uuid", json!("not-a-uuid"), "expected a uuid");
    accepts("bool", json!(true), json!(true));
    accepts("bool", json!("false"), json!(false));
    rejects("bool", json!(1), "expected true or false");
}

#[test]
fn dates_and_timestamps_normalise_to_utc() {
    accepts("date", json!("2026-11-22"), json!("2026-11-22"));
    rejects("date", json!("2026-02-30"), "expected a date");
    rejects("date", json!("22/11/2026"), "expected a date");
    accepts(
        "timestamptz",
        json!("2026-11-22T13:00:00+01:00"),
        json!("2026-11-22T12:00:00Z"),
    );
    accepts(
        "timestamptz",
        json!("2026-11-22T12:00:00.1234567Z"),
        json!("2026-11-22T12:00:00.123456Z"),
    );
    rejects("timestamptz", json!("2026-11-22 12:00"), "RFC 3339");
}

#[test]
fn a_leap_second_is_the_next_second_and_stays_in_range() {
    accepts(
        "timestamptz",
        json!("2016-12-31T23:59:60Z"),
        json!("2017-01-01T00:00:00Z"),
    );
    // Found by the `args` fuzz target: this one canonicalised to "+10000-01-01T00:00:00Z",
    // which validation itself refuses (fuzz/corpus/args/leap-second-9999).
    rejects(
        "timestamptz",
        json!("9999-12-31T23:59:60Z"),
        "out of range (years 1 to 9999)",
    );
}

#[test]
fn arrays_check_each_element_and_their_size() {
    accepts("int8[]", json!([1, "2"]), json!([1, 2]));
    rejects("int8[]", json!([1, "x"]), "element 1");
    rejects("int8[]", json!([1, null]), "element 1 is null");
    rejects("int8[]", json!([1, 2, 3, 4]), "limit is 3");
    rejects("int8[]", json!(1), "expected an array");
}

#[test]
fn validation_reports_every_problem_with_the_arg_name() {
    let specs = vec![spec("a", "int8"), spec("b", "text")];
    let err = validate(&specs, &json!({"a": "x", "c": 1})).unwrap_err();
    let args: Vec<&str> = err.problems.iter().map(|p| p.arg.as_str()).collect();
    assert_eq!(args, vec!["c", "a", "b"]);
    assert!(err.to_string().contains("c: unknown arg"));
    assert!(err
        .to_string()
        .contains("b: missing required arg of type text"));
    assert!(validate(&specs, &json!([1])).is_err());
}

#[test]
fn equivalent_args_have_equal_canonical_json() {
    let mut optional = spec("limit", "int4");
    optional.default = Some(json!(10));
    let specs = vec![optional, spec("postId", "int8")];
    let a = validate(&specs, &json!({"postId": "17"})).expect("valid");
    let b = validate(&specs, &json!({"limit": 10, "postId": 17})).expect("valid");
    assert_eq!(a.json, r#"{"limit":10,"postId":17}"#);
    assert_eq!(a.json, b.json);
}

#[test]
fn optional_args_may_be_absent_or_null() {
    let mut optional = spec("x", "text");
    optional.optional = true;
    let specs = vec![optional];
    assert_eq!(validate(&specs, &json!({})).expect("valid").json, "{}");
    assert_eq!(
        validate(&specs, &json!({"x": null})).expect("valid").json,
        "{}"
    );
    assert_eq!(validate(&specs, &Value::Null).expect("valid").json, "{}");
}
