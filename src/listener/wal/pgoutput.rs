//! Decoding the `pgoutput` plugin's messages (protocol version 1, text values) into
//! statgate's [`Change`]s.
//!
//! The replication client hands over Begin and Commit already parsed; every other message
//! arrives here as bytes: Relation (a table's id, name and columns, sent before its first
//! change in a session and after each schema change), Insert, Update, Delete and Truncate.
//! The bytes come from the network: every read is bounds-checked, and anything short, unknown
//! or inconsistent is a [`DecodeError`], never a panic.
//!
//! A change names the values of every column it knows, from the new row and the old one:
//! the matcher only looks at the columns a watch constrains. A column whose old value the WAL
//! did not record (an update or delete of a table whose replica identity leaves it out) is
//! left out of the change altogether, so it constrains nothing: the change then matches every
//! subscription on that column, which costs recomputes but never misses a value.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use crate::matcher::{Change, RowImage, TableName};

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("pgoutput message truncated: {0}")]
    Truncated(&'static str),
    #[error("pgoutput message of unknown type {0:?}")]
    UnknownMessage(char),
    #[error("pgoutput change of relation {0}, which no Relation message described")]
    UnknownRelation(u32),
    #[error(
        "pgoutput tuple of relation {relation} has {got} columns, its Relation message {expected}"
    )]
    ColumnCount {
        relation: u32,
        expected: usize,
        got: usize,
    },
    #[error("pgoutput {0}")]
    Malformed(&'static str),
}

/// One column of a relation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub type_oid: u32,
    /// Part of the replica identity: its old value is in an update's or delete's old key.
    pub key: bool,
}

/// A table as a Relation message describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub id: u32,
    pub table: TableName,
    pub columns: Vec<Column>,
}

/// One column's value in a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datum {
    Null,
    /// A TOASTed value the update did not change: not sent.
    Unchanged,
    Text(String),
}

/// The old row of an update or delete: its replica identity columns (`K`, the others null), or
/// the whole row (`O`, replica identity full).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Old {
    Key(Vec<Datum>),
    Full(Vec<Datum>),
}

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Relation(Relation),
    Insert {
        relation: u32,
        new: Vec<Datum>,
    },
    Update {
        relation: u32,
        old: Option<Old>,
        new: Vec<Datum>,
    },
    Delete {
        relation: u32,
        old: Old,
    },
    Truncate {
        relations: Vec<u32>,
    },
    /// Type and Origin messages: nothing statgate acts on.
    Ignored,
}

/// A bounds-checked reader over one message.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError::Truncated(what));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A NUL-terminated string.
    fn cstr(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let end = self
            .bytes
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::Truncated(what))?;
        let text = String::from_utf8_lossy(&self.bytes[..end]).into_owned();
        self.bytes = &self.bytes[end + 1..];
        Ok(text)
    }

    fn tuple(&mut self) -> Result<Vec<Datum>, DecodeError> {
        let count = self.u16("tuple column count")?;
        let mut datums = Vec::with_capacity(usize::from(count).min(self.bytes.len()));
        for _ in 0..count {
            datums.push(match self.u8("tuple column kind")? {
                b'n' => Datum::Null,
                b'u' => Datum::Unchanged,
                b't' => {
                    let len = self.u32("tuple value length")?;
                    let len = usize::try_from(len)
                        .map_err(|_| DecodeError::Malformed("value length too large"))?;
                    let bytes = self.take(len, "tuple value")?;
                    Datum::Text(String::from_utf8_lossy(bytes).into_owned())
                }
                b'b' => return Err(DecodeError::Malformed("binary value (not asked for)")),
                _ => return Err(DecodeError::Malformed("unknown tuple column kind")),
            });
        }
        Ok(datums)
    }
}

