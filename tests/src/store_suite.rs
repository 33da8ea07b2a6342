//! One object-store test suite, run against every store Squall uses: memory,
//! local files (`tests/tests/object_stores.rs`) and emulated S3
//! (`tests/tests/emulated_aws.rs`). It checks what Squall relies on: ranged
//! reads (shuffle readers fetch slots, Parquet readers footers), listing by prefix
//! (tables are prefixes), multipart uploads (large shuffle and result files), and
//! conditional puts (writing only where nothing is).

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    UpdateVersion,
};

/// What a store supports beyond the common ground.
#[derive(Debug, Clone, Copy)]
pub struct Capabilities {
    /// `PutMode::Update` (compare-and-swap on the ETag); local files do not have it.
    pub conditional_update: bool,
}

/// Runs every check under `prefix`, which must be empty; removes what it wrote.
pub async fn run_all(store: &dyn ObjectStore, prefix: &str, capabilities: Capabilities) {
    let root = Path::from(prefix);
    ranged_reads(store, &root).await;
    listing(store, &root).await;
    multipart(store, &root).await;
    conditional_put(store, &root, capabilities).await;
    let left: Vec<_> = store.list(Some(&root)).try_collect().await.expect("list");
    for meta in left {
        store.delete(&meta.location).await.expect("delete");
    }
    let left: Vec<_> = store.list(Some(&root)).try_collect().await.expect("list");
    assert!(left.is_empty(), "objects left under {root}: {left:?}");
}

fn numbers(len: usize) -> Bytes {
    Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
}

async fn ranged_reads(store: &dyn ObjectStore, root: &Path) {
    let path = root.clone().join("ranged.bin");
    let data = numbers(10_000);
    store
        .put(&path, PutPayload::from(data.clone()))
        .await
        .expect("put");
    let got = store.get_range(&path, 10..20).await.expect("get_range");
    assert_eq!(got, data.slice(10..20));
    let ranges = store
        .get_ranges(&path, &[0..1, 4_000..4_100, 9_990..10_000])
        .await
        .expect("get_ranges");
    assert_eq!(ranges[0], data.slice(0..1));
    assert_eq!(ranges[1], data.slice(4_000..4_100));
    assert_eq!(ranges[2], data.slice(9_990..10_000));
    // A suffix (the Parquet footer read) and an open-ended range.
    for (range, expected) in [
        (GetRange::Suffix(8), data.slice(9_992..)),
        (GetRange::Offset(9_000), data.slice(9_000..)),
    ] {
        let options = GetOptions {
            range: Some(range.clone()),
            ..Default::default()
        };
        let got = store
            .get_opts(&path, options)
            .await
            .expect("ranged get")
            .bytes()
            .await
            .expect("body");
        assert_eq!(got, expected, "range {range:?}");
    }
    let head = store.head(&path).await.expect("head");
    assert_eq!(head.size, 10_000);
    match store.get(&root.clone().join("missing.bin")).await {
        Err(object_store::Error::NotFound { .. }) => {}
        other => panic!("a missing object should be NotFound, got {other:?}"),
    }
}

async fn listing(store: &dyn ObjectStore, root: &Path) {
    let dir = root.clone().join("table");
    // More objects than one listing page holds on some stores is not needed: S3's
    // page is 1,000; paging is the SDK's business. Nested and sibling prefixes are.
    for name in ["a.parquet", "b.parquet", "sub/c.parquet"] {
        store
            .put(&Path::from(format!("{dir}/{name}")), PutPayload::from("x"))
            .await
            .expect("put");
    }
    store
        .put(
            &root.clone().join("table-other.parquet"),
            PutPayload::from("x"),
        )
        .await
        .expect("put");
    let mut all: Vec<String> = store
        .list(Some(&dir))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .expect("list");
    all.sort();
    assert_eq!(
        all,
        vec![
            format!("{dir}/a.parquet"),
            format!("{dir}/b.parquet"),
            format!("{dir}/sub/c.parquet")
        ],
        "a prefix lists what is under it, nested included, and not its siblings"
    );
    let shallow = store
        .list_with_delimiter(Some(&dir))
        .await
        .expect("list_with_delimiter");
    let mut files: Vec<String> = shallow
        .objects
        .iter()
        .map(|m| m.location.to_string())
        .collect();
    files.sort();
    assert_eq!(
        files,
        vec![format!("{dir}/a.parquet"), format!("{dir}/b.parquet")]
    );
    let folders: Vec<String> = shallow
        .common_prefixes
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(folders, vec![format!("{dir}/sub")]);
    let offset: Vec<String> = store
        .list_with_offset(Some(&dir), &Path::from(format!("{dir}/a.parquet")))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .expect("list_with_offset");
    assert!(
        !offset.contains(&format!("{dir}/a.parquet")) && offset.len() == 2,
        "{offset:?}"
    );
}

async fn multipart(store: &dyn ObjectStore, root: &Path) {
    let path = root.clone().join("multipart.bin");
    // S3 wants every part but the last to be at least 5 MiB.
    let part = 5 * 1024 * 1024;
    let data = numbers(2 * part + 12_345);
    let mut upload = store.put_multipart(&path).await.expect("put_multipart");
    for chunk in [
        data.slice(0..part),
        data.slice(part..2 * part),
        data.slice(2 * part..),
    ] {
        upload
            .put_part(PutPayload::from(chunk))
            .await
            .expect("put_part");
    }
    upload.complete().await.expect("complete");
    let got = store
        .get(&path)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body");
    assert_eq!(got.len(), data.len());
    assert!(
        got == data,
        "multipart object differs from what was written"
    );
    // An aborted upload leaves no object.
    let aborted = root.clone().join("aborted.bin");
    let mut upload = store.put_multipart(&aborted).await.expect("put_multipart");
    upload
        .put_part(PutPayload::from(data.slice(0..part)))
        .await
        .expect("put_part");
    upload.abort().await.expect("abort");
    assert!(matches!(
        store.head(&aborted).await,
        Err(object_store::Error::NotFound { .. })
    ));
}

async fn conditional_put(store: &dyn ObjectStore, root: &Path, capabilities: Capabilities) {
    let path = root.clone().join("conditional.json");
    let create = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    let first = store
        .put_opts(&path, PutPayload::from("first"), create.clone())
        .await
        .expect("create where nothing is");
    match store
        .put_opts(&path, PutPayload::from("second"), create)
        .await
    {
        Err(object_store::Error::AlreadyExists { .. }) => {}
        other => panic!("a second create must fail with AlreadyExists, got {other:?}"),
    }
    let body = store
        .get(&path)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body");
    assert_eq!(
        body,
        Bytes::from("first"),
        "a refused create changed the object"
    );
    if !capabilities.conditional_update {
        return;
    }
    let current = UpdateVersion {
        e_tag: first.e_tag.clone(),
        version: first.version.clone(),
    };
    store
        .put_opts(
            &path,
            PutPayload::from("updated"),
            PutOptions {
                mode: PutMode::Update(current.clone()),
                ..Default::default()
            },
        )
        .await
        .expect("update with the current version");
    match store
        .put_opts(
            &path,
            PutPayload::from("stale"),
            PutOptions {
                mode: PutMode::Update(current),
                ..Default::default()
            },
        )
        .await
    {
        Err(object_store::Error::Precondition { .. }) => {}
        other => panic!("an update with a stale version must fail, got {other:?}"),
    }
    let body = store
        .get(&path)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body");
    assert_eq!(body, Bytes::from("updated"));
}
