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
//! or, with the zstd codec, each partition an Arrow IPC stream whose buffers
//! IPC itself compresses with zstd (no frame around it). A reader tells them
//! apart by the first bytes: an LZ4 frame's magic, or IPC's continuation mark.
//!
//! A partition may hold several such streams back to back — partitions of
//! several producers copied one after another without decoding them
//! ([`combine_files`]); a reader decodes them in order. A partition with no
//! rows has length 0 and no stream at all. The task result
//! carries the same index, so readers never need the footer; it is there so that a
//! file can be understood on its own (tools, debugging, recovery).

use std::io::{Cursor, Read};

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

/// One shuffle file made of several (`files`: each file's bytes and its
/// partition index, all with the same number of partitions): its partition
/// `p` is the files' partitions `p` one after another, copied without
/// decoding. Returns the file (footer included) and its index. A reader of
/// the result reads one range per partition where it read one per file.
pub fn combine_files(files: &[(&[u8], &[PartitionSlot])]) -> Result<(Vec<u8>, Vec<PartitionSlot>)> {
    let partitions = files.first().map_or(0, |(_, slots)| slots.len());
    if let Some((_, slots)) = files.iter().find(|(_, slots)| slots.len() != partitions) {
        return Err(DataFusionError::Execution(format!(
            "cannot combine shuffle files of {partitions} and {} partitions",
            slots.len()
        )));
    }
    // At most the files' bytes (their footers less): sized from what is
    // there, never from what an index claims.
    let total: usize = files.iter().map(|(bytes, _)| bytes.len()).sum();
    let mut out = Vec::with_capacity(total + partitions * ENTRY_LEN + TRAILER_LEN);
    let mut index = Vec::with_capacity(partitions);
    for p in 0..partitions {
        let offset = out.len() as u64;
        let mut rows = 0;
        for (bytes, slots) in files {
            let slot = slots[p];
            let range = slot
                .offset
                .checked_add(slot.length)
                .filter(|end| *end <= bytes.len() as u64)
                .map(|end| slot.offset as usize..end as usize)
                .ok_or_else(|| {
                    DataFusionError::Execution(format!(
                        "shuffle partition {p} at {}+{} lies beyond its file of {} bytes",
                        slot.offset,
                        slot.length,
                        bytes.len()
                    ))
                })?;
            out.extend_from_slice(&bytes[range]);
            rows += slot.rows;
        }
        index.push(PartitionSlot {
            offset,
            length: out.len() as u64 - offset,
            rows,
        });
    }
    out.extend(encode_footer(&index));
    Ok((out, index))
}

/// The end-of-stream mark of an IPC stream: a continuation and a length of 0.
pub(super) const IPC_END: [u8; 8] = [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0];

/// The first bytes of an LZ4 frame.
const LZ4_MAGIC: [u8; 4] = [0x04, 0x22, 0x4D, 0x18];

/// Decodes one partition: an LZ4 frame holding an IPC stream, or an IPC
/// stream (its buffers zstd-compressed or plain), or several such back to back
/// (a partition put together from several producers' partitions by copying
/// their bytes, without decoding them). Each stream says which it is by its
/// first bytes. Every batch gets buffers of its own, even from a plain stream:
/// batches pointing into one fetched range would each count the whole range
/// against the task's memory (DataFusion counts a batch's buffers' capacity).
pub fn decode_partition(bytes: Bytes) -> Result<Vec<RecordBatch>> {
    let len = bytes.len() as u64;
    let mut input = Cursor::new(bytes);
    let mut batches = Vec::new();
    while input.position() < len {
        let at = input.position() as usize;
        if input.get_ref().get(at..at + 4) == Some(&LZ4_MAGIC[..]) {
            decode_lz4(&mut input, &mut batches)?;
        } else {
            // A stream reader reads exactly its stream, to its end mark.
            for batch in StreamReader::try_new(&mut input, None)? {
                batches.push(batch?);
            }
        }
    }
    Ok(batches)
}

