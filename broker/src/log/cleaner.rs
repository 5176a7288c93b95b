//! The log cleaner: compaction for `cleanup.policy=compact` (`__consumer_offsets`, and any
//! topic configured so).
//!
//! A pass keeps, in every sealed segment wholly below the high watermark, the newest record of
//! each key, and drops the rest: older records of a key, records without a key (Kafka's cleaner
//! drops them too; a compacted topic refuses them on produce), and tombstones (null values)
//! whose batch is older than `delete.retention.ms`. The active segment and anything a follower
//! might still truncate are never touched.
//!
//! **Offsets never move and batches stay contiguous.** A batch that keeps some records keeps
//! its base offset, lastOffsetDelta, timestamps and producer fields (as Kafka's cleaner does);
//! its records are stored uncompressed. Where whole batches go, one empty batch (no records)
//! covers their offsets, one per run and leader epoch, so every reader and every recovery
//! check can still demand that each batch starts where the previous one ended (a base offset
//! is outside the CRC: that check is what catches a bad header read). A batch the producer
//! state still remembers (one of a producer's last five) is kept, empty if need be, so that
//! replaying the log rebuilds the same idempotence state. Clients step over empty batches by
//! their lastOffsetDelta, as they must for Kafka's compacted topics (KAFKA-5443).
//!
//! **Crash safety.** Consecutive cleanable segments are cleaned in groups whose input fits in
//! `segment.bytes`; each group becomes one segment with the group's first base offset:
//! 1. the cleaned copy is written to `<base>.log.cleaned` and fsynced;
//! 2. it is renamed to `<base>.log.swap` and the directory fsynced: the commit point;
//! 3. the group's old segment files are removed, the directory fsynced;
//! 4. the swap file is renamed to `<base>.log`, the directory fsynced, indexes written.
//!
//! Opening a log removes `.cleaned` files (a pass that did not commit: the old segments are
//! whole) and finishes every `.swap` file (removes the segments in its offset range, renames
//! it), so a crash at any step leaves either the old segments or the cleaned one, never both
//! and never neither.

use super::batch::{self, BatchHeader};
use super::segment::{self, Segment};
use super::{io_error, LogError, PartitionLog};
use crate::storage::Disk;
use crate::types::Offset;
use std::collections::BTreeMap;
use std::path::Path;

/// Memory a key costs in the cleaner's map beyond its bytes (the offset, the tree's node).
pub const MAP_ENTRY_OVERHEAD_BYTES: usize = 64;
const CLEANED_SUFFIX: &str = ".log.cleaned";
const SWAP_SUFFIX: &str = ".log.swap";
/// A cleaned segment's positions must fit the 32-bit index entries.
const CLEANED_SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;

/// What one cleaning pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanStats {
    pub segments_before: usize,
    pub segments_after: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub records_removed: u64,
    pub tombstones_removed: u64,
}

/// Whether `name` is the output of a pass that never reached its commit point.
pub fn is_unfinished(name: &str) -> bool {
    name.ends_with(CLEANED_SUFFIX)
}

/// Finishes every clean that reached its commit point: removes the old segments in the swap
/// file's offset range and renames it into place. Returns whether there was any.
pub fn complete_swaps(
    disk: &dyn Disk,
    dir: &Path,
    names: &[String],
    index_interval_bytes: u64,
) -> Result<bool, LogError> {
    let mut completed = false;
    for name in names {
        let Some(base) = name.strip_suffix(SWAP_SUFFIX).and_then(|b| b.parse::<i64>().ok()) else { continue };
        let swap_path = dir.join(name);
        let mut swapped = Segment::open(disk, swap_path.clone(), base)?;
        // It was fsynced before its rename: any bad batch in it is corruption, not a torn tail.
        swapped.recover(index_interval_bytes, false)?;
        let end = swapped.next_offset;
        drop(swapped);
        let replaced = names
            .iter()
            .filter_map(|n| n.strip_suffix(".log").and_then(|b| b.parse::<i64>().ok()))
            .filter(|&b| base <= b && b < end);
        for old in replaced {
            segment::remove_files(disk, dir, old)?;
        }
        disk.sync_dir(dir).map_err(io_error(dir))?;
        let log_path = dir.join(segment::file_name(base, "log"));
        disk.rename(&swap_path, &log_path).map_err(io_error(&swap_path))?;
        disk.sync_dir(dir).map_err(io_error(dir))?;
        tracing::info!(dir = %dir.display(), base, end, "finished a log clean interrupted after its commit point");
        completed = true;
    }
    Ok(completed)
}

/// Where the cleaner is in a group's output: the bytes so far and the run of removed batches
/// not yet covered by an empty batch.
struct GroupOutput {
    bytes: Vec<u8>,
    /// (first offset, last offset, leader epoch, max timestamp) of removed batches in a row.
    run: Option<(i64, i64, i32, i64)>,
}

impl GroupOutput {
    fn push(&mut self, batch: &[u8]) {
        self.close_run();
        self.bytes.extend_from_slice(batch);
    }

