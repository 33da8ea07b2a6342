//! Tooling around the engine, off its core path: TPC-H data generation, the
//! queries and their reference answers (`tpch`), a skewed data set and its
//! queries (`skew`), and the benchmarks behind `squall bench` (`bench`, and
//! the fault and straggler harness, `faults`; direct against two-level
//! exchange, `exchange`), and the scale model behind `squall simulate`
//! (`simulate`, replaying on the engine's platforms, and the two-level
//! exchange in it, `combine_model`), all on top of `squall-engine`. Tests and
//! the CLI use them; the engine and the service never do.

pub mod bench;
pub mod burst;
pub mod combine_model;
pub mod exchange;
pub mod faults;
pub mod replay;
pub mod simulate;
pub mod skew;
pub mod tpch;
