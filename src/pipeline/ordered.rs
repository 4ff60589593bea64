//! Blocking, in-order use of the pipeline, for front ends that process a list (`pharos hash`, benchmarks).

use super::{Job, Pipeline, PipelineError, Ticket};
use crate::error::Error;
use crate::hash::HashRecord;
use std::collections::VecDeque;
use std::time::Duration;

/// One item's place in the queue: submitted, or failed before it could be (it keeps its place).
enum Slot {
    Submitted(Ticket),
    Failed(Error),
}

/// Runs `items` through `pipeline` and calls `sink` with each result **in input order**, as soon as it and
/// every earlier one are done. An item is a tag (a path, an index) and the job, or the error that stopped
/// it from becoming one (an unreadable directory entry): errors keep their place in the order.
///
/// Submits while the pipeline admits more and otherwise waits for the oldest item, so memory stays bounded
/// by the pipeline's `max_in_flight` however many items there are. Blocks: never call it on an async
/// runtime's thread. Stops at the first error `sink` returns.
pub fn run_ordered<T, E>(
    pipeline: &Pipeline,
    items: impl IntoIterator<Item = (T, Result<Job, Error>)>,
    mut sink: impl FnMut(T, Result<HashRecord, PipelineError>) -> Result<(), E>,
) -> Result<(), E> {
    let mut queue: VecDeque<(T, Slot)> = VecDeque::new();
    let mut flush_head = |queue: &mut VecDeque<(T, Slot)>| -> Result<(), E> {
        let (tag, slot) = queue.pop_front().expect("a queued item");
        let result = match slot {
            Slot::Submitted(ticket) => ticket.wait_blocking().0,
            Slot::Failed(e) => Err(PipelineError::Failed(e)),
        };
        sink(tag, result)
    };
    for (tag, job) in items {
        let job = match job {
            Ok(job) => job,
            Err(e) => {
                queue.push_back((tag, Slot::Failed(e)));
                continue;
            }
        };
        loop {
            // A job is cheap to clone (shared bytes or a path); the copy is kept for a retry.
            match pipeline.submit(job.clone()) {
                Ok(ticket) => {
                    queue.push_back((tag, Slot::Submitted(ticket)));
                    break;
                }
                // Full: make room by finishing the oldest item (others may share the pipeline, so when
                // this caller holds nothing, wait a moment instead).
                Err(PipelineError::Overloaded(_)) if !queue.is_empty() => flush_head(&mut queue)?,
                Err(PipelineError::Overloaded(_)) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => {
                    queue.push_back((tag, Slot::Failed(Error::Internal(e.to_string()))));
                    break;
                }
            }
        }
        // Write out whatever is already finished at the head, so output streams.
        while queue.front().is_some_and(|(_, s)| {
            matches!(s, Slot::Failed(_)) || matches!(s, Slot::Submitted(t) if t.is_ready())
        }) {
            flush_head(&mut queue)?;
        }
    }
    while !queue.is_empty() {
        flush_head(&mut queue)?;
    }
    Ok(())
}