    fn remove(&mut self, header: &BatchHeader) {
        let epoch = header.partition_leader_epoch;
        if let Some((_, last, run_epoch, max_timestamp)) = &mut self.run {
            if *run_epoch == epoch && *last + 1 == header.base_offset {
                *last = header.last_offset();
                *max_timestamp = (*max_timestamp).max(header.max_timestamp);
                return;
            }
        }
        self.close_run();
        self.run = Some((header.base_offset, header.last_offset(), epoch, header.max_timestamp));
    }

    fn close_run(&mut self) {
        if let Some((first, last, epoch, max_timestamp)) = self.run.take() {
            let delta = i32::try_from(last - first).expect("a run lies within one segment's 32-bit offsets");
            self.bytes.extend_from_slice(&batch::empty_batch(first, delta, epoch, max_timestamp));
        }
    }
}

impl PartitionLog {
    /// One cleaning pass, if the topic is compacted and enough was written since the last one
    /// (`min.cleanable.dirty.ratio`). Cleans sealed segments wholly below `high_watermark`.
    /// Returns what it did, or `None` if there was nothing to do.
    pub fn clean(&mut self, now_ms: i64, high_watermark: Offset) -> Result<Option<CleanStats>, LogError> {
        if !self.config.cleanup_policy.compact {
            return Ok(None);
        }
        self.guard(|log| log.clean_inner(now_ms, high_watermark))
    }

    fn clean_inner(&mut self, now_ms: i64, high_watermark: Offset) -> Result<Option<CleanStats>, LogError> {
        // Sealed segments wholly below the HW: a follower never truncates below its HW, so no
        // cleaned segment is ever cut.
        let cleanable =
            self.segments[..self.segments.len() - 1].iter().take_while(|s| s.next_offset <= high_watermark.0).count();
        if cleanable == 0 || !self.dirty_enough(cleanable) {
            return Ok(None);
        }
        let (keys, cleanable) = self.newest_offsets(cleanable)?;
        if cleanable == 0 {
            tracing::warn!(dir = %self.dir.display(), limit = self.config.cleaner_dedupe_buffer_bytes,
                "the keys of one segment do not fit log.cleaner.dedupe.buffer.size: not cleaning");
            return Ok(None);
        }
        let cleaned_end = self.segments[cleanable - 1].next_offset;
        let mut stats = CleanStats {
            segments_before: cleanable,
            bytes_before: self.segments[..cleanable].iter().map(|s| s.size).sum(),
            ..CleanStats::default()
        };
        let (mut first, mut remaining) = (0, cleanable);
        while remaining > 0 {
            let mut group = 1;
            let mut input = self.segments[first].size;
            while group < remaining && input + self.segments[first + group].size <= self.config.segment_bytes {
                input += self.segments[first + group].size;
                group += 1;
            }
            if !self.clean_group(first, group, &keys, now_ms, &mut stats)? {
                break;
            }
            first += 1;
            remaining -= group;
        }
        stats.segments_after = first;
        stats.bytes_after = self.segments[..first].iter().map(|s| s.size).sum();
        self.first_dirty_offset = cleaned_end;
        self.check_invariants();
        tracing::info!(dir = %self.dir.display(), ?stats, "cleaned the log");
        Ok(Some(stats))
    }

    /// Whether the bytes written since the last pass are at least `min.cleanable.dirty.ratio`
    /// of the first `cleanable` segments.
    fn dirty_enough(&self, cleanable: usize) -> bool {
        let segments = &self.segments[..cleanable];
        let total: u64 = segments.iter().map(|s| s.size).sum();
        let dirty: u64 = segments.iter().filter(|s| s.next_offset > self.first_dirty_offset).map(|s| s.size).sum();
        dirty > 0 && dirty as f64 >= self.config.min_cleanable_dirty_ratio * total as f64
    }

    /// The newest offset of every key in the first `cleanable` segments, and how many of them
    /// it covers whole (fewer if the keys outgrow `log.cleaner.dedupe.buffer.size`: keys seen
    /// in a segment that did not fit only make the cleaner keep more, never less).
    fn newest_offsets(&self, cleanable: usize) -> Result<(BTreeMap<Vec<u8>, i64>, usize), LogError> {
        let mut keys: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
        let mut memory = 0usize;
        for (index, segment) in self.segments[..cleanable].iter().enumerate() {
            let mut fits = true;
            for_each_batch(segment, |header, stored| {
                let (_, body, records) = batch::stored_records(stored)?;
                for record in records {
                    let Some(key) = record.key else { continue };
                    let offset = header.base_offset + i64::from(record.offset_delta);
                    match keys.get_mut(&body[key.clone()]) {
                        Some(newest) => *newest = offset,
                        None if memory + key.len() + MAP_ENTRY_OVERHEAD_BYTES
                            > self.config.cleaner_dedupe_buffer_bytes =>
                        {
                            fits = false;
                        }
                        None => {
                            memory += key.len() + MAP_ENTRY_OVERHEAD_BYTES;
                            keys.insert(body[key].to_vec(), offset);
                        }
                    }
                }
                Ok(())
            })?;
            if !fits {
                return Ok((keys, index));
            }
        }
        Ok((keys, cleanable))
    }

