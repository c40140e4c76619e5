//! The threads that run RaptorQ solves for the assembler thread, so a block that lost
//! symbols costs the assembler a hand-over instead of milliseconds of matrix work while
//! datagrams wait behind it.

use crossbeam_channel::{unbounded, Receiver, Sender};
use gapferry_common::assembler::{ObjectRef, SolveRequest};
use gapferry_common::Assembler;

/// The outcome of one [`SolveRequest`].
pub struct Solved {
    ticket: u64,
    object: ObjectRef,
    block: u32,
    result: Option<Vec<u8>>,
}

/// A pool of solver threads and the requests it has not answered yet.
pub struct Solvers {
    jobs: Sender<SolveRequest>,
    done: Receiver<Solved>,
    outstanding: usize,
}

impl Solvers {
    /// Starts `threads` solver threads (at least one).
    pub fn start(threads: usize) -> std::io::Result<Self> {
        let (jobs, jobs_rx) = unbounded::<SolveRequest>();
        let (done_tx, done) = unbounded::<Solved>();
        for i in 0..threads.max(1) {
            let jobs_rx = jobs_rx.clone();
            let done_tx = done_tx.clone();
            std::thread::Builder::new()
                .name(format!("gapferry-solve-{i}"))
                .spawn(move || {
                    // Ends when the pool is dropped and the queue is empty.
                    for req in jobs_rx {
                        let result = req.job.run();
                        let solved = Solved {
                            ticket: req.ticket,
                            object: req.object,
                            block: req.block,
                            result,
                        };
                        if done_tx.send(solved).is_err() {
                            return;
                        }
                    }
                })?;
        }
        Ok(Solvers {
            jobs,
            done,
            outstanding: 0,
        })
    }

    /// Solver threads for this machine: one per core, at most four.
    pub fn default_threads() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
    }

    /// Where outcomes arrive; pass each to [`Self::apply`].
    pub fn done(&self) -> &Receiver<Solved> {
        &self.done
    }

    /// Requests not answered yet.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// Hands every block the assembler wants solved to the threads.
    pub fn submit_from(&mut self, asm: &mut Assembler) {
        while let Some(req) = asm.poll_solve() {
            self.outstanding += 1;
            if self.jobs.send(req).is_err() {
                // Unreachable while `self` holds the receiving side's senders alive;
                // counted as answered so draining never waits for it.
                self.outstanding -= 1;
            }
        }
    }

    /// Gives one outcome to the assembler.
    pub fn apply(&mut self, asm: &mut Assembler, s: Solved) {
        self.outstanding -= 1;
        asm.solved(s.ticket, s.object, s.block, s.result);
        self.submit_from(asm);
    }

    /// Waits for every outstanding request (and any it leads to) and applies them.
    pub fn drain(&mut self, asm: &mut Assembler) {
        self.submit_from(asm);
        while self.outstanding > 0 {
            match self.done.recv() {
                Ok(s) => self.apply(asm, s),
                Err(_) => break,
            }
        }
    }
}
