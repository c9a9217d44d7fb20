//! [`ordered_map`]: parallel work on a stream, results in input order, with
//! bounded memory.

use std::any::Any;
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread;

/// A thread of [`ordered_map`] panicked: the work on an item, or drawing the
/// next item from the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a worker thread panicked while {during} item {item}: {message}")]
pub struct ThreadPanic {
    /// "working on" or "drawing".
    pub during: &'static str,
    /// The item's position in the input (0-based).
    pub item: u64,
    /// The panic's message.
    pub message: String,
}

impl ThreadPanic {
    fn new(during: &'static str, item: u64, payload: Box<dyn Any + Send>) -> Self {
        let message = match payload.downcast::<String>() {
            Ok(s) => *s,
            Err(payload) => payload
                .downcast_ref::<&str>()
                .map_or("(no message)".to_string(), |s| s.to_string()),
        };
        Self {
            during,
            item,
            message,
        }
    }
}

/// What comes back for one item: its result, or the panic that replaced it.
type Outcome<R> = (u64, Result<R, ThreadPanic>);

/// Apply `work` to every item of `inputs` on `workers` threads and hand the
/// results to `consume`, on the calling thread, in the order of `inputs`.
///
/// `inputs` is drawn on a thread of its own (reading and decompressing
/// overlap with the work), and at most `in_flight` items are between being
/// drawn and being consumed at any moment, so memory is bounded by
/// `in_flight` items whatever the length of the stream or the speed of each
/// worker. The first error `consume` returns stops everything: the remaining
/// items are not drawn and that error is returned. A panic in `work` or in
/// `inputs` does the same, in input order, as a [`ThreadPanic`] error: the
/// results before it are consumed, nothing after it, and nothing hangs.
pub fn ordered_map<T, R, E, I, W, C>(
    inputs: I,
    workers: usize,
    in_flight: usize,
    work: W,
    mut consume: C,
) -> Result<(), E>
where
    I: Iterator<Item = T> + Send,
    T: Send,
    R: Send,
    E: From<ThreadPanic>,
    W: Fn(T) -> R + Sync,
    C: FnMut(R) -> Result<(), E>,
{
    let workers = workers.max(1);
    let in_flight = in_flight.max(workers);
    // A permit is taken before an item is drawn and given back when its
    // result is consumed: `in_flight` permits bound everything in between.
    let (permit_tx, permit_rx) = sync_channel::<()>(in_flight);
    for _ in 0..in_flight {
        // Cannot fail: the channel has room for every permit and a receiver.
        let _ = permit_tx.send(());
    }
    let (item_tx, item_rx) = sync_channel::<(u64, T)>(in_flight);
    let item_rx = Arc::new(Mutex::new(item_rx));
    // One more slot than permits: the drawer's panic report never blocks.
    let (result_tx, result_rx) = sync_channel::<Outcome<R>>(in_flight + 1);

    thread::scope(|scope| {
        let drawer_tx = result_tx.clone();
        scope.spawn(move || draw(inputs, permit_rx, item_tx, drawer_tx));
        for _ in 0..workers {
            let (item_rx, result_tx, work) = (Arc::clone(&item_rx), result_tx.clone(), &work);
            scope.spawn(move || work_loop(&item_rx, &result_tx, work));
        }
        // Only the threads hold these now: when they end, the channels close.
        drop(item_rx);
        drop(result_tx);

        let mut pending: BTreeMap<u64, Result<R, ThreadPanic>> = BTreeMap::new();
        let mut next = 0u64;
        let mut outcome = Ok(());
        'results: for (seq, result) in result_rx.iter() {
            pending.insert(seq, result);
            while let Some(result) = pending.remove(&next) {
                next += 1;
                if let Err(e) = result.map_err(E::from).and_then(&mut consume) {
                    outcome = Err(e);
                    break 'results;
                }
                // The drawing thread may have finished: a closed channel is fine.
                let _ = permit_tx.send(());
            }
        }
        // On an early stop, closing these makes the workers' sends and the
        // drawer's wait for a permit fail, so every thread ends.
        drop(result_rx);
        drop(permit_tx);
        outcome
    })
}

fn draw<T, R, I: Iterator<Item = T>>(
    mut inputs: I,
    permits: Receiver<()>,
    items: SyncSender<(u64, T)>,
    results: SyncSender<Outcome<R>>,
) {
    for seq in 0u64.. {
        // The permit first: an item is only drawn when there is room for it.
        if permits.recv().is_err() {
            return;
        }
        let item = match catch_unwind(AssertUnwindSafe(|| inputs.next())) {
            Ok(Some(item)) => item,
            Ok(None) => return,
            Err(payload) => {
                let _ = results.send((seq, Err(ThreadPanic::new("drawing", seq, payload))));
                return;
            }
        };
        if items.send((seq, item)).is_err() {
            return;
        }
    }
}

