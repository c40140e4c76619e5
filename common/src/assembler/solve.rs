//! RaptorQ solves: run here, or handed out as tickets and reported back, held until a
//! tick when the pipeline asks.

use super::*;

impl Assembler {
    /// Solves a block here, or hands the job out when solves run elsewhere.
    pub(super) fn dispatch(&mut self, o: ObjectRef, block: u32, job: SolveJob) {
        if self.solve_elsewhere {
            let ticket = self.next_ticket;
            self.next_ticket += 1;
            let state = self.object_mut(o);
            state.solving += 1;
            state.blocks.get_mut(&block).expect("present").ticket = Some(ticket);
            self.solves.push_back(SolveRequest {
                ticket,
                object: o,
                block,
                job,
            });
        } else {
            let result = job.run();
            self.settle(o, block, result);
        }
    }

    /// Takes the next block waiting for a solve elsewhere (see [`Self::set_solve_elsewhere`]).
    pub fn poll_solve(&mut self) -> Option<SolveRequest> {
        self.solves.pop_front()
    }

    /// Makes blocks that need RaptorQ come out of [`Self::poll_solve`] instead of being
    /// solved inside [`Self::handle`], so a pool of threads can solve them.
    pub fn set_solve_elsewhere(&mut self, elsewhere: bool) {
        self.solve_elsewhere = elsewhere;
    }

    /// Makes a block with enough symbols but some source symbols missing wait for the
    /// next [`Self::tick`] (or [`Self::flush_ready`]) before it is solved: a sender's
    /// spreading delivers symbols out of order, and most such blocks complete from their
    /// source symbols a moment later, without the cost of a RaptorQ solve.
    pub fn set_hold_solves(&mut self, hold: bool) {
        self.hold_solves = hold;
    }

    /// Solves (or hands out) every block held ready since the last call.
    pub fn flush_ready(&mut self) {
        for (o, block) in std::mem::take(&mut self.ready) {
            let Some(b) = self
                .sessions
                .get_mut(&o.session)
                .and_then(|s| s.objects.get_mut(&o.object))
                .and_then(|state| state.blocks.get_mut(&block))
            else {
                continue;
            };
            let before = b.decoder.held_bytes();
            let job = b.decoder.take_job();
            let after = b.decoder.held_bytes();
            self.adjust_held(o, before, after);
            if let Some(job) = job {
                self.dispatch(o, block, job);
            }
        }
    }

    /// Reports the outcome of a [`SolveRequest`]: the block's bytes, or `None` when its
    /// symbols did not determine it. Outcomes for objects gone since are ignored.
    pub fn solved(&mut self, ticket: u64, object: ObjectRef, block: u32, result: Option<Vec<u8>>) {
        let Some(state) = self
            .sessions
            .get_mut(&object.session)
            .and_then(|s| s.objects.get_mut(&object.object))
        else {
            return;
        };
        let Some(b) = state.blocks.get_mut(&block) else {
            return;
        };
        if b.ticket != Some(ticket) {
            return;
        }
        b.ticket = None;
        state.solving -= 1;
        self.settle(object, block, result);
    }

    /// Completes a block whose solve succeeded, or asks for another solve once more
    /// symbols have arrived.
    pub(super) fn settle(&mut self, o: ObjectRef, block: u32, result: Option<Vec<u8>>) {
        if let Some(data) = result {
            self.block_done(o, block, data);
            return;
        }
        let b = self.object_mut(o).blocks.get_mut(&block).expect("present");
        let before = b.decoder.held_bytes();
        let again = b.decoder.solve_failed();
        let after = b.decoder.held_bytes();
        self.adjust_held(o, before, after);
        if let Some(job) = again {
            self.dispatch(o, block, job);
        }
    }
}
