//! The gthread class's Python threads: each attaches to the interpreter once, waits for jobs
//! with the GIL released, and runs them. Connections waiting for a thread wait in Rust (the
//! worker's app slot has one permit per thread), never in a Python thread.

use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use pyo3::prelude::*;

/// Work for a pool thread.
pub type Job = Box<dyn FnOnce(Python<'_>) + Send>;

/// A fixed set of Python threads.
pub struct PythonPool {
    sender: Option<mpsc::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl PythonPool {
    /// Start `size` threads.
    pub fn start(size: usize) -> std::io::Result<PythonPool> {
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let mut threads = Vec::with_capacity(size);
        for n in 0..size {
            let receiver = receiver.clone();
            threads.push(std::thread::Builder::new().name(format!("ferrocorn-py-{n}")).spawn(
                move || {
                    Python::attach(|py| {
                        loop {
                            let job = py.detach(|| {
                                receiver.lock().unwrap_or_else(|e| e.into_inner()).recv()
                            });
                            match job {
                                Ok(job) => job(py),
                                Err(_) => break, // the pool was dropped
                            }
                        }
                    })
                },
            )?);
        }
        Ok(PythonPool { sender: Some(sender), threads })
    }

    /// Queue a job; false when the pool is shut down.
    pub fn submit(&self, job: Job) -> bool {
        self.sender.as_ref().is_some_and(|s| s.send(job).is_ok())
    }
}

impl Drop for PythonPool {
    /// Closing the queue lets idle threads end at once. Threads still inside the app are not
    /// waited for: blocking here would stop the worker's heartbeat; the process exits anyway.
    fn drop(&mut self) {
        self.sender = None;
        self.threads.clear();
    }
}
