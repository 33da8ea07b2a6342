//! Shuffle through the object store: the file format, the writer that ends a map
//! stage and the reader that starts the stage consuming it.

pub mod format;
pub mod reader;
pub mod writer;

pub use reader::{ReadMode, ShuffleReaderExec};
pub use writer::{ShuffleOutput, ShuffleWriterExec};
