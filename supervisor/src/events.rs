//! The lifecycle event stream: every part of the supervisor publishes here;
//! `GET /v1/events` subscribers and metrics read from it. A slow subscriber
//! loses the oldest events (and is told how many) rather than slowing the
//! supervisor down.

use corral_protocol::api::{Event, EventRecord};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<EventRecord>>,
    seq: Arc<AtomicU64>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus::new(4096)
    }
}

impl EventBus {
    pub fn new(capacity: usize) -> EventBus {
        let (tx, _) = broadcast::channel(capacity);
        EventBus {
            tx,
            seq: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn publish(&self, event: Event) {
        let record = EventRecord {
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            time_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            event,
        };
        tracing::debug!(plugin = record.event.plugin(), event = ?record.event, "event");
        // No subscriber is fine.
        let _ = self.tx.send(Arc::new(record));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<EventRecord>> {
        self.tx.subscribe()
    }
}
