//! The hand-over from the assembler thread to the disk writer: events through a bounded
//! channel, decoded blocks' bytes under a [`ByteBudget`], and on the way the answer to
//! each object the assembler announces, from the ledger of deliveries; and the disk
//! writer's thread on the other end.

use super::*;

/// Bytes handed from one thread to another and not yet consumed: the producer waits
/// while they exceed the limit (one hand-over always passes, however large).
#[derive(Debug)]
pub(super) struct ByteBudget {
    /// Bytes in flight, and whether the consumer is gone.
    state: Mutex<(usize, bool)>,
    freed: Condvar,
    limit: usize,
}

impl ByteBudget {
    pub(super) fn new(limit: usize) -> Self {
        ByteBudget {
            state: Mutex::new((0, false)),
            freed: Condvar::new(),
            limit,
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, (usize, bool)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until `n` more bytes fit (or nothing is in flight, or the consumer is gone).
    pub(super) fn acquire(&self, n: usize) {
        let mut st = self.lock();
        while !st.1 && st.0 > 0 && st.0 + n > self.limit {
            st = self.freed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.0 += n;
    }

    /// `n` bytes were consumed.
    pub(super) fn release(&self, n: usize) {
        let mut st = self.lock();
        st.0 = st.0.saturating_sub(n);
        self.freed.notify_all();
    }

    /// The consumer stopped: nobody waits any more.
    pub(super) fn close(&self) {
        self.lock().1 = true;
        self.freed.notify_all();
    }
}

/// Closes a budget when the consumer thread ends, even by a panic.
pub(super) struct CloseOnDrop(pub(super) Arc<ByteBudget>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Bytes an event carries to the disk writer.
pub(super) fn event_bytes(ev: &Event) -> usize {
    match ev {
        Event::BlockDecoded { data, .. } => data.capacity(),
        _ => 0,
    }
}

/// Hands `ev` to the disk writer once its bytes fit the budget; false when it is gone.
pub(super) fn hand_over(events: &Sender<Event>, budget: &ByteBudget, ev: Event) -> bool {
    let n = event_bytes(&ev);
    budget.acquire(n);
    if events.send(ev).is_err() {
        budget.release(n);
        return false;
    }
    true
}

/// The assembler thread's way to the disk writer.
pub(super) struct Handover {
    pub(super) events: Sender<Event>,
    pub(super) budget: Arc<ByteBudget>,
    pub(super) metrics: crate::metrics::ReceiverMetrics,
    /// Answers the assembler's question whether an announced object was delivered before.
    pub(super) ledger: Arc<crate::ledger::DeliveredLedger>,
}

impl Handover {
    /// Hands every pending event over, answering announced objects from the ledger on
    /// the way (before any further datagram); false when the disk writer is gone.
    pub(super) fn drain(&self, asm: &mut Assembler) -> bool {
        while let Some(ev) = asm.poll_event() {
            if let Event::ObjectAnnounced { object, descriptor } = &ev {
                if self.ledger.already_delivered(descriptor) {
                    asm.skip(*object);
                } else if let Err(reject) = asm.proceed(*object) {
                    tracing::debug!(%object, %reject, "announced object not admitted");
                    self.metrics.rejected(reject.reason(), 1);
                }
                continue;
            }
            if !hand_over(&self.events, &self.budget, ev) {
                return false;
            }
        }
        true
    }
}

/// The disk writer's thread: acts on every event handed over, delivering the batched MISP
/// events whenever it is idle for a moment, until the assembler is gone.
pub(super) fn run_delivery(
    mut delivery: Delivery,
    events: Receiver<Event>,
    budget: Arc<ByteBudget>,
) -> Summary {
    let _closed = CloseOnDrop(budget.clone());
    loop {
        let ev = match events.try_recv() {
            Ok(ev) => ev,
            Err(crossbeam_channel::TryRecvError::Empty) => {
                // Idle for a moment: deliver the batched MISP events now.
                delivery.flush();
                match events.recv() {
                    Ok(ev) => ev,
                    Err(_) => break,
                }
            }
            Err(crossbeam_channel::TryRecvError::Disconnected) => break,
        };
        let n = event_bytes(&ev);
        delivery.handle(ev);
        budget.release(n);
    }
    delivery.abandon_all("the receiver stopped before the object completed");
    delivery.into_summary()
}