/// Decodes one pgoutput message (the XLogData payload).
pub fn parse(bytes: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader { bytes };
    let tag = r.u8("message type")?;
    match tag {
        b'R' => relation(&mut r).map(Message::Relation),
        b'I' => {
            let relation = r.u32("relation id")?;
            match r.u8("insert tuple marker")? {
                b'N' => Ok(Message::Insert {
                    relation,
                    new: r.tuple()?,
                }),
                _ => Err(DecodeError::Malformed("insert without a new tuple")),
            }
        }
        b'U' => {
            let relation = r.u32("relation id")?;
            let (old, marker) = match r.u8("update tuple marker")? {
                b'K' => (Some(Old::Key(r.tuple()?)), r.u8("update new tuple marker")?),
                b'O' => (
                    Some(Old::Full(r.tuple()?)),
                    r.u8("update new tuple marker")?,
                ),
                other => (None, other),
            };
            if marker != b'N' {
                return Err(DecodeError::Malformed("update without a new tuple"));
            }
            Ok(Message::Update {
                relation,
                old,
                new: r.tuple()?,
            })
        }
        b'D' => {
            let relation = r.u32("relation id")?;
            let old = match r.u8("delete tuple marker")? {
                b'K' => Old::Key(r.tuple()?),
                b'O' => Old::Full(r.tuple()?),
                _ => return Err(DecodeError::Malformed("delete without an old tuple")),
            };
            Ok(Message::Delete { relation, old })
        }
        b'T' => {
            let count = r.u32("truncate relation count")?;
            let _options = r.u8("truncate options")?;
            let mut relations = Vec::new();
            for _ in 0..count {
                relations.push(r.u32("truncated relation id")?);
            }
            Ok(Message::Truncate { relations })
        }
        b'Y' | b'O' => Ok(Message::Ignored),
        other => Err(DecodeError::UnknownMessage(char::from(other))),
    }
}

fn relation(r: &mut Reader<'_>) -> Result<Relation, DecodeError> {
    let id = r.u32("relation id")?;
    let schema = r.cstr("relation namespace")?;
    let table = r.cstr("relation name")?;
    let _identity = r.u8("replica identity")?;
    let count = r.u16("relation column count")?;
    let mut columns = Vec::new();
    for _ in 0..count {
        let flags = r.u8("column flags")?;
        let name = r.cstr("column name")?;
        let type_oid = r.u32("column type")?;
        let _modifier = r.u32("column type modifier")?;
        columns.push(Column {
            name,
            type_oid,
            key: flags & 1 == 1,
        });
    }
    Ok(Relation {
        id,
        table: TableName {
            // pg_catalog's empty namespace name is never sent for a user table.
            schema: if schema.is_empty() {
                "pg_catalog".to_owned()
            } else {
                schema
            },
            table,
        },
        columns,
    })
}

/// The relations of one session, and the changes their messages make.
#[derive(Debug, Default)]
pub struct Decoder {
    relations: HashMap<u32, Arc<Relation>>,
}

impl Decoder {
    /// Decodes one message into the changes it makes (none for a Relation message, which
    /// only teaches the decoder a table). `at_micros` is the transaction's commit time and
    /// `lsn` its commit position.
    pub fn decode(
        &mut self,
        bytes: &[u8],
        at_micros: Option<i64>,
        lsn: u64,
    ) -> Result<Vec<Change>, DecodeError> {
        let change = |table: &TableName, op: &str, rows, row| Change {
            table: table.clone(),
            op: op.to_owned(),
            rows,
            overflow: false,
            at_micros,
            row,
        };
        match parse(bytes)? {
            Message::Relation(relation) => {
                self.relations.insert(relation.id, Arc::new(relation));
                Ok(Vec::new())
            }
            Message::Insert { relation, new } => {
                let relation = self.relation(relation, new.len())?;
                let mut rows = Rows::default();
                rows.add_all(&relation, &new);
                let image = row_image(&relation, &new, lsn);
                Ok(vec![change(&relation.table, "INSERT", rows.done(), image)])
            }
            Message::Update { relation, old, new } => {
                let relation = self.relation(relation, new.len())?;
                let mut rows = Rows::default();
                match &old {
                    Some(Old::Full(old)) => {
                        check_len(&relation, old.len())?;
                        rows.add_all(&relation, old);
                        rows.add_new_filling_unchanged(&relation, &new, Some(old));
                    }
                    Some(Old::Key(key)) => {
                        check_len(&relation, key.len())?;
                        rows.add_key(&relation, key);
                        rows.add_new_filling_unchanged(&relation, &new, None);
                        rows.forget_unknown_old(&relation);
                    }
                    // No old row: the replica identity did not change, so the key columns'
                    // old values are their new ones; the others' are unknown.
                    None => {
                        rows.add_new_filling_unchanged(&relation, &new, None);
                        rows.forget_unknown_old(&relation);
                    }
                }
                let image = row_image(&relation, &new, lsn);
                Ok(vec![change(&relation.table, "UPDATE", rows.done(), image)])
            }
            Message::Delete { relation, old } => {
                let (datums, full) = match &old {
                    Old::Key(datums) => (datums, false),
                    Old::Full(datums) => (datums, true),
                };
                let relation = self.relation(relation, datums.len())?;
                let mut rows = Rows::default();
                if full {
                    rows.add_all(&relation, datums);
                } else {
                    rows.add_key(&relation, datums);
                    rows.forget_unknown_old(&relation);
                }
                Ok(vec![change(&relation.table, "DELETE", rows.done(), None)])
            }
            Message::Truncate { relations } => relations
                .into_iter()
                .map(|id| {
                    let relation = self
                        .relations
                        .get(&id)
                        .ok_or(DecodeError::UnknownRelation(id))?;
                    Ok(Change {
                        overflow: true,
                        ..change(&relation.table, "TRUNCATE", HashMap::new(), None)
                    })
                })
                .collect(),
            Message::Ignored => Ok(Vec::new()),
        }
    }

