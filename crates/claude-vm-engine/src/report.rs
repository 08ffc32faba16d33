//! How the engine tells a front end what it is doing.

/// Receives progress of long operations. The CLI draws it on stderr; tests ignore it.
pub trait Reporter: Send + Sync {
    /// A step begins ("creating the container").
    fn step(&self, message: &str);
    /// A measurable step begins; `total` in bytes (0 when unknown).
    fn progress_start(&self, message: &str, total: u64);
    /// Bytes done so far in the current measurable step.
    fn progress(&self, done: u64, total: u64);
    /// The measurable step ended.
    fn progress_end(&self);
    /// Something worth telling that is not an error.
    fn warn(&self, message: &str);
}

/// Reports nothing.
pub struct NullReporter;

impl Reporter for NullReporter {
    fn step(&self, _: &str) {}
    fn progress_start(&self, _: &str, _: u64) {}
    fn progress(&self, _: u64, _: u64) {}
    fn progress_end(&self) {}
    fn warn(&self, _: &str) {}
}
