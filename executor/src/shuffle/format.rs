//! The shuffle file format.
//!
//! One object per map-task attempt:
//!
//! ```text
//! [partition 0: LZ4 frame of an Arrow IPC stream][partition 1: ...]...
//! [index: per partition (offset u64, length u64, rows u64), little endian]
//! [trailer: index length u32 | format version u32 | magic "SQSH"]
//! ```
//!
//! A partition with no rows has length 0 and no stream at all. The task result
//! carries the same index, so readers never need the footer; it is there so that a
//! file can be understood on its own (tools, debugging, recovery).

use std::io::Cursor;

use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use bytes::Bytes;
use datafusion::common::{DataFusionError, Result};
use lz4_flex::frame::FrameDecoder;

use crate::protocol::PartitionSlot;

pub const MAGIC: &[u8; 4] = b"SQSH";
pub const FORMAT_VERSION: u32 = 2;
pub const TRAILER_LEN: usize = 12;
const ENTRY_LEN: usize = 24;

/// The index and trailer that end a shuffle file whose partitions are `slots`.
pub fn encode_footer(slots: &[PartitionSlot]) -> Vec<u8> {
    let mut out = Vec::with_capacity(slots.len() * ENTRY_LEN + TRAILER_LEN);
    for slot in slots {
        out.extend_from_slice(&slot.offset.to_le_bytes());
        out.extend_from_slice(&slot.length.to_le_bytes());
        out.extend_from_slice(&slot.rows.to_le_bytes());
    }
    let index_len = (slots.len() * ENTRY_LEN) as u32;
    out.extend_from_slice(&index_len.to_le_bytes());
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(MAGIC);
    out
}

/// Reads the partition index back from the tail of a shuffle file (at least the
/// footer, possibly the whole file).
pub fn decode_footer(tail: &[u8]) -> Result<Vec<PartitionSlot>> {
    let bad = |why: &str| DataFusionError::Execution(format!("not a Squall shuffle file: {why}"));
    if tail.len() < TRAILER_LEN {
        return Err(bad("shorter than its trailer"));
    }
    let trailer = &tail[tail.len() - TRAILER_LEN..];
    if &trailer[8..12] != MAGIC {
        return Err(bad("bad magic"));
    }
    let version = u32::from_le_bytes(trailer[4..8].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(bad(&format!(
            "format version {version}, this build reads {FORMAT_VERSION}"
        )));
    }
    let index_len = u32::from_le_bytes(trailer[0..4].try_into().expect("4 bytes")) as usize;
    if !index_len.is_multiple_of(ENTRY_LEN) || index_len + TRAILER_LEN > tail.len() {
        return Err(bad("index length out of range"));
    }
    let index = &tail[tail.len() - TRAILER_LEN - index_len..tail.len() - TRAILER_LEN];
    Ok(index
        .chunks_exact(ENTRY_LEN)
        .map(|entry| {
            let word =
                |i: usize| u64::from_le_bytes(entry[i * 8..i * 8 + 8].try_into().expect("8"));
            PartitionSlot {
                offset: word(0),
                length: word(1),
                rows: word(2),
            }
        })
        .collect())
}

/// Decodes one partition: an LZ4 frame holding an IPC stream.
pub fn decode_partition(bytes: Bytes) -> Result<Vec<RecordBatch>> {
    let reader = StreamReader::try_new(FrameDecoder::new(Cursor::new(bytes)), None)?;
    reader
        .into_iter()
        .map(|batch| batch.map_err(DataFusionError::from))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footer_round_trips() {
        let slots = vec![
            PartitionSlot {
                offset: 0,
                length: 100,
                rows: 7,
            },
            PartitionSlot {
                offset: 100,
                length: 0,
                rows: 0,
            },
            PartitionSlot {
                offset: 100,
                length: 5,
                rows: 1,
            },
        ];
        let mut file = vec![9u8; 105];
        file.extend(encode_footer(&slots));
        assert_eq!(decode_footer(&file).unwrap(), slots);
    }

    #[test]
    fn footer_rejects_garbage() {
        let err = decode_footer(b"this is not a shuffle file").unwrap_err();
        assert!(err.to_string().contains("bad magic"), "{err}");
        let mut file = encode_footer(&[]);
        file[4] = 9; // version
        assert!(
            decode_footer(&file)
                .unwrap_err()
                .to_string()
                .contains("version")
        );
        assert!(decode_footer(b"SQSH").is_err());
    }
}
