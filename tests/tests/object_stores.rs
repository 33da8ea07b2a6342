//! The shared object-store suite (`squall_tests::store_suite`) on the stores that
//! need no emulator: memory and local files. Emulated S3 runs the same suite in
//! `emulated_aws.rs`.

use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use squall_tests::store_suite::{Capabilities, run_all};

#[tokio::test]
async fn memory_store_passes_the_suite() {
    let store = InMemory::new();
    run_all(
        &store,
        "suite",
        Capabilities {
            conditional_update: true,
        },
    )
    .await;
}

#[tokio::test]
async fn local_files_pass_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
    run_all(
        &store,
        "suite",
        Capabilities {
            conditional_update: false,
        },
    )
    .await;
}
