//! The bounded outbound queue of one connection.
//!
//! Producers (the session, publications, the mergebox) push without ever waiting; a connection
//! whose queue grows past its byte cap, or that does not drain for too long, is marked closed
//! as a slow consumer. The transport's writer drains in batches. It must not do I/O itself.

use crate::protocol::Frame;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Why a connection is being closed; each maps to a WebSocket/SockJS close code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client went away or asked to close.
    Normal,
    /// `failed` was sent after an unusable `connect`.
    HandshakeFailed,
    /// No answer to our ping within the heartbeat timeout.
    HeartbeatTimeout,
    /// Outbound queue over its byte cap or not drained in time.
    SlowConsumer,
    /// The client sent more queued messages than allowed.
    Flood,
    /// The server is shutting down.
    Shutdown,
    /// A frame the transport cannot carry (binary, over the size limit, not UTF-8).
    ProtocolViolation,
    /// No `connect` within the connect timeout.
    ConnectTimeout,
    /// A service closed it (a forced logout, an operator).
    ClosedByServer,
}

impl CloseReason {
    /// WebSocket close code and reason text.
    pub fn code_and_text(self) -> (u16, &'static str) {
        match self {
            CloseReason::Normal => (1000, "Normal closure"),
            CloseReason::HandshakeFailed => (1002, "DDP version negotiation failed"),
            CloseReason::HeartbeatTimeout => (1001, "Heartbeat timeout"),
            CloseReason::SlowConsumer => (1008, "Slow consumer: outbound queue over limit"),
            CloseReason::Flood => (1008, "Too many queued messages"),
            CloseReason::Shutdown => (1001, "Server shutting down"),
            CloseReason::ProtocolViolation => (1003, "Unsupported frame"),
            CloseReason::ConnectTimeout => (1008, "No connect message in time"),
            CloseReason::ClosedByServer => (1000, "Closed by the server"),
        }
    }
}

/// Limits of one outbound queue.
#[derive(Clone, Copy, Debug)]
pub struct OutboundLimits {
    /// Bytes that may wait for the client before it is closed as a slow consumer.
    pub max_queued_bytes: usize,
    /// How long frames may wait without the writer taking any.
    pub max_drain_delay: Duration,
}

impl Default for OutboundLimits {
    fn default() -> Self {
        Self {
            max_queued_bytes: 4 * 1024 * 1024,
            max_drain_delay: Duration::from_secs(30),
        }
    }
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<Frame>,
    bytes: usize,
    /// When the writer last took frames, or when the queue went from empty to non-empty.
    waiting_since: Option<Instant>,
    closed: Option<CloseReason>,
    /// Messages sent other than ping/pong (DDP 3.5's `sentCount`).
    sent_count: u64,
}

/// What the writer gets from [`Outbound::next_batch`].
pub enum Batch {
    Frames(Vec<Frame>),
    /// Closed; the frames still queued come with it, to be sent before the close frame.
    Closed(CloseReason, Vec<Frame>),
}

/// One connection's outbound queue.
pub struct Outbound {
    queue: Mutex<Queue>,
    notify: Notify,
    /// Woken when the writer takes frames or the queue closes (producers that pace
    /// themselves wait on it).
    drained: Notify,
    limits: OutboundLimits,
}

