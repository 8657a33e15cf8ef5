//! The matcher: which active signatures does one change notification touch?
//!
//! Every signature registers its concrete watch entries (table + column constraints built from
//! its args). The index maps `(table, column, kind, value)` to entries, so a notification costs
//! time proportional to the values it carries and the entries it matches, not to the number of
//! subscriptions. Candidates found through one indexed column are then checked against the
//! whole overlap rule (docs/REGISTRY.md):
//!
//! * a change overlaps an entry when, for **every** constrained column that the payload
//!   carries, some payload value satisfies the constraint (equality with any of the entry's
//!   values, or membership in its range);
//! * a column the payload does not carry constrains nothing;
//! * an entry without constraints, and an `overflow` payload, match the whole table.
//!
//! The matcher never misses: when in doubt (a payload value of an unexpected shape) it matches.
//! It owns no I/O and never blocks on anything but its own short lock.

pub mod key;

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use serde_json::Value;

pub use key::{key_of, Key, KeyKind};

/// A schema-qualified table name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub schema: String,
    pub table: String,
}

impl TableName {
    /// Parses `table` or `schema.table` (default schema `public`).
    pub fn parse(name: &str) -> Self {
        match name.split_once('.') {
            Some((schema, table)) => TableName {
                schema: schema.to_owned(),
                table: table.to_owned(),
            },
            None => TableName {
                schema: "public".to_owned(),
                table: name.to_owned(),
            },
        }
    }
}

/// A bound of a range constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    pub key: Key,
    pub inclusive: bool,
}

/// What one column of a watch entry requires of a change's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Constraint {
    /// The column equals one of these keys (a scalar arg gives one, an array arg several).
    AnyOf(Vec<Key>),
    /// The column lies in this range; a missing bound is unbounded.
    Range {
        lower: Option<Bound>,
        upper: Option<Bound>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnConstraint {
    pub column: String,
    pub kind: KeyKind,
    pub constraint: Constraint,
}

impl ColumnConstraint {
    /// Whether some value of the payload satisfies this constraint. Nulls satisfy nothing;
    /// values of an unreadable shape satisfy everything.
    fn overlaps(&self, values: &[Value]) -> bool {
        values.iter().any(|value| {
            if value.is_null() {
                return false;
            }
            match key_of(self.kind, value) {
                Some(key) => self.admits(&key),
                None => true,
            }
        })
    }

    fn admits(&self, key: &Key) -> bool {
        match &self.constraint {
            Constraint::AnyOf(keys) => keys.contains(key),
            Constraint::Range { lower, upper } => {
                let above = lower.as_ref().is_none_or(|b| {
                    if b.inclusive {
                        key >= &b.key
                    } else {
                        key > &b.key
                    }
                });
                let below = upper.as_ref().is_none_or(|b| {
                    if b.inclusive {
                        key <= &b.key
                    } else {
                        key < &b.key
                    }
                });
                above && below
            }
        }
    }
}

/// One concrete watch entry of one signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEntry {
    pub table: TableName,
    pub constraints: Vec<ColumnConstraint>,
}

/// A parsed change notification (docs/ARCHITECTURE.md, "The change payload").
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub table: TableName,
    pub op: String,
    /// Per watched column, the distinct values of the statement's old and new rows.
    pub rows: HashMap<String, Vec<Value>>,
    /// The payload was too large: every subscription on the table matches.
    pub overflow: bool,
    /// Commit-side timestamp, microseconds since the Unix epoch.
    pub at_micros: Option<i64>,
    /// The new row of a one-row change, when the feed carries it (the WAL feed's inserts and
    /// updates): what a carried query's value is read from.
    pub row: Option<std::sync::Arc<RowImage>>,
}

/// The new row a WAL change carries: each column's value as `to_json` renders it (a value the
/// WAL did not send is absent), and the position of its transaction's commit.
#[derive(Debug, Clone, PartialEq)]
pub struct RowImage {
    pub lsn: u64,
    pub values: HashMap<String, Value>,
}

impl WatchEntry {
    /// The overlap rule (docs/REGISTRY.md), evaluated directly (the index only narrows candidates).
    pub fn overlaps(&self, change: &Change) -> bool {
        if change.table != self.table {
            return false;
        }
        if change.overflow {
            return true;
        }
        self.constraints
            .iter()
            .all(|c| match change.rows.get(&c.column) {
                Some(values) => c.overlaps(values),
                None => true,
            })
    }

    /// The equality constraints, which can index this entry.
    fn equality_columns(&self) -> impl Iterator<Item = (&ColumnConstraint, &[Key])> {
        self.constraints.iter().filter_map(|c| match &c.constraint {
            Constraint::AnyOf(keys) => Some((c, keys.as_slice())),
            Constraint::Range { .. } => None,
        })
    }
}

type EntryId = u64;

/// Entries of one table, indexed by one equality column each.
#[derive(Default)]
struct TableIndex {
    /// Entries without equality constraints (no constraint, or ranges only): always checked.
    unindexed: HashSet<EntryId>,
    /// (column, kind) → the entries indexed on that column.
    columns: HashMap<(String, KeyKind), ColumnIndex>,
}

/// The entries indexed on one equality column.
#[derive(Default)]
struct ColumnIndex {
    /// Every one of them (for payloads lacking the column, or values of an unreadable shape).
    all: HashSet<EntryId>,
    /// Key → those whose constraint admits it.
    by_key: HashMap<Key, HashSet<EntryId>>,
}