    fn relation(&self, id: u32, columns: usize) -> Result<Arc<Relation>, DecodeError> {
        let relation = self
            .relations
            .get(&id)
            .ok_or(DecodeError::UnknownRelation(id))?;
        check_len(relation, columns)?;
        Ok(relation.clone())
    }
}

fn check_len(relation: &Relation, got: usize) -> Result<(), DecodeError> {
    if got == relation.columns.len() {
        Ok(())
    } else {
        Err(DecodeError::ColumnCount {
            relation: relation.id,
            expected: relation.columns.len(),
            got,
        })
    }
}

/// The columns of a change being built: each column's distinct values, and the columns whose
/// old value is unknown (left out at the end).
#[derive(Default)]
struct Rows {
    values: HashMap<String, Vec<Value>>,
    unknown: HashSet<String>,
}

impl Rows {
    fn add(&mut self, column: &Column, datum: &Datum) {
        let value = match datum {
            Datum::Text(text) => json_of(column.type_oid, text),
            Datum::Null => Value::Null,
            Datum::Unchanged => {
                self.unknown.insert(column.name.clone());
                return;
            }
        };
        let values = self.values.entry(column.name.clone()).or_default();
        if !values.contains(&value) {
            values.push(value);
        }
    }

    fn add_all(&mut self, relation: &Relation, datums: &[Datum]) {
        for (column, datum) in relation.columns.iter().zip(datums) {
            self.add(column, datum);
        }
    }

    fn add_key(&mut self, relation: &Relation, datums: &[Datum]) {
        for (column, datum) in relation.columns.iter().zip(datums) {
            if column.key {
                self.add(column, datum);
            }
        }
    }

    /// The new row; an unchanged TOASTed value is its old one (known only from a full old row).
    fn add_new_filling_unchanged(
        &mut self,
        relation: &Relation,
        new: &[Datum],
        old: Option<&Vec<Datum>>,
    ) {
        for (index, (column, datum)) in relation.columns.iter().zip(new).enumerate() {
            match (datum, old.and_then(|old| old.get(index))) {
                (Datum::Unchanged, Some(old)) => self.add(column, old),
                _ => self.add(column, datum),
            }
        }
    }

    /// Marks the columns outside the replica identity: their old values were not recorded.
    fn forget_unknown_old(&mut self, relation: &Relation) {
        for column in &relation.columns {
            if !column.key {
                self.unknown.insert(column.name.clone());
            }
        }
    }

    fn done(mut self) -> HashMap<String, Vec<Value>> {
        for column in &self.unknown {
            self.values.remove(column);
        }
        self.values
    }
}

/// The new row of an insert or update, as the values a carried query reads (see
/// `crate::dispatch`); `None` when a value was not sent (unchanged TOAST).
fn row_image(relation: &Relation, new: &[Datum], lsn: u64) -> Option<Arc<RowImage>> {
    let mut values = HashMap::with_capacity(new.len());
    for (column, datum) in relation.columns.iter().zip(new) {
        let value = match datum {
            Datum::Text(text) => json_of(column.type_oid, text),
            Datum::Null => Value::Null,
            Datum::Unchanged => continue,
        };
        values.insert(column.name.clone(), value);
    }
    Some(Arc::new(RowImage { lsn, values }))
}