/// Decodes the LZ4 frame at `input`'s position, leaving it after the frame.
fn decode_lz4(input: &mut Cursor<Bytes>, batches: &mut Vec<RecordBatch>) -> Result<()> {
    // The frame decoder stops at the end of its frame.
    let mut frame = FrameDecoder::new(input);
    for batch in StreamReader::try_new(&mut frame, None)? {
        batches.push(batch?);
    }
    // The stream's end is its frame's end: this reads the frame's end mark.
    if frame.read(&mut [0u8; 1])? != 0 {
        return Err(DataFusionError::Execution(
            "a shuffle partition holds bytes after the end of its stream".into(),
        ));
    }
    Ok(())
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

    /// One batch of `values`.
    fn batch(values: &[i64]) -> RecordBatch {
        use arrow::array::Int64Array;
        use arrow::datatypes::{DataType, Field, Schema};
        use std::sync::Arc;
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let column = Arc::new(Int64Array::from(values.to_vec()));
        RecordBatch::try_new(schema, vec![column]).unwrap()
    }

    /// One partition as the shuffle writer writes it: an LZ4 frame around an
    /// IPC stream of `values`.
    fn unit(values: &[i64]) -> Vec<u8> {
        use arrow::ipc::writer::StreamWriter;
        use lz4_flex::frame::FrameEncoder;
        let batch = batch(values);
        let sink = FrameEncoder::new(Vec::new());
        let mut writer = StreamWriter::try_new(sink, &batch.schema()).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        writer.into_inner().unwrap().finish().unwrap()
    }

    /// One partition as the writer writes it with the zstd codec (or, with
    /// `compression` None, the plain one): an IPC stream of a batch for each
    /// of `batches`, their buffers compressed so.
    fn ipc_unit(batches: &[&[i64]], compression: Option<arrow::ipc::CompressionType>) -> Vec<u8> {
        use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
        let options = IpcWriteOptions::default()
            .try_with_compression(compression)
            .unwrap();
        let schema = batch(&[]).schema();
        let mut writer = StreamWriter::try_new_with_options(Vec::new(), &schema, options).unwrap();
        for values in batches {
            writer.write(&batch(values)).unwrap();
        }
        writer.finish().unwrap();
        writer.into_inner().unwrap()
    }

    fn zstd_unit(values: &[i64]) -> Vec<u8> {
        ipc_unit(&[values], Some(arrow::ipc::CompressionType::ZSTD))
    }

    #[test]
    fn zstd_partitions_decode_alone_back_to_back_and_beside_lz4_ones() {
        let batches = decode_partition(Bytes::from(zstd_unit(&[1, 2, 3]))).unwrap();
        assert_eq!(values(&batches), [1, 2, 3]);
        let mut joined = zstd_unit(&[1, 2]);
        joined.extend(unit(&[3]));
        joined.extend(zstd_unit(&[4, 5, 6]));
        let batches = decode_partition(Bytes::from(joined.clone())).unwrap();
        assert_eq!(values(&batches), [1, 2, 3, 4, 5, 6]);
        // Cut into the last stream's batch: an error, not fewer rows.
        let last = zstd_unit(&[4, 5, 6]).len();
        for cut in [9, last / 2, last - 1] {
            let bytes = Bytes::from(joined[..joined.len() - cut].to_vec());
            assert!(decode_partition(bytes).is_err(), "{cut} bytes cut");
        }
    }

    #[test]
    fn plain_partitions_decode_back_to_back_and_beside_others() {
        use datafusion::common::utils::memory::get_record_batch_memory_size;
        let first: Vec<i64> = (0..1000).collect();
        let second: Vec<i64> = (1000..2000).collect();
        let plain = ipc_unit(&[&first, &second], None);
        let batches = decode_partition(Bytes::from(plain.clone())).unwrap();
        assert_eq!(values(&batches), (0..2000).collect::<Vec<_>>());
        assert_eq!(batches.len(), 2);
        // Each batch holds buffers of its own, not the partition's bytes.
        for batch in &batches {
            let size = get_record_batch_memory_size(batch);
            assert!(size < plain.len() * 3 / 4, "{size} of {}", plain.len());
        }

        let mut joined = plain.clone();
        joined.extend(unit(&[4]));
        joined.extend(zstd_unit(&[5]));
        joined.extend(ipc_unit(&[&[6, 7]], None));
        let batches = decode_partition(Bytes::from(joined.clone())).unwrap();
        let mut expected: Vec<i64> = (0..2000).collect();
        expected.extend([4, 5, 6, 7]);
        assert_eq!(values(&batches), expected);
        // Cut into the last stream: an error, not fewer rows (cut by its
        // end mark exactly, every row is still there).
        let last = ipc_unit(&[&[6, 7]], None).len();
        for cut in [1, 9, last / 2, last - 1] {
            let bytes = Bytes::from(joined[..joined.len() - cut].to_vec());
            assert!(decode_partition(bytes).is_err(), "{cut} bytes cut");
        }
        // Bytes after a stream that do not begin one: an error.
        let mut trailing = plain;
        trailing.extend([1, 2, 3]);
        assert!(decode_partition(Bytes::from(trailing)).is_err());
    }

    fn values(batches: &[RecordBatch]) -> Vec<i64> {
        use arrow::array::{AsArray, types::Int64Type};
        batches
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect()
    }

    #[test]
    fn a_partition_decodes_its_one_stream() {
        let batches = decode_partition(Bytes::from(unit(&[1, 2, 3]))).unwrap();
        assert_eq!(values(&batches), [1, 2, 3]);
    }

    #[test]
    fn partitions_copied_back_to_back_decode_as_one() {
        let mut joined = unit(&[1, 2]);
        joined.extend(unit(&[3]));
        joined.extend(unit(&[4, 5, 6]));
        let batches = decode_partition(Bytes::from(joined)).unwrap();
        assert_eq!(values(&batches), [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn a_cut_partition_is_an_error_not_fewer_rows() {
        let mut joined = unit(&[1, 2]);
        let second = unit(&[3, 4]);
        joined.extend(&second[..second.len() / 2]);
        assert!(decode_partition(Bytes::from(joined)).is_err());
    }

    /// A shuffle file of `partitions` (None: an empty partition), as the
    /// writer lays it out: the streams, then the footer.
    fn file(partitions: &[Option<&[i64]>]) -> (Vec<u8>, Vec<PartitionSlot>) {
        let mut bytes = Vec::new();
        let mut slots = Vec::new();
        for values in partitions {
            let offset = bytes.len() as u64;
            if let Some(values) = values {
                bytes.extend(unit(values));
            }
            slots.push(PartitionSlot {
                offset,
                length: bytes.len() as u64 - offset,
                rows: values.map_or(0, |v| v.len() as u64),
            });
        }
        bytes.extend(encode_footer(&slots));
        (bytes, slots)
    }

    #[test]
    fn combined_files_read_as_their_producers_one_after_another() {
        let a = file(&[Some(&[1, 2]), None, Some(&[5])]);
        let b = file(&[Some(&[3]), None, None]);
        let c = file(&[Some(&[4]), Some(&[9, 9]), Some(&[6, 7])]);
        let (combined, index) = combine_files(&[(&a.0, &a.1), (&b.0, &b.1), (&c.0, &c.1)]).unwrap();
        assert_eq!(decode_footer(&combined).unwrap(), index);
        let read = |p: usize| {
            let slot = index[p];
            let range = slot.offset as usize..(slot.offset + slot.length) as usize;
            values(&decode_partition(Bytes::copy_from_slice(&combined[range])).unwrap())
        };
        assert_eq!(read(0), [1, 2, 3, 4]);
        assert_eq!(read(1), [9, 9]);
        assert_eq!(read(2), [5, 6, 7]);
        assert_eq!(index.iter().map(|s| s.rows).collect::<Vec<_>>(), [4, 2, 3]);
        // Adjacent partitions stay adjacent: one ranged read covers several.
        assert_eq!(index[0].offset + index[0].length, index[1].offset);
    }

    #[test]
    fn files_that_do_not_fit_together_are_refused() {
        let a = file(&[Some(&[1]), None]);
        let b = file(&[Some(&[2])]);
        let err = combine_files(&[(&a.0, &a.1), (&b.0, &b.1)]).unwrap_err();
        assert!(err.to_string().contains("2 and 1 partitions"), "{err}");
        let mut beyond = a.1.clone();
        beyond[0].length = 1 << 40;
        let err = combine_files(&[(&a.0, &beyond)]).unwrap_err();
        assert!(err.to_string().contains("beyond its file"), "{err}");
        assert_eq!(combine_files(&[]).unwrap().1, vec![]);
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
