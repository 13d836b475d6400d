//! Running a batch iterator on a background thread.

use crate::error::DataError;
use std::sync::mpsc::{Receiver, SyncSender};
use std::thread::JoinHandle;

/// Runs an iterator on a background thread, keeping up to `depth` items ready in a bounded
/// channel, so that gathering rows overlaps with the work of the consumer.
///
/// Items arrive in the order of the iterator. Dropping the `Prefetch` stops the thread: its
/// next send fails, it returns, and the drop joins it (it finishes the item it is computing
/// first). A panic in the producer is not swallowed: the consumer gets one
/// `Err(DataError::LoaderPanicked(message))` after the items sent before it, then `None`.
pub struct Prefetch<T> {
    rx: Option<Receiver<Result<T, DataError>>>,
    handle: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> Prefetch<T> {
    /// Prefetches the items of `iter`.
    pub fn new<I>(iter: I, depth: usize) -> Result<Prefetch<T>, DataError>
    where
        I: Iterator<Item = T> + Send + 'static,
    {
        Prefetch::new_fallible(iter.map(Ok), depth)
    }

    /// Prefetches an iterator of results (such as [`TrainBatches`] or [`TestBatches`]); the
    /// items come out flattened: `Ok(item)` or the iterator's own error.
    pub fn new_fallible<I>(iter: I, depth: usize) -> Result<Prefetch<T>, DataError>
    where
        I: Iterator<Item = Result<T, DataError>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(depth);
        let handle = std::thread::Builder::new()
            .name("recursa-prefetch".into())
            .spawn(move || produce(iter, tx))
            .map_err(|e| DataError::io("<prefetch thread>", e))?;
        Ok(Prefetch {
            rx: Some(rx),
            handle: Some(handle),
        })
    }
}

/// The producer loop: stops at the end of `iter` or when the consumer is gone.
fn produce<T, I: Iterator<Item = Result<T, DataError>>>(
    iter: I,
    tx: SyncSender<Result<T, DataError>>,
) {
    for item in iter {
        if tx.send(item).is_err() {
            return;
        }
    }
}

impl<T> Iterator for Prefetch<T> {
    type Item = Result<T, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rx = self.rx.as_ref()?;
        if let Ok(item) = rx.recv() {
            return Some(item);
        }
        // The sender is gone: the producer finished or panicked.
        self.rx = None;
        let handle = self.handle.take()?;
        match handle.join() {
            Ok(()) => None,
            Err(payload) => Some(Err(DataError::LoaderPanicked(panic_message(
                payload.as_ref(),
            )))),
        }
    }
}

impl<T> Drop for Prefetch<T> {
    fn drop(&mut self) {
        // Closing the channel first makes a send blocked on a full channel fail.
        self.rx = None;
        if let Some(h) = self.handle.take() {
            // A panic here was already printed by the panic hook, and a drop cannot return it.
            let _ = h.join();
        }
    }
}

/// The message of a panic payload (`&str` or `String`, the two `panic!` produces).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".into()
    }
}
