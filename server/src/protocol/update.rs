//! Validation and merging of Yjs v1 updates and state vectors.
//!
//! A payload is accepted only when both of these agree:
//! 1. a structural walk of the v1 layout as Yjs reads it, which bounds every count by the
//!    bytes actually present, limits the nesting of `Any` values, refuses content and type
//!    references that Yjs cannot read, refuses what Yjs never writes and throws on when it
//!    integrates it (empty structs, empty delete ranges, an item referencing its own
//!    client at or after its own clock), and refuses trailing bytes;
//! 2. yrs's own decoder, run under `catch_unwind` so a decoder panic becomes an error.
//!
//! The walk runs first so that yrs never sees a length prefix larger than the input (no
//! allocation bombs) nor an `Any` nested deep enough to exhaust the stack, which no
//! `catch_unwind` could recover from. Refusing what Yjs cannot read matters because the
//! accepted bytes are stored in Redis and relayed to clients: JavaScript instances of the
//! fleet and browsers apply them too.
//!
//! The walk also tells where each struct and the delete set lie, which is all the update
//! splitter (`super::split`) needs to cut an update into smaller ones.
//!
//! This is a check of one update on its own. Whether an update is consistent with a
//! document (for example, whether the parent it names is a shared type) is only known
//! when it is applied, so code applying updates to a document must still expect errors.

use yrs::updates::decoder::Decode;
use yrs::{StateVector, Update};

use super::codec::{ReadError, Reader};
use super::guard::guard_yrs;

/// Deepest nesting of `Any` arrays and objects accepted inside an update; the same depth
/// serde_json allows for the JSON texts carried next to them.
const MAX_ANY_DEPTH: usize = 128;

/// Why a payload was refused, as a human-readable reason.
pub(crate) type Reason = String;

fn read_err(e: ReadError) -> Reason {
    e.to_string()
}

/// Check that `payload` is a Yjs v1 update that both Yjs and yrs can read.
pub(crate) fn check_update_v1(payload: &[u8]) -> Result<(), Reason> {
    walk_update_v1(payload, |_| {})?;
    guard_yrs("decoder", || Update::decode_v1(payload).map(drop))
}

/// Check that `payload` is a v1 encoded state vector.
pub(crate) fn check_state_vector_v1(payload: &[u8]) -> Result<(), Reason> {
    let mut r = Reader::new(payload);
    let clients = read_u32(&mut r)?;
    for _ in 0..clients {
        read_client(&mut r)?;
        read_u32(&mut r)?; // clock
    }
    if !r.is_empty() {
        return Err("trailing bytes".into());
    }
    guard_yrs("decoder", || StateVector::decode_v1(payload).map(drop))
}

/// Merge v1 updates into one v1 update with yrs; a yrs panic becomes an error.
/// Callers pass only payloads that passed [`check_update_v1`].
pub(crate) fn merge_updates_v1(updates: &[&[u8]]) -> Result<Vec<u8>, Reason> {
    guard_yrs("merge", || yrs::merge_updates_v1(updates.iter().copied()))
}

/// Read a varuint that yrs reads as 32 bits (every count, clock and length;
/// client ids go through [`read_client`]). yrs wraps larger values silently,
/// so a value it would read differently from this walk is refused: the walk
/// and yrs must agree on every count, else yrs may reserve memory for a count
/// the walk never saw.
fn read_u32(r: &mut Reader<'_>) -> Result<u64, Reason> {
    let value = r.read_var_u64().map_err(read_err)?;
    if value > u64::from(u32::MAX) {
        return Err(format!("{value} does not fit in 32 bits"));
    }
    Ok(value)
}

/// Read a client id: at most 53 bits, as Yjs reads it (a JavaScript number)
/// and as yrs keeps it.
fn read_client(r: &mut Reader<'_>) -> Result<u64, Reason> {
    let value = r.read_var_u64().map_err(read_err)?;
    if value >= 1 << 53 {
        return Err(format!("client id {value} over 53 bits"));
    }
    Ok(value)
}

/// Where one struct lies in a v1 update, as the walk finds it: what the update
/// splitter needs to copy the struct's bytes into a smaller update without decoding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct StructSpan {
    /// Which client section of the update holds the struct, counted from 0 in input
    /// order; consecutive structs of one section are consecutive bytes.
    pub(super) section: u64,
    /// The client id of the section.
    pub(super) client: u64,
    /// The clock of the struct's first unit, as the walk computes it from the section's
    /// starting clock and the lengths of the structs before it.
    pub(super) clock: u64,
    /// Offset of the struct's first byte in the update.
    pub(super) start: usize,
    /// Offset just past the struct's last byte in the update.
    pub(super) end: usize,
}

