//! The combine step of a two-level exchange, one task at a time through
//! `run_task`: a combine task writes one file of the same partitions from
//! its group's files (or of a slice of their partitions), with one ranged GET
//! a file that has rows there and one PUT, and refuses what does not fit,
//! writing nothing.
use std::sync::Arc;

use arrow::array::{AsArray, Int64Array, RecordBatch, types::Int64Type};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::ipc::writer::StreamWriter;
use datafusion::physical_plan::empty::EmptyExec;
use lz4_flex::frame::FrameEncoder;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use squall_executor::shuffle::format::{decode_footer, decode_partition, encode_footer};
use squall_executor::{
    ExecutorContext, FailureKind, OutputFile, PartitionSlot, ShuffleOutput, ShuffleWriterExec,
    Slice, StageInput, StoreRegistry, TaskAction, TaskId, TaskOutcome, TaskResult, TaskSpec,
    WIRE_VERSION, encode_plan, run_task,
};

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]))
}

/// A shuffle file whose partitions hold `parts[p]`, put at `url`.
async fn put_file(stores: &StoreRegistry, url: &str, parts: &[&[i64]]) -> OutputFile {
    let mut bytes = Vec::new();
    let mut slots = Vec::new();
    for values in parts {
        let offset = bytes.len() as u64;
        if !values.is_empty() {
            let batch =
                RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from(values.to_vec()))])
                    .unwrap();
            let mut writer =
                StreamWriter::try_new(FrameEncoder::new(Vec::new()), &schema()).unwrap();
            writer.write(&batch).unwrap();
            writer.finish().unwrap();
            bytes.extend(writer.into_inner().unwrap().finish().unwrap());
        }
        slots.push(PartitionSlot {
            offset,
            length: bytes.len() as u64 - offset,
            rows: values.len() as u64,
        });
    }
    bytes.extend(encode_footer(&slots));
    let (store, path) = stores.resolve(url).unwrap();
    let size = bytes.len() as u64;
    store.put(&path, PutPayload::from(bytes)).await.unwrap();
    OutputFile {
        url: url.into(),
        keys: vec![],
        size,
        partitions: slots,
    }
}

/// A combine spec over `files`, writing `partitions`-way files.
fn spec(files: Vec<OutputFile>, partitions: usize, memory: u64) -> TaskSpec {
    let writer = ShuffleWriterExec::new(
        Arc::new(EmptyExec::new(schema())),
        if partitions == 1 {
            ShuffleOutput::Single
        } else {
            let key = datafusion::physical_expr::expressions::col("v", &schema()).unwrap();
            ShuffleOutput::Hash(vec![key], partitions)
        },
        "memory:///w/stage-1/combined".into(),
    );
    TaskSpec {
        wire_version: WIRE_VERSION,
        id: TaskId {
            job_id: "j".into(),
            run_id: "r".into(),
            stage_id: 9,
            task: 0,
            attempt: 0,
        },
        action: TaskAction::Combine,
        plan: encode_plan(Arc::new(writer)).unwrap(),
        partition: None,
        inputs: vec![StageInput {
            stage_id: 1,
            producers: files,
            slice: None,
        }],
        memory_limit_bytes: memory,
        session_options: vec![],
        hedging: Default::default(),
        shuffle_codec: Default::default(),
        trace_context: None,
    }
}

fn values(bytes: Bytes) -> Vec<i64> {
    decode_partition(bytes)
        .unwrap()
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect()
}

#[tokio::test]
async fn a_combine_task_writes_one_file_of_the_same_partitions() {
    let stores = Arc::new(StoreRegistry::new());
    let ctx = ExecutorContext::new(stores.clone(), std::env::temp_dir());
    let a = put_file(&stores, "memory:///w/stage-1/a.sqsh", &[&[1, 2], &[], &[3]]).await;
    let b = put_file(&stores, "memory:///w/stage-1/b.sqsh", &[&[4], &[5], &[]]).await;
    let result = run_task(&ctx, spec(vec![a.clone(), b.clone()], 3, 1 << 20)).await;
    let TaskOutcome::Succeeded { output, metrics } = result.outcome else {
        panic!("{:?}", result.outcome);
    };
    assert_eq!(
        output.url,
        "memory:///w/stage-1/combined/00/task-0-r-attempt-0.sqsh"
    );
    assert_eq!(
        output.partitions.iter().map(|s| s.rows).collect::<Vec<_>>(),
        [3, 1, 1]
    );
    assert_eq!((metrics.rows_in, metrics.rows_out), (5, 5));
    let data = |f: &OutputFile| f.partitions.iter().map(|s| s.length).sum::<u64>();
    assert_eq!(
        metrics.bytes_in,
        data(&a) + data(&b),
        "partitions, not footers"
    );
    // Two whole GETs and one PUT.
    let memory = &result.usage.requests["memory"];
    assert_eq!((memory.get, memory.put), (2, 1), "{:?}", result.usage);
    let (store, path) = stores.resolve(&output.url).unwrap();
    let file = store.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(file.len() as u64, output.size);
    let part = |p: usize| {
        let s = output.partitions[p];
        file.slice(s.offset as usize..(s.offset + s.length) as usize)
    };
    assert_eq!(values(part(0)), [1, 2, 4]);
    assert_eq!(values(part(1)), [5]);
    assert_eq!(values(part(2)), [3]);
}

