use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, StringArray};
use arrow::datatypes::DataType;

use super::*;

fn ints(values: &[Option<i64>]) -> ArrayRef {
    Arc::new(Int64Array::from(values.to_vec()))
}

fn summary(batches: &[Vec<ArrayRef>], types: &[DataType]) -> KeySummary {
    let mut summariser = KeySummarizer::new(types, 1 << 15).unwrap();
    for batch in batches {
        summariser.update(batch).unwrap();
    }
    summariser.finish().unwrap()
}

fn kept(filter: &KeyFilter, keys: &[ArrayRef]) -> Vec<bool> {
    let types: Vec<DataType> = keys.iter().map(|k| k.data_type().clone()).collect();
    let converter = key_converter(&types).unwrap();
    let mask = filter.keep(&converter, keys).unwrap();
    (0..mask.len())
        .map(|i| mask.is_valid(i) && mask.value(i))
        .collect()
}

#[test]
fn a_bloom_filter_finds_every_key_it_holds_and_few_others() {
    let mut bloom = Bloom::for_keys(10_000);
    for k in 0..10_000u64 {
        bloom.insert(XxHash64::oneshot(SEED, &k.to_le_bytes()));
    }
    for k in 0..10_000u64 {
        assert!(bloom.contains(XxHash64::oneshot(SEED, &k.to_le_bytes())));
    }
    let false_positives = (10_000..110_000u64)
        .filter(|k| bloom.contains(XxHash64::oneshot(SEED, &k.to_le_bytes())))
        .count();
    // 10 bits a key: about 1 %.
    assert!(false_positives < 3_000, "{false_positives} of 100000");
    let again = Bloom::from_bytes(&bloom.to_bytes()).unwrap();
    assert_eq!(again, bloom);
    assert!(Bloom::from_bytes(&[0; 31]).is_err());
}

#[test]
fn merged_summaries_keep_exactly_the_matching_range_and_drop_null_keys() {
    let types = [DataType::Int64];
    let a = summary(&[vec![ints(&[Some(5), Some(7), None, Some(7)])]], &types);
    let b = summary(&[vec![ints(&[Some(20), Some(9)])]], &types);
    assert_eq!(a.rows, 3, "a null key is not a key");
    assert_eq!(a.hashes.len(), 2 * 8, "distinct keys only");
    let filter = KeyFilter::merge(&[&a, &b], 1).unwrap();
    assert_eq!(filter.build_rows, 5);
    assert_eq!(filter.distinct_keys, 4);
    assert_eq!(
        filter.bounds,
        vec![Some((
            ScalarValue::Int64(Some(5)),
            ScalarValue::Int64(Some(20))
        ))]
    );
    let probe = ints(&[
        Some(5),
        Some(6),
        Some(7),
        Some(9),
        Some(20),
        Some(21),
        None,
        Some(4),
    ]);
    let kept = kept(&filter, &[probe]);
    // 6 may pass the Bloom filter (a false positive), never a key outside the range or null.
    assert_eq!(
        [
            kept[0], kept[2], kept[3], kept[4], kept[5], kept[6], kept[7]
        ],
        [true, true, true, true, false, false, false]
    );
}

#[test]
fn an_empty_build_side_keeps_no_probe_row() {
    let types = [DataType::Int64];
    let empty = summary(&[vec![ints(&[None, None])], vec![ints(&[])]], &types);
    assert_eq!(empty.rows, 0);
    let filter = KeyFilter::merge(&[&empty, &KeySummary::default()], 1).unwrap();
    assert_eq!(kept(&filter, &[ints(&[Some(1), None])]), [false, false]);
    assert_eq!(filter.describe(), "empty build side");
}

#[test]
fn composite_string_keys_match_only_as_whole_rows() {
    let types = [DataType::Utf8, DataType::Int64];
    let names: ArrayRef = Arc::new(StringArray::from(vec!["a", "b", "c"]));
    let build = summary(&[vec![names, ints(&[Some(1), Some(2), Some(3)])]], &types);
    let filter = KeyFilter::merge(&[&build], 2).unwrap();
    let names: ArrayRef = Arc::new(StringArray::from(vec!["a", "b", "a", "z"]));
    let kept = kept(
        &filter,
        &[names, ints(&[Some(1), Some(2), Some(3), Some(1)])],
    );
    assert!(kept[0] && kept[1]);
    assert!(!kept[3], "z is past the bounds of the first column");
    // Pairs whose every column is in bounds, in no build row: a one-block
    // Bloom filter of three keys lets none of them through.
    let names: ArrayRef = Arc::new(StringArray::from(vec!["a", "a", "b", "b", "c", "c"]));
    let numbers = ints(&[Some(2), Some(3), Some(1), Some(3), Some(1), Some(2)]);
    assert_eq!(super::tests::kept(&filter, &[names, numbers]), [false; 6]);
}

#[test]
fn a_writer_past_its_list_keeps_a_bloom_filter_that_still_merges() {
    let types = [DataType::Int64];
    let many: Vec<Option<i64>> = (0..(MAX_TASK_HASHES as i64 + 10)).map(Some).collect();
    let big = summary(&[vec![ints(&many)]], &types);
    assert!(big.hashes.is_empty());
    assert_eq!(big.bloom.len(), (1 << 15) * 32);
    let small = summary(&[vec![ints(&[Some(-5)])]], &types);
    let filter = KeyFilter::merge(&[&big, &small], 1).unwrap();
    let bloom = filter.bloom.as_ref().expect("a Bloom filter");
    assert!(bloom.fill() < 0.6);
    assert_eq!(
        kept(&filter, &[ints(&[Some(-5), Some(0), Some(65_000)])]),
        [true, true, true]
    );
    // Round trip as a plan carries it.
    let wire = filter.wire_bounds().unwrap();
    let again = KeyFilter::from_wire(
        filter.build_rows,
        filter.distinct_keys,
        &wire,
        &bloom.to_bytes(),
    )
    .unwrap();
    assert_eq!(again, filter);
}

#[test]
fn bloom_filters_are_sized_for_the_keys_expected() {
    assert_eq!(KeySet::blocks_for(None), MAX_BLOOM_BLOCKS);
    assert_eq!(KeySet::blocks_for(Some(0)), 32);
    // 1.5 M keys at 10 bits: 15 M bits, 2^16 blocks of 256.
    assert_eq!(KeySet::blocks_for(Some(1_500_000)), 1 << 16);
    assert_eq!(KeySet::blocks_for(Some(usize::MAX)), MAX_BLOOM_BLOCKS);
    let types = [DataType::Int64];
    let mut summariser = KeySummarizer::new(&types, 1 << 10).unwrap();
    let many: Vec<Option<i64>> = (0..(MAX_TASK_HASHES as i64 + 1)).map(Some).collect();
    summariser.update(&[ints(&many)]).unwrap();
    assert_eq!(summariser.finish().unwrap().bloom.len(), (1 << 10) * 32);
}

#[test]
fn float_and_nested_keys_are_not_summarised() {
    assert!(!summarisable(&DataType::Float64));
    assert!(summarisable(&DataType::Int32));
    assert!(summarisable(&DataType::Utf8View));
    assert!(!summarisable(&DataType::new_list(DataType::Int32, true)));
}