/// Whether a v1 update holds a skip (a gap in a client's clocks: structs that
/// follow ones it does not have), found by the structural walk, without
/// decoding the update.
pub fn has_gap_v1(update: &[u8]) -> Result<bool, Reason> {
    let mut gap = false;
    walk_update_v1(update, |span| {
        gap |= update.get(span.start) == Some(&SKIP_INFO)
    })?;
    Ok(gap)
}

/// The info byte of a skip struct.
const SKIP_INFO: u8 = 10;

/// Walk a whole v1 update, refusing trailing bytes, and report each struct to
/// `on_struct` in input order. Returns the offset of the delete set, which runs to
/// the end of `update`. Shared by the check and the splitter so that both read the
/// layout the same way.
pub(super) fn walk_update_v1(
    update: &[u8],
    on_struct: impl FnMut(StructSpan),
) -> Result<usize, Reason> {
    let mut r = Reader::new(update);
    walk_structs(&mut r, on_struct)?;
    let delete_set = r.position();
    walk_delete_set(&mut r)?;
    if !r.is_empty() {
        return Err("trailing bytes".into());
    }
    Ok(delete_set)
}

/// Walk the structs of a v1 update (everything before the delete set) the way Yjs's
/// `UpdateDecoderV1` reads them. Every loop iteration consumes at least one byte, so
/// counts are bounded by the input length.
fn walk_structs(r: &mut Reader<'_>, mut on_struct: impl FnMut(StructSpan)) -> Result<(), Reason> {
    let clients = read_u32(r)?;
    for section in 0..clients {
        let structs = read_u32(r)?;
        let client = read_client(r)?;
        let mut clock = read_u32(r)?;
        for _ in 0..structs {
            let start = r.position();
            let len = walk_struct(r, client, clock)?;
            if len == 0 {
                return Err(format!("empty struct at {client}:{clock}"));
            }
            on_struct(StructSpan {
                section,
                client,
                clock,
                start,
                end: r.position(),
            });
            clock = clock
                .checked_add(len)
                .filter(|c| *c <= u64::from(u32::MAX))
                .ok_or_else(|| Reason::from("clock out of range"))?;
        }
    }
    Ok(())
}

/// Walk the delete set that ends a v1 update.
fn walk_delete_set(r: &mut Reader<'_>) -> Result<(), Reason> {
    let clients = read_u32(r)?;
    for _ in 0..clients {
        read_client(r)?;
        let ranges = read_u32(r)?;
        for _ in 0..ranges {
            // A clock, then a length: Yjs never writes an empty range and throws
            // when it re-encodes one.
            read_u32(r)?;
            if read_u32(r)? == 0 {
                return Err("empty delete range".into());
            }
        }
    }
    Ok(())
}

const HAS_ORIGIN: u8 = 0x80;
const HAS_RIGHT_ORIGIN: u8 = 0x40;
const HAS_PARENT_SUB: u8 = 0x20;

/// Walk one struct of `client` starting at `clock`; returns its length in clock units.
fn walk_struct(r: &mut Reader<'_>, client: u64, clock: u64) -> Result<u64, Reason> {
    let info = r.read_u8().map_err(read_err)?;
    match info & 0x1f {
        // GC and Skip: a length only. Yjs tells them by the low five bits and
        // yrs by the whole byte, so flags beside them would be read two ways.
        0 | 10 if info & 0xe0 != 0 => Err(format!("GC or skip struct with flags {info:#x}")),
        0 | 10 => read_u32(r),
        content => {
            if info & HAS_ORIGIN != 0 {
                walk_id(r, client, clock)?;
            }
            if info & HAS_RIGHT_ORIGIN != 0 {
                walk_id(r, client, clock)?;
            }
            if info & (HAS_ORIGIN | HAS_RIGHT_ORIGIN) == 0 {
                if read_u32(r)? == 1 {
                    r.read_var_str().map_err(read_err)?; // root type name
                } else {
                    walk_id(r, client, clock)?; // parent item
                }
                if info & HAS_PARENT_SUB != 0 {
                    r.read_var_str().map_err(read_err)?;
                }
            }
            walk_content(r, content)
        }
    }
}