impl Outbound {
    pub fn new(limits: OutboundLimits) -> Self {
        Self {
            queue: Mutex::new(Queue::default()),
            notify: Notify::new(),
            drained: Notify::new(),
            limits,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A panic while holding this lock leaves only a queue of frames behind: still usable.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a frame. Returns `Some(SlowConsumer)` the moment the queue overflows (the
    /// caller logs and counts it), and drops frames once closed.
    pub fn push(&self, frame: Frame) -> Option<CloseReason> {
        let mut q = self.lock();
        if q.closed.is_some() {
            return None;
        }
        let now_overflowing = q.bytes + frame.len() > self.limits.max_queued_bytes
            || q.waiting_since
                .is_some_and(|since| since.elapsed() > self.limits.max_drain_delay);
        if now_overflowing {
            q.closed = Some(CloseReason::SlowConsumer);
            q.frames.clear();
            q.bytes = 0;
            drop(q);
            self.notify.notify_one();
            return Some(CloseReason::SlowConsumer);
        }
        if q.frames.is_empty() {
            q.waiting_since = Some(Instant::now());
        }
        if !frame.is_heartbeat() {
            q.sent_count += 1;
        }
        q.bytes += frame.len();
        q.frames.push_back(frame);
        drop(q);
        self.notify.notify_one();
        None
    }

    /// Whether frames have waited longer than allowed; marks the queue closed if so.
    pub fn check_stalled(&self) -> bool {
        let mut q = self.lock();
        let stalled = q.closed.is_none()
            && q.waiting_since
                .is_some_and(|since| since.elapsed() > self.limits.max_drain_delay);
        if stalled {
            q.closed = Some(CloseReason::SlowConsumer);
            q.frames.clear();
            q.bytes = 0;
            drop(q);
            self.notify.notify_one();
        }
        stalled
    }

    /// Marks the queue closed; frames already queued are still handed to the writer
    /// (except after a slow-consumer close, which dropped them). The first reason wins.
    pub fn close(&self, reason: CloseReason) {
        let mut q = self.lock();
        if q.closed.is_none() {
            q.closed = Some(reason);
        }
        drop(q);
        self.notify.notify_one();
        self.drained.notify_waiters();
    }

    /// Completes once at most `bytes` wait in the queue, or it is closed.
    pub async fn drained_to(&self, bytes: usize) {
        loop {
            // Created before the check: a take in between still wakes it.
            let notified = self.drained.notified();
            {
                let q = self.lock();
                if q.closed.is_some() || q.bytes <= bytes {
                    return;
                }
            }
            notified.await;
        }
    }

    pub fn closed_reason(&self) -> Option<CloseReason> {
        self.lock().closed
    }

    pub fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    pub fn sent_count(&self) -> u64 {
        self.lock().sent_count
    }

    /// Takes everything queued, without waiting.
    pub fn try_take(&self) -> Option<Batch> {
        let mut q = self.lock();
        if let Some(reason) = q.closed {
            let rest = q.frames.drain(..).filter(|f| !f.is_revoked()).collect();
            q.bytes = 0;
            return Some(Batch::Closed(reason, rest));
        }
        if q.frames.is_empty() {
            return None;
        }
        // Frames withdrawn while they waited are dropped here, unwritten.
        let frames: Vec<Frame> = q.frames.drain(..).filter(|f| !f.is_revoked()).collect();
        q.bytes = 0;
        q.waiting_since = None;
        drop(q);
        self.drained.notify_waiters();
        Some(Batch::Frames(frames))
    }

    /// Waits for frames (or the close) and takes them all.
    pub async fn next_batch(&self) -> Batch {
        loop {
            let notified = self.notify.notified();
            if let Some(batch) = self.try_take() {
                return batch;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::server as frames;

    #[test]
    fn a_frame_withdrawn_while_queued_is_never_handed_to_the_writer() {
        let out = Outbound::new(OutboundLimits::default());
        let revocation = crate::protocol::server::Revocation::default();
        out.push(frames::ready(&["kept"]));
        out.push(frames::ready(&["withdrawn"]).revocable(revocation.clone()));
        revocation.store(true, std::sync::atomic::Ordering::Release);
        match out.try_take() {
            Some(Batch::Frames(frames)) => {
                assert_eq!(frames.len(), 1);
                assert!(frames[0].as_str().contains("kept"));
            }
            _ => panic!("expected frames"),
        }
        assert_eq!(out.queued_bytes(), 0);
    }

    #[test]
    fn overflow_closes_as_slow_consumer_and_drops_frames() {
        let out = Outbound::new(OutboundLimits {
            max_queued_bytes: 40,
            max_drain_delay: Duration::from_secs(60),
        });
        assert_eq!(out.push(frames::ready(&["a"])), None);
        assert_eq!(
            out.push(frames::ready(&["b"])),
            Some(CloseReason::SlowConsumer)
        );
        assert!(matches!(
            out.try_take(),
            Some(Batch::Closed(CloseReason::SlowConsumer, rest)) if rest.is_empty()
        ));
        assert_eq!(
            out.push(frames::ready(&["c"])),
            None,
            "frames after close are dropped"
        );
    }

    #[test]
    fn close_keeps_queued_frames_for_the_writer() {
        let out = Outbound::new(OutboundLimits::default());
        out.push(frames::ready(&["a"]));
        out.close(CloseReason::Shutdown);
        assert!(matches!(
            out.try_take(),
            Some(Batch::Closed(CloseReason::Shutdown, rest)) if rest.len() == 1
        ));
    }

    #[test]
    fn frames_not_drained_in_time_mark_a_stall() {
        let out = Outbound::new(OutboundLimits {
            max_queued_bytes: 1 << 20,
            max_drain_delay: Duration::from_millis(0),
        });
        out.push(frames::ready(&["a"]));
        std::thread::sleep(Duration::from_millis(2));
        assert!(out.check_stalled());
        assert_eq!(out.closed_reason(), Some(CloseReason::SlowConsumer));
    }

    #[test]
    fn sent_count_skips_heartbeats() {
        let out = Outbound::new(OutboundLimits::default());
        out.push(frames::ping());
        out.push(frames::ready(&["a"]));
        assert_eq!(out.sent_count(), 1);
    }
}