#[tokio::test]
async fn a_combine_task_of_a_slice_reads_and_writes_those_partitions_only() {
    let stores = Arc::new(StoreRegistry::new());
    let ctx = ExecutorContext::new(stores.clone(), std::env::temp_dir());
    let a = put_file(
        &stores,
        "memory:///w/stage-1/a.sqsh",
        &[&[1, 2], &[], &[3], &[]],
    )
    .await;
    let b = put_file(
        &stores,
        "memory:///w/stage-1/b.sqsh",
        &[&[4], &[5], &[], &[]],
    )
    .await;
    let c = put_file(
        &stores,
        "memory:///w/stage-1/c.sqsh",
        &[&[6], &[], &[], &[7]],
    )
    .await;
    let slice = Slice { start: 1, end: 3 };
    let files = [a, b, c].map(|f| {
        let mut cut = f.clone();
        cut.partitions = f.partitions[1..3].to_vec();
        cut
    });
    let mut spec = spec(files.to_vec(), 4, 1 << 20);
    spec.inputs[0].slice = Some(slice);
    let result = run_task(&ctx, spec).await;
    let TaskOutcome::Succeeded { output, .. } = result.outcome else {
        panic!("{:?}", result.outcome);
    };
    // Partitions 1 and 2 only; c has no rows there and is not read.
    let rows: Vec<u64> = output.partitions.iter().map(|s| s.rows).collect();
    assert_eq!(rows, [0, 1, 1, 0]);
    assert_eq!(result.usage.requests["memory"].get, 2, "{:?}", result.usage);
    let (store, path) = stores.resolve(&output.url).unwrap();
    let file = store.get(&path).await.unwrap().bytes().await.unwrap();
    let part = |p: usize| {
        let s = output.partitions[p];
        file.slice(s.offset as usize..(s.offset + s.length) as usize)
    };
    assert_eq!(values(part(1)), [5]);
    assert_eq!(values(part(2)), [3]);
    assert_eq!(decode_footer(&file).unwrap(), output.partitions);
}

#[tokio::test]
async fn a_combine_task_refuses_what_does_not_fit() {
    let stores = Arc::new(StoreRegistry::new());
    let ctx = ExecutorContext::new(stores.clone(), std::env::temp_dir());
    let a = put_file(&stores, "memory:///w/stage-1/a.sqsh", &[&[1], &[2]]).await;
    let failure = |result: TaskResult| match result.outcome {
        TaskOutcome::Failed(f) => f,
        other => panic!("{other:?}"),
    };
    // A file that is not what its producer committed.
    let mut short = a.clone();
    short.size += 1;
    let f = failure(run_task(&ctx, spec(vec![short], 2, 1 << 20)).await);
    assert!(
        f.message.contains("a.sqsh") && f.message.contains("committed"),
        "{f:?}"
    );
    // Files of another partitioning than the step's.
    let f = failure(run_task(&ctx, spec(vec![a.clone()], 3, 1 << 20)).await);
    assert!(f.message.contains("2 partitions"), "{f:?}");
    // Twice the bytes must fit in the pool.
    let f = failure(run_task(&ctx, spec(vec![a.clone()], 2, a.size)).await);
    assert_eq!(f.kind, FailureKind::ResourcesExhausted, "{f:?}");
    // A file that is not there.
    let mut gone = a.clone();
    gone.url = "memory:///w/stage-1/gone.sqsh".into();
    let f = failure(run_task(&ctx, spec(vec![gone], 2, 1 << 20)).await);
    assert_eq!(f.kind, FailureKind::NotFound, "{f:?}");
    // Nothing was written by any of them.
    let (store, _) = stores.resolve("memory:///w").unwrap();
    let written = store
        .list(Some(&Path::from("w/stage-1/combined")))
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    assert!(written.is_empty(), "{written:?}");
}