/// Walk an item id referenced by an item of `client` at `clock`. Yjs integrates the
/// structs of one client in clock order and looks up references to the same client
/// without checking they exist (it throws when they do not), so such a reference must
/// point strictly before the referencing item.
fn walk_id(r: &mut Reader<'_>, client: u64, clock: u64) -> Result<(), Reason> {
    let ref_client = read_client(r)?;
    let ref_clock = read_u32(r)?;
    if ref_client == client && ref_clock >= clock {
        return Err(format!(
            "item {client}:{clock} references {ref_client}:{ref_clock}, not before it"
        ));
    }
    Ok(())
}

/// Walk the content of an item; returns its length in clock units as Yjs counts them.
fn walk_content(r: &mut Reader<'_>, content: u8) -> Result<u64, Reason> {
    Ok(match content {
        // Deleted: length.
        1 => read_u32(r)?,
        // JSON (a legacy content no current Yjs writes): yrs 0.28 reads one
        // text more than the count says, so it would read another update than
        // Yjs does.
        2 => return Err("JSON content, which yrs misreads".into()),
        // Binary.
        3 => {
            r.read_var_bytes().map_err(read_err)?;
            1
        }
        // String: its length in UTF-16 code units, as JavaScript counts.
        4 => r.read_var_str().map_err(read_err)?.encode_utf16().count() as u64,
        // Embed (JSON text).
        5 => {
            r.read_var_str().map_err(read_err)?;
            1
        }
        // Format: key, JSON text.
        6 => {
            r.read_var_str().map_err(read_err)?;
            r.read_var_str().map_err(read_err)?;
            1
        }
        // Type: the type references Yjs knows; XmlElement and XmlHook carry a name.
        7 => {
            match read_u32(r)? {
                0 | 1 | 2 | 4 | 6 => {}
                // XmlElement: its name.
                3 => {
                    r.read_var_str().map_err(read_err)?;
                }
                // XmlHook: Yjs writes a name that yrs 0.28 does not read.
                5 => return Err("XmlHook type, which yrs misreads".into()),
                other => return Err(format!("unknown type reference {other}")),
            }
            1
        }
        // Any: count, then values.
        8 => {
            let len = read_u32(r)?;
            for _ in 0..len {
                walk_any(r, 0)?;
            }
            len
        }
        // Subdocument: guid, options.
        9 => {
            r.read_var_str().map_err(read_err)?;
            walk_any(r, 0)?;
            1
        }
        other => return Err(format!("unknown content reference {other}")),
    })
}

