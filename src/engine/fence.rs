//! The write fence seen from the services: a method records the sequence number of each of
//! its writes, and its `updated` message waits until every live query has seen them.
//!
//! Owns only the recording seam; the fence itself lives with the method call
//! ([`MethodContext`]) and the session that sends `updated`.

use super::registry::MethodContext;

/// Where a caller's writes are recorded (a DDP method's write fence); REST records none.
pub trait WriteRecorder: Sync {
    fn record_write(&self, seq: u64);
}

impl WriteRecorder for MethodContext {
    fn record_write(&self, seq: u64) {
        MethodContext::record_write(self, seq);
    }
}

/// No fence to hold (REST, start-up).
pub struct NoFence;

impl WriteRecorder for NoFence {
    fn record_write(&self, _seq: u64) {}
}
