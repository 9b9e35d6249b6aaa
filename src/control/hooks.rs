//! Node faults inside the rank: a Backend wrapper that sleeps before each collective (slow),
//! corrupts one checked input (corrupt), leaves the run (exit) and fires armed points.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::agent::{self, Shared};
use crate::backend::{Backend, BackendError, Call, Phase};

pub struct FaultyBackend<'a> {
    inner: Box<dyn Backend + 'a>,
    shared: Arc<Shared>,
    nranks: u64,
    call: Option<Call>,
    phase: Phase,
    /// Whether the runner marks around each launch in this phase (the sleep then goes before the
    /// start mark, so the slow rank's own time stays clean and the others wait for it).
    marked: bool,
    launches: u64,
    corrupted_unchecked: bool,
}

impl<'a> FaultyBackend<'a> {
    pub fn new(inner: Box<dyn Backend + 'a>, shared: Arc<Shared>, nranks: usize) -> Self {
        FaultyBackend {
            inner,
            shared,
            nranks: nranks as u64,
            call: None,
            phase: Phase::Check,
            marked: false,
            launches: 0,
            corrupted_unchecked: false,
        }
    }

    fn slow(&self) {
        let ns = self.shared.slow_ns.load(Ordering::Relaxed);
        if ns > 0 {
            std::thread::sleep(Duration::from_nanos(ns));
        }
    }

    fn before_launch(&mut self) {
        if self.shared.exit.load(Ordering::Acquire) {
            agent::goodbye(&self.shared, "exit fault: the rank leaves mid-run");
            crate::say("collbench: exit fault: this rank leaves the run now");
            std::process::exit(0);
        }
        if self.shared.armed.load(Ordering::Acquire) && self.phase == Phase::Timed {
            if let Some(c) = self.call {
                let n = self.nranks;
                let matches =
                    |size: u64| crate::plan::Shape::of(c.op, c.dtype, size, n).count == c.count;
                agent::reached(&self.shared, c.op.name(), matches, self.launches);
            }
        }
        if !self.marked {
            self.slow();
        }
        if self.phase == Phase::Check && self.corrupted_unchecked {
            self.corrupted_unchecked = false;
            self.shared.corrupt.store(false, Ordering::Release);
        }
        self.launches += 1;
    }
}

impl Backend for FaultyBackend<'_> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn library_version(&self) -> String {
        self.inner.library_version()
    }
    fn prepare(&mut self, call: &Call) -> Result<(), BackendError> {
        self.call = Some(*call);
        self.inner.prepare(call)
    }
    fn launch(&mut self) -> Result<(), BackendError> {
        self.before_launch();
        self.inner.launch()
    }
    fn mark(&mut self, slot: usize) {
        if self.marked && slot % 2 == 0 {
            self.slow();
        }
        self.inner.mark(slot)
    }
    fn synchronize(&mut self) -> Result<(), BackendError> {
        self.inner.synchronize()
    }
    fn elapsed_ns(&self, from: usize, to: usize) -> u64 {
        self.inner.elapsed_ns(from, to)
    }
    fn write_input(&mut self, fill: &mut dyn FnMut(&mut [u8])) -> Result<(), BackendError> {
        let corrupt = self.phase == Phase::Check && self.shared.corrupt.load(Ordering::Acquire);
        self.inner.write_input(&mut |b| {
            fill(b);
            if corrupt {
                if let Some(x) = b.first_mut() {
                    *x ^= 0x5a;
                }
            }
        })?;
        self.corrupted_unchecked = corrupt;
        Ok(())
    }
    fn read_output(&mut self, check: &mut dyn FnMut(&[u8])) -> Result<(), BackendError> {
        self.inner.read_output(check)
    }
    fn barrier(&mut self) -> Result<(), BackendError> {
        self.inner.barrier()
    }
    fn begin_phase(&mut self, phase: Phase) {
        self.phase = phase;
        self.launches = 0;
        self.marked = match phase {
            Phase::Timed => !self.inner.separate_marked_loop(),
            Phase::Marked => true,
            Phase::Check | Phase::Warmup => false,
        };
        self.inner.begin_phase(phase)
    }
    fn checks(&self, call: &Call) -> bool {
        self.inner.checks(call)
    }
    fn separate_marked_loop(&self) -> bool {
        self.inner.separate_marked_loop()
    }
    /// A slow fault sleeps between calls; the sleep must stay out of this rank's samples.
    fn marks_each_start(&self) -> bool {
        true
    }
}