fn walk_any(r: &mut Reader<'_>, depth: usize) -> Result<(), Reason> {
    if depth >= MAX_ANY_DEPTH {
        return Err(format!("values nested deeper than {MAX_ANY_DEPTH}"));
    }
    match r.read_u8().map_err(read_err)? {
        // undefined, null, false, true
        127 | 126 | 121 | 120 => {}
        // integer
        125 => r.skip_var_i64().map_err(read_err)?,
        // float32
        124 => {
            r.read_exact(4).map_err(read_err)?;
        }
        // float64, bigint
        123 | 122 => {
            r.read_exact(8).map_err(read_err)?;
        }
        // string
        119 => {
            r.read_var_str().map_err(read_err)?;
        }
        // object
        118 => {
            let len = read_u32(r)?;
            for _ in 0..len {
                r.read_var_str().map_err(read_err)?;
                walk_any(r, depth + 1)?;
            }
        }
        // array
        117 => {
            let len = read_u32(r)?;
            for _ in 0..len {
                walk_any(r, depth + 1)?;
            }
        }
        // Uint8Array
        116 => {
            r.read_var_bytes().map_err(read_err)?;
        }
        tag => return Err(format!("unknown value tag {tag}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{updates::encoder::Encode, Array, Doc, Map, ReadTxn, Text, Transact};

    fn rich_update() -> Vec<u8> {
        let doc = Doc::with_client_id(7);
        let text = doc.get_or_insert_text("t");
        let map = doc.get_or_insert_map("m");
        let array = doc.get_or_insert_array("a");
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, 0, "hello world");
        text.remove_range(&mut txn, 2, 3);
        text.insert(&mut txn, 0, "ä😀");
        map.insert(&mut txn, "n", 1.5f64);
        map.insert(&mut txn, "i", 42i64);
        map.insert(&mut txn, "b", true);
        map.insert(&mut txn, "s", "x");
        map.insert(&mut txn, "bin", yrs::Any::Buffer(vec![1u8, 2, 3].into()));
        map.insert(&mut txn, "nested", yrs::MapPrelim::default());
        array.insert(&mut txn, 0, "two");
        array.insert(&mut txn, 1, yrs::Any::Null);
        array.insert(&mut txn, 2, yrs::ArrayPrelim::default());
        map.remove(&mut txn, "s");
        txn.encode_state_as_update_v1(&yrs::StateVector::default())
    }

    #[test]
    fn yrs_made_updates_pass() {
        let update = rich_update();
        assert_eq!(check_update_v1(&update), Ok(()));
        let empty = Doc::new()
            .transact()
            .encode_state_as_update_v1(&yrs::StateVector::default());
        assert_eq!(empty, [0, 0]);
        assert_eq!(check_update_v1(&empty), Ok(()));
        let sv = Doc::with_client_id(7).transact().state_vector().encode_v1();
        assert_eq!(check_state_vector_v1(&sv), Ok(()));
    }

    #[test]
    fn single_zero_byte_is_not_an_update() {
        // The delete set is missing.
        assert!(check_update_v1(&[0x00]).is_err());
        // yrs on its own agrees.
        assert!(Update::decode_v1(&[0x00]).is_err());
        assert!(check_update_v1(&[]).is_err());
        assert!(check_update_v1(&[0, 0, 0]).is_err());
    }

    #[test]
    fn deep_any_nesting_is_refused() {
        // One client, one Any item at the root map key "k" holding arrays nested 100000 deep.
        let depth = 100_000;
        let mut u = vec![1, 1, 1, 0, 8 | 0x20, 1, 1, b'm', 1, b'k', 1];
        for _ in 0..depth {
            u.extend_from_slice(&[117, 1]);
        }
        u.push(126);
        u.push(0);
        let err = check_update_v1(&u).unwrap_err();
        assert!(err.contains("nested"), "{err}");

        // A shallow nesting of the same shape is fine.
        let mut u = vec![1, 1, 1, 0, 8 | 0x20, 1, 1, b'm', 1, b'k', 1];
        for _ in 0..10 {
            u.extend_from_slice(&[117, 1]);
        }
        u.push(126);
        u.push(0);
        assert_eq!(check_update_v1(&u), Ok(()));
    }

    #[test]
    fn huge_counts_are_refused_without_allocating() {
        // Claims 2^32-1 clients, 2^32-1 structs, an Any of 2^32-1 values.
        let cases: [&[u8]; 4] = [
            &[0xff, 0xff, 0xff, 0xff, 0x0f],
            &[1, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 0],
            &[
                1,
                1,
                1,
                0,
                8 | 0x20,
                1,
                1,
                b'm',
                1,
                b'k',
                0xff,
                0xff,
                0xff,
                0xff,
                0x0f,
            ],
            &[0, 0xff, 0xff, 0xff, 0xff, 0x0f],
        ];
        for c in cases {
            assert!(check_update_v1(c).is_err(), "{c:?}");
        }
        assert!(check_state_vector_v1(&[0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }

    #[test]
    fn references_yjs_cannot_read_are_refused() {
        // Content reference 11 and type reference 9 (subdocument type) do not exist in Yjs.
        assert!(check_update_v1(&[1, 1, 1, 0, 11 | 0x20, 1, 1, b'm', 1, b'k', 0]).is_err());
        assert!(check_update_v1(&[1, 1, 1, 0, 7 | 0x20, 1, 1, b'm', 1, b'k', 9, 0]).is_err());
        assert!(check_update_v1(&[1, 1, 1, 0, 7 | 0x20, 1, 1, b'm', 1, b'k', 1, 0]).is_ok());
    }

    #[test]
    fn references_yjs_would_crash_on_are_refused() {
        // Client 1 at clock 0 inserts "a" at the root text "t"; the second struct of the
        // same client (clock 1) has its origin at 1:0 (fine) or at itself/later (refused).
        let with_origin = |clock: u8| {
            vec![
                1, 2, 1, 0, 4, 1, 1, b't', 1, b'a', 0x84, 1, clock, 1, b'b', 0,
            ]
        };
        assert_eq!(check_update_v1(&with_origin(0)), Ok(()));
        assert!(check_update_v1(&with_origin(1)).is_err());
        assert!(check_update_v1(&with_origin(5)).is_err());
        // An origin in another client is a dependency that may arrive later: fine.
        let other_client = [1, 1, 1, 0, 0x84, 2, 7, 1, b'b', 0];
        assert_eq!(check_update_v1(&other_client), Ok(()));
        // Parent item of the same client at the item's own clock.
        assert!(check_update_v1(&[1, 1, 1, 0, 4, 0, 1, 0, 1, b'a', 0]).is_err());
        // A zero-length struct (empty string) and an empty delete range.
        assert!(check_update_v1(&[1, 1, 1, 0, 4, 1, 1, b't', 0, 0]).is_err());
        assert_eq!(check_update_v1(&[0, 1, 1, 1, 0, 1]), Ok(()));
        assert!(check_update_v1(&[0, 1, 1, 1, 0, 0]).is_err());
    }

    /// Found by fuzzing: updates that yrs reads otherwise than Yjs and this
    /// walk, so the walk passed them and yrs then reserved room for billions
    /// of structs (a 6 to 100 GB allocation from a frame of 37 bytes). Each
    /// kind is refused by the walk, before yrs reads it.
    #[test]
    fn updates_yrs_reads_otherwise_than_yjs_are_refused() {
        // From the fuzzer: JSON content, which yrs reads one text too far, in
        // three of them with values over 32 bits as well.
        let fuzzed: [&[u8]; 4] = [
            &[
                0x02, 0x01, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x62, 0x63, 0x01,
                0x01, 0x00, 0x01, 0x01, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x2f, 0x00,
            ],
            &[
                0x02, 0x01, 0x02, 0x00, 0xc2, 0x04, 0x01, 0x20, 0x74, 0x03, 0x01, 0x00, 0x00, 0x00,
                0x00, 0xff, 0xff, 0xff, 0x32, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00,
            ],
            &[
                0x02, 0x01, 0x02, 0x69, 0x02, 0x2a, 0x02, 0x00, 0x03, 0x00, 0x00, 0x02, 0x1a, 0x02,
                0x00, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x26,
            ],
            &[
                0x02, 0x01, 0x02, 0x00, 0xc2, 0x04, 0x3a, 0x20, 0x5b, 0x03, 0x01, 0x00, 0x00, 0x00,
                0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00,
            ],
        ];
        for payload in fuzzed {
            let refused = check_update_v1(payload).expect_err("refused");
            assert!(
                refused.contains("JSON") || refused.contains("32 bits"),
                "refused by the walk, not by yrs: {refused}"
            );
        }
        // From the fuzzer: an XmlHook, whose name yrs does not read.
        let hook = [
            0x01, 0x04, 0x74, 0x0d, 0x87, 0x62, 0x04, 0x05, 0x02, 0x03, 0x62, 0x04, 0xfa, 0x95,
            0xfc, 0xfd, 0x01, 0x26, 0x1a, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0x00,
        ];
        let refused = check_update_v1(&hook).expect_err("refused");
        assert!(refused.contains("XmlHook"), "{refused}");
        // One client (2) with one struct at clock 0, then an empty delete set:
        let cases: [(&[u8], &str); 4] = [
            // a skip of 2^32, which yrs reads as 0;
            (
                &[1, 1, 2, 0, 10, 0x80, 0x80, 0x80, 0x80, 0x10, 0],
                "32 bits",
            ),
            // a skip byte with flags: a skip for Yjs, an item for yrs;
            (&[1, 1, 2, 0, 0x2a, 1, 0], "flags"),
            // a GC byte with flags;
            (&[1, 1, 2, 0, 0x80, 1, 0], "flags"),
            // client 2^53, which yrs cannot hold.
            (
                &[
                    1, 1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10, 0, 10, 1, 0,
                ],
                "53 bits",
            ),
        ];
        for (payload, reason) in cases {
            let refused = check_update_v1(payload).expect_err("refused");
            assert!(refused.contains(reason), "{refused}");
        }
        // The widest values still read: a skip of 2^32 - 1 by client 2^53 - 1.
        let widest = [
            1, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f, 0, 10, 0xff, 0xff, 0xff, 0xff,
            0x0f, 0,
        ];
        assert_eq!(check_update_v1(&widest), Ok(()));
        assert_eq!(
            check_state_vector_v1(&[1, 1, 0xff, 0xff, 0xff, 0xff, 0x0f]),
            Ok(())
        );
        assert!(check_state_vector_v1(&[1, 1, 0x80, 0x80, 0x80, 0x80, 0x10]).is_err());
    }

    #[test]
    fn trailing_bytes_are_refused() {
        assert!(check_update_v1(&[0, 0, 0]).is_err());
        assert!(check_state_vector_v1(&[0, 0]).is_err());
        assert!(check_state_vector_v1(&[]).is_err());
    }

    #[test]
    fn merge_reports_errors() {
        let update = rich_update();
        assert!(merge_updates_v1(&[&update, &[0, 0]]).is_ok());
        assert!(merge_updates_v1(&[&update, &[0xff]]).is_err());
    }
}