impl TableIndex {
    fn is_empty(&self) -> bool {
        self.unindexed.is_empty() && self.columns.is_empty()
    }

    /// The equality column whose lists for this entry's keys are shortest right now, so a
    /// change re-checks few candidates. Column order does not matter: `dailyCount` is indexed
    /// on `user_id` rather than on `type`, whose handful of values every user shares. (The
    /// first entries of a table may land on a popular column while its lists are still short;
    /// they are few by construction.)
    fn most_selective<'e>(
        &self,
        entry: &'e WatchEntry,
    ) -> Option<(&'e ColumnConstraint, &'e [Key])> {
        entry.equality_columns().min_by_key(|(column, keys)| {
            let index = self.columns.get(&(column.column.clone(), column.kind));
            let candidates: usize = keys
                .iter()
                .map(|key| {
                    index
                        .and_then(|i| i.by_key.get(key))
                        .map_or(0, HashSet::len)
                })
                .sum();
            (candidates, keys.len())
        })
    }
}

struct Indexed {
    signature: u64,
    entry: WatchEntry,
    /// The equality column it is indexed on; `None`: unindexed.
    slot: Option<(String, KeyKind)>,
}

#[derive(Default)]
struct Index {
    next_entry: EntryId,
    entries: HashMap<EntryId, Indexed>,
    by_signature: HashMap<u64, Vec<EntryId>>,
    tables: HashMap<TableName, TableIndex>,
}

/// The shared index. Readers (the matching task) and writers (subscribe/unsubscribe) take a
/// short lock; nothing awaits while holding it.
#[derive(Default)]
pub struct Matcher {
    index: RwLock<Index>,
}

impl Matcher {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a signature's entries (replacing any it had).
    pub fn insert(&self, signature: u64, entries: Vec<WatchEntry>) {
        let mut index = self
            .index
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        index.remove(signature);
        for entry in entries {
            index.add(signature, entry);
        }
    }

    pub fn remove(&self, signature: u64) {
        let mut index = self
            .index
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        index.remove(signature);
    }

    /// The signatures a change overlaps, each once.
    pub fn matches(&self, change: &Change) -> HashSet<u64> {
        let index = self
            .index
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        index.matches(change)
    }

    /// Number of indexed entries (for tests and metrics).
    pub fn len(&self) -> usize {
        self.index
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entries
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Index {
    fn add(&mut self, signature: u64, entry: WatchEntry) {
        let id = self.next_entry;
        self.next_entry += 1;
        let table = self.tables.entry(entry.table.clone()).or_default();
        let slot = match table.most_selective(&entry) {
            Some((column, keys)) => {
                let slot = (column.column.clone(), column.kind);
                let index = table.columns.entry(slot.clone()).or_default();
                for key in keys {
                    index.by_key.entry(key.clone()).or_default().insert(id);
                }
                index.all.insert(id);
                Some(slot)
            }
            None => {
                table.unindexed.insert(id);
                None
            }
        };
        self.by_signature.entry(signature).or_default().push(id);
        self.entries.insert(
            id,
            Indexed {
                signature,
                entry,
                slot,
            },
        );
    }

    fn remove(&mut self, signature: u64) {
        let Some(ids) = self.by_signature.remove(&signature) else {
            return;
        };
        for id in ids {
            let Some(indexed) = self.entries.remove(&id) else {
                continue;
            };
            let entry = indexed.entry;
            let Some(table) = self.tables.get_mut(&entry.table) else {
                continue;
            };
            match indexed.slot {
                Some(slot) => {
                    let keys = entry
                        .equality_columns()
                        .find(|(c, _)| c.column == slot.0 && c.kind == slot.1)
                        .map(|(_, keys)| keys)
                        .unwrap_or_default();
                    if let Some(index) = table.columns.get_mut(&slot) {
                        for key in keys {
                            if let Some(ids) = index.by_key.get_mut(key) {
                                ids.remove(&id);
                                if ids.is_empty() {
                                    index.by_key.remove(key);
                                }
                            }
                        }
                        index.all.remove(&id);
                        if index.all.is_empty() {
                            table.columns.remove(&slot);
                        }
                    }
                }
                None => {
                    table.unindexed.remove(&id);
                }
            }
            if table.is_empty() {
                self.tables.remove(&entry.table);
            }
        }
    }

    fn matches(&self, change: &Change) -> HashSet<u64> {
        let mut found = HashSet::new();
        let Some(table) = self.tables.get(&change.table) else {
            return found;
        };
        let mut check = |id: &EntryId| {
            if let Some(indexed) = self.entries.get(id) {
                if !found.contains(&indexed.signature) && indexed.entry.overlaps(change) {
                    found.insert(indexed.signature);
                }
            }
        };
        table.unindexed.iter().for_each(&mut check);
        for ((column, kind), index) in &table.columns {
            let values = match change.rows.get(column) {
                Some(values) if !change.overflow => values,
                _ => {
                    index.all.iter().for_each(&mut check);
                    continue;
                }
            };
            for value in values {
                if value.is_null() {
                    continue;
                }
                match key_of(*kind, value) {
                    Some(key) => {
                        if let Some(ids) = index.by_key.get(&key) {
                            ids.iter().for_each(&mut check);
                        }
                    }
                    None => index.all.iter().for_each(&mut check),
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests;