fn work_loop<T, R, W: Fn(T) -> R>(
    items: &Mutex<Receiver<(u64, T)>>,
    results: &SyncSender<Outcome<R>>,
    work: &W,
) {
    loop {
        // Hold the lock only to take one item (no panic can poison it).
        let next = match items.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok((seq, item)) = next else { return };
        let result = catch_unwind(AssertUnwindSafe(|| work(item)))
            .map_err(|payload| ThreadPanic::new("working on", seq, payload));
        if results.send((seq, result)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn results_come_in_input_order_whatever_the_worker_count() {
        for workers in [1, 2, 3, 8] {
            let mut seen = Vec::new();
            let result: Result<(), ThreadPanic> = ordered_map(
                0..200u64,
                workers,
                4,
                |i| {
                    // Uneven work so that workers finish out of order.
                    thread::sleep(Duration::from_micros((i * 7919) % 300));
                    i * 2
                },
                |r| {
                    seen.push(r);
                    Ok(())
                },
            );
            result.unwrap();
            assert_eq!(seen, (0..200).map(|i| i * 2).collect::<Vec<_>>());
        }
    }

    #[test]
    fn never_more_than_in_flight_items_are_out() {
        let drawn = AtomicUsize::new(0);
        let consumed = AtomicUsize::new(0);
        let max_gap = AtomicUsize::new(0);
        let inputs = (0..300).inspect(|_| {
            let d = drawn.fetch_add(1, Ordering::SeqCst) + 1;
            let gap = d - consumed.load(Ordering::SeqCst);
            max_gap.fetch_max(gap, Ordering::SeqCst);
        });
        let result: Result<(), ThreadPanic> = ordered_map(
            inputs,
            3,
            5,
            |i| i,
            |_| {
                consumed.fetch_add(1, Ordering::SeqCst);
                Ok(())
            },
        );
        result.unwrap();
        assert_eq!(consumed.load(Ordering::SeqCst), 300);
        assert!(max_gap.load(Ordering::SeqCst) <= 5, "{max_gap:?}");
    }

    #[test]
    fn an_error_stops_the_stream_early() {
        let drawn = AtomicUsize::new(0);
        let inputs = (0..1_000_000).inspect(|_| {
            drawn.fetch_add(1, Ordering::SeqCst);
        });
        let mut consumed = 0;
        let result = ordered_map(
            inputs,
            2,
            4,
            |i| i,
            |i| {
                consumed += 1;
                if i == 10 { Err(Stop::Consumer) } else { Ok(()) }
            },
        );
        assert_eq!(result, Err(Stop::Consumer));
        assert_eq!(consumed, 11);
        assert!(drawn.load(Ordering::SeqCst) < 100);
    }

    #[derive(Debug, PartialEq)]
    enum Stop {
        Consumer,
        Panic(ThreadPanic),
    }

    impl From<ThreadPanic> for Stop {
        fn from(p: ThreadPanic) -> Self {
            Stop::Panic(p)
        }
    }

    /// Run `f` on a thread of its own; fail the test if it takes longer
    /// than `secs` (before panics were caught, a panicking worker hung
    /// `ordered_map` for ever).
    fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(secs))
            .expect("ordered_map hung (or its caller panicked)")
    }

    #[test]
    fn a_panicking_worker_ends_the_run_with_an_error_in_input_order() {
        for workers in [1, 3] {
            let (result, consumed, drawn) = within(60, move || {
                let drawn = Arc::new(AtomicUsize::new(0));
                let counter = Arc::clone(&drawn);
                let inputs = (0..1_000_000u64).inspect(move |_| {
                    counter.fetch_add(1, Ordering::SeqCst);
                });
                let mut consumed = Vec::new();
                let result = ordered_map(
                    inputs,
                    workers,
                    8,
                    |i| {
                        if i == 10 {
                            panic!("boom at {i}");
                        }
                        i
                    },
                    |i| {
                        consumed.push(i);
                        Ok::<(), Stop>(())
                    },
                );
                (result, consumed, drawn.load(Ordering::SeqCst))
            });
            assert_eq!(
                result,
                Err(Stop::Panic(ThreadPanic {
                    during: "working on",
                    item: 10,
                    message: "boom at 10".into()
                }))
            );
            assert_eq!(consumed, (0..10).collect::<Vec<_>>(), "workers {workers}");
            assert!(drawn < 100, "{drawn} items drawn");
        }
    }

    #[test]
    fn every_worker_panicking_is_an_error_not_a_silent_end() {
        let result = within(60, || {
            ordered_map(
                0..50u32,
                2,
                4,
                |_| -> u32 { panic!("always") },
                |_| Ok::<(), ThreadPanic>(()),
            )
        });
        let err = result.unwrap_err();
        assert_eq!((err.item, err.message.as_str()), (0, "always"));
        assert!(err.to_string().contains("panicked"), "{err}");
    }

    #[test]
    fn a_panicking_input_ends_the_run_with_an_error() {
        let (result, consumed) = within(60, || {
            let inputs = (0..100u32).inspect(|&i| {
                if i == 5 {
                    panic!("bad input {i}");
                }
            });
            let mut consumed = Vec::new();
            let result = ordered_map(
                inputs,
                2,
                4,
                |i| i,
                |i| {
                    consumed.push(i);
                    Ok::<(), ThreadPanic>(())
                },
            );
            (result, consumed)
        });
        let err = result.unwrap_err();
        assert_eq!((err.during, err.item), ("drawing", 5));
        assert_eq!(err.message, "bad input 5");
        assert_eq!(consumed, [0, 1, 2, 3, 4]);
    }
}