const BOOL: u32 = 16;
const INT8: u32 = 20;
const INT2: u32 = 21;
const INT4: u32 = 23;
const OID: u32 = 26;
const JSON: u32 = 114;
const FLOAT4: u32 = 700;
const FLOAT8: u32 = 701;
const NUMERIC: u32 = 1700;
const JSONB: u32 = 3802;

/// A column's text value as the JSON PostgreSQL's `to_json` gives for it: numbers as numbers
/// (`NaN` and infinities as strings), booleans, JSON as itself, anything else as its text.
pub fn json_of(type_oid: u32, text: &str) -> Value {
    match type_oid {
        BOOL => match text {
            "t" => Value::Bool(true),
            "f" => Value::Bool(false),
            other => Value::String(other.to_owned()),
        },
        INT2 | INT4 | INT8 | OID | FLOAT4 | FLOAT8 | NUMERIC => {
            match serde_json::from_str::<serde_json::Number>(text) {
                Ok(number) => Value::Number(number),
                Err(_) => Value::String(text.to_owned()),
            }
        }
        JSON | JSONB => {
            serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
        }
        _ => Value::String(text.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Builds pgoutput messages the way the server writes them.
    #[derive(Default)]
    struct Bytes(Vec<u8>);

    impl Bytes {
        fn tag(mut self, tag: u8) -> Self {
            self.0.push(tag);
            self
        }
        fn u16(mut self, v: u16) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn u32(mut self, v: u32) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn cstr(mut self, s: &str) -> Self {
            self.0.extend_from_slice(s.as_bytes());
            self.0.push(0);
            self
        }
        fn tuple(mut self, values: &[Option<&str>]) -> Self {
            self = self.u16(values.len() as u16);
            for value in values {
                self = match value {
                    None => self.tag(b'n'),
                    Some(text) => self.tag(b't').u32(text.len() as u32).raw(text.as_bytes()),
                };
            }
            self
        }
        fn raw(mut self, bytes: &[u8]) -> Self {
            self.0.extend_from_slice(bytes);
            self
        }
    }

    /// `comments (id int8 key, post_id int8, body text)`, relation 7.
    fn comments() -> Vec<u8> {
        Bytes::default()
            .tag(b'R')
            .u32(7)
            .cstr("public")
            .cstr("comments")
            .tag(b'd')
            .u16(3)
            .tag(1)
            .cstr("id")
            .u32(INT8)
            .u32(u32::MAX)
            .tag(0)
            .cstr("post_id")
            .u32(INT8)
            .u32(u32::MAX)
            .tag(0)
            .cstr("body")
            .u32(25)
            .u32(u32::MAX)
            .0
    }

    fn decoder() -> Decoder {
        let mut decoder = Decoder::default();
        assert!(decoder
            .decode(&comments(), None, 1)
            .expect("relation")
            .is_empty());
        decoder
    }

    #[test]
    fn an_insert_names_every_column_of_the_new_row_and_carries_it() {
        let insert = Bytes::default()
            .tag(b'I')
            .u32(7)
            .tag(b'N')
            .tuple(&[Some("1"), Some("42"), Some("hi")])
            .0;
        let changes = decoder().decode(&insert, Some(5), 100).expect("decodes");
        let change = &changes[0];
        assert_eq!(change.table, TableName::parse("comments"));
        assert_eq!(change.op, "INSERT");
        assert_eq!(change.rows["post_id"], vec![json!(42)]);
        assert_eq!(change.at_micros, Some(5));
        let row = change.row.as_ref().expect("the new row");
        assert_eq!((row.lsn, &row.values["body"]), (100, &json!("hi")));
    }

    #[test]
    fn a_move_with_the_full_old_row_names_both_keys() {
        let update = Bytes::default()
            .tag(b'U')
            .u32(7)
            .tag(b'O')
            .tuple(&[Some("1"), Some("42"), Some("hi")])
            .tag(b'N')
            .tuple(&[Some("1"), Some("43"), Some("hi")])
            .0;
        let change = decoder()
            .decode(&update, None, 2)
            .expect("decodes")
            .remove(0);
        assert_eq!(change.rows["post_id"], vec![json!(42), json!(43)]);
    }

    #[test]
    fn columns_whose_old_value_the_wal_did_not_record_are_left_out() {
        // Replica identity default (the key): an update without an old row, a delete with
        // the key only. post_id's old value is unknown, so the change must not constrain it.
        let update = Bytes::default()
            .tag(b'U')
            .u32(7)
            .tag(b'N')
            .tuple(&[Some("1"), Some("43"), Some("hi")])
            .0;
        let delete = Bytes::default()
            .tag(b'D')
            .u32(7)
            .tag(b'K')
            .tuple(&[Some("1"), None, None])
            .0;
        let mut decoder = decoder();
        for message in [update, delete] {
            let change = decoder
                .decode(&message, None, 3)
                .expect("decodes")
                .remove(0);
            assert_eq!(change.rows["id"], vec![json!(1)]);
            assert!(!change.rows.contains_key("post_id"), "{change:?}");
        }
    }

    #[test]
    fn a_truncate_is_an_overflow_of_each_table() {
        let truncate = Bytes::default().tag(b'T').u32(1).tag(0).u32(7).0;
        let change = decoder()
            .decode(&truncate, None, 4)
            .expect("decodes")
            .remove(0);
        assert!(change.overflow);
        assert_eq!(change.table, TableName::parse("comments"));
    }

    #[test]
    fn values_become_the_json_postgresql_gives_them() {
        assert_eq!(json_of(INT8, "42"), json!(42));
        assert_eq!(json_of(NUMERIC, "12.50"), json!(12.5));
        assert_eq!(json_of(FLOAT8, "NaN"), json!("NaN"));
        assert_eq!(json_of(BOOL, "t"), json!(true));
        assert_eq!(json_of(JSONB, r#"{"a": 1}"#), json!({"a": 1}));
        assert_eq!(json_of(25, "x"), json!("x"));
    }

    #[test]
    fn a_change_of_a_relation_never_described_is_an_error() {
        let insert = Bytes::default()
            .tag(b'I')
            .u32(99)
            .tag(b'N')
            .tuple(&[Some("1")])
            .0;
        assert_eq!(
            decoder().decode(&insert, None, 5),
            Err(DecodeError::UnknownRelation(99))
        );
        let truncate = Bytes::default().tag(b'T').u32(1).tag(0).u32(99).0;
        assert_eq!(
            decoder().decode(&truncate, None, 5),
            Err(DecodeError::UnknownRelation(99))
        );
    }

    #[test]
    fn every_truncation_of_every_message_is_an_error_not_a_panic() {
        let insert = Bytes::default()
            .tag(b'I')
            .u32(7)
            .tag(b'N')
            .tuple(&[Some("1"), Some("42"), Some("hi")])
            .0;
        let update = Bytes::default()
            .tag(b'U')
            .u32(7)
            .tag(b'K')
            .tuple(&[Some("1"), None, None])
            .tag(b'N')
            .tuple(&[Some("1"), Some("43"), Some("hi")])
            .0;
        for message in [comments(), insert, update] {
            for cut in 0..message.len() {
                assert!(
                    decoder().decode(&message[..cut], None, 6).is_err(),
                    "{cut} of {message:?}"
                );
            }
        }
    }

    #[test]
    fn hostile_messages_are_errors() {
        let too_many_columns = Bytes::default()
            .tag(b'I')
            .u32(7)
            .tag(b'N')
            .tuple(&[Some("1"), Some("2"), Some("3"), Some("4")])
            .0;
        assert!(matches!(
            decoder().decode(&too_many_columns, None, 7),
            Err(DecodeError::ColumnCount { .. })
        ));
        let huge_length = Bytes::default()
            .tag(b'I')
            .u32(7)
            .tag(b'N')
            .u16(1)
            .tag(b't')
            .u32(u32::MAX)
            .0;
        assert!(decoder().decode(&huge_length, None, 7).is_err());
        assert_eq!(
            decoder().decode(b"Z", None, 7),
            Err(DecodeError::UnknownMessage('Z'))
        );
        assert!(decoder().decode(b"", None, 7).is_err());
    }
}
