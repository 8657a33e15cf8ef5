//! pgoutput messages (the WAL feed, `statgate::listener::wal::pgoutput`): the bytes of a
//! replication stream. Decoding must never panic, whatever arrives: a message is either a change
//! of a relation the decoder was told of, or an error.
//!
//! The decoder first learns one relation (id 7, `public.comments (id int8 key, post_id int8,
//! body text)`), so Insert, Update and Delete messages of it reach the tuple readers; the input
//! is then split at 0xFF bytes into several messages, so a Relation message in the input can
//! describe a relation a later message uses.

#![no_main]

use libfuzzer_sys::fuzz_target;
use statgate::listener::wal::pgoutput::Decoder;

/// The Relation message of relation 7.
fn comments() -> Vec<u8> {
    let mut m = vec![b'R'];
    m.extend_from_slice(&7u32.to_be_bytes());
    m.extend_from_slice(b"public\0comments\0d");
    m.extend_from_slice(&3u16.to_be_bytes());
    for (key, name, oid) in [(1u8, "id", 20u32), (0, "post_id", 20), (0, "body", 25)] {
        m.push(key);
        m.extend_from_slice(name.as_bytes());
        m.push(0);
        m.extend_from_slice(&oid.to_be_bytes());
        m.extend_from_slice(&u32::MAX.to_be_bytes());
    }
    m
}

fuzz_target!(|data: &[u8]| {
    let mut decoder = Decoder::default();
    decoder
        .decode(&comments(), None, 1)
        .expect("the fixed relation decodes");
    for message in data.split(|&b| b == 0xFF) {
        if let Ok(changes) = decoder.decode(message, Some(0), 2) {
            for change in changes {
                // A truncate is the whole table; only inserts and updates carry a new row.
                assert_eq!(change.overflow, change.op == "TRUNCATE", "{change:?}");
                assert_eq!(
                    change.row.is_some(),
                    matches!(change.op.as_str(), "INSERT" | "UPDATE"),
                    "{change:?}"
                );
            }
        }
    }
});
