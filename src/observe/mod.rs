//! Live queries: change events turned into publication diffs. Arrives with the live-data work.