    /// Cleans segments `first..first + count` into one (module docs: the four steps). Returns
    /// `false`, changing nothing, if the output would not fit a segment's 32-bit positions.
    fn clean_group(
        &mut self,
        first: usize,
        count: usize,
        keys: &BTreeMap<Vec<u8>, i64>,
        now_ms: i64,
        stats: &mut CleanStats,
    ) -> Result<bool, LogError> {
        let base = self.segments[first].base_offset;
        let end = self.segments[first + count - 1].next_offset;
        let mut output = GroupOutput { bytes: Vec::new(), run: None };
        for segment in &self.segments[first..first + count] {
            for_each_batch(segment, |header, stored| {
                self.clean_batch(header, stored, keys, now_ms, &mut output, stats)
            })?;
        }
        output.close_run();
        if output.bytes.len() as u64 > CLEANED_SEGMENT_BYTES_MAX {
            tracing::warn!(dir = %self.dir.display(), base, "a cleaned group would outgrow a segment: left as it is");
            return Ok(false);
        }
        let cleaned = self.dir.join(format!("{base:020}{CLEANED_SUFFIX}"));
        let swap = self.dir.join(format!("{base:020}{SWAP_SUFFIX}"));
        let file = self.disk.open(&cleaned, true).map_err(io_error(&cleaned))?;
        file.set_len(0).map_err(io_error(&cleaned))?;
        file.write_all_at(&output.bytes, 0).map_err(io_error(&cleaned))?;
        file.sync().map_err(io_error(&cleaned))?;
        drop(file);
        self.disk.rename(&cleaned, &swap).map_err(io_error(&cleaned))?;
        self.disk.sync_dir(&self.dir).map_err(io_error(&self.dir))?;
        for old in &self.segments[first..first + count] {
            old.delete_files(&*self.disk)?;
        }
        self.disk.sync_dir(&self.dir).map_err(io_error(&self.dir))?;
        let log_path = self.dir.join(segment::file_name(base, "log"));
        self.disk.rename(&swap, &log_path).map_err(io_error(&swap))?;
        self.disk.sync_dir(&self.dir).map_err(io_error(&self.dir))?;
        let mut segment = Segment::open(&*self.disk, log_path, base)?;
        segment.recover(self.config.index_interval_bytes, false)?;
        assert_eq!(segment.next_offset, end, "a cleaned group covers exactly the offsets it replaced");
        segment.write_indexes(&*self.disk)?;
        self.segments.splice(first..first + count, [segment]);
        Ok(true)
    }

    /// Decides one stored batch: kept whole, kept with fewer records, kept empty (the producer
    /// state remembers it), or removed (covered by the run's empty batch).
    fn clean_batch(
        &self,
        header: &BatchHeader,
        stored: &[u8],
        keys: &BTreeMap<Vec<u8>, i64>,
        now_ms: i64,
        output: &mut GroupOutput,
        stats: &mut CleanStats,
    ) -> Result<(), LogError> {
        let (_, body, records) = batch::stored_records(stored)?;
        let tombstone_expired = header.max_timestamp < now_ms.saturating_sub(self.config.delete_retention_ms);
        let mut kept = Vec::with_capacity(body.len());
        let mut kept_count: i32 = 0;
        for record in &records {
            let offset = header.base_offset + i64::from(record.offset_delta);
            let newest = record.key.as_ref().is_some_and(|key| keys.get(&body[key.clone()]) == Some(&offset));
            let newest = if crate::planted::active(crate::planted::Bug::CleanerDropsNewest) {
                record.key.is_some() && !newest
            } else {
                newest
            };
            if newest && !(record.value_is_null && tombstone_expired) {
                kept.extend_from_slice(&body[record.bytes.clone()]);
                kept_count += 1;
            } else {
                stats.records_removed += 1;
                stats.tombstones_removed += u64::from(newest && record.value_is_null);
            }
        }
        let remembered = header.producer_id >= 0 && self.producers.remembers(header.producer_id, header.last_offset());
        if kept_count == 0 && !remembered {
            output.remove(header); // an empty batch left by an earlier pass joins the run too
        } else if kept_count as usize == records.len() {
            output.push(stored);
        } else {
            output.push(&batch::rebuild(header, &kept, kept_count));
        }
        Ok(())
    }
}

/// Calls `visit` with every batch of `segment`, read whole and checked.
fn for_each_batch(
    segment: &Segment,
    mut visit: impl FnMut(&BatchHeader, &[u8]) -> Result<(), LogError>,
) -> Result<(), LogError> {
    let mut position = 0;
    let mut expected = segment.base_offset;
    while let Some((header, bytes)) = segment.batch_at(position, expected)? {
        visit(&header, &bytes)?;
        position += header.size as u64;
        expected = header.last_offset() + 1;
    }
    Ok(())
}
