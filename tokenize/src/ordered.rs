//! [`ordered_map`]: parallel work on a stream, results in input order, with
//! bounded memory.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread;

/// Apply `work` to every item of `inputs` on `workers` threads and hand the
/// results to `consume`, on the calling thread, in the order of `inputs`.
///
/// `inputs` is drawn on a thread of its own (reading and decompressing
/// overlap with the work), and at most `in_flight` items are between being
/// drawn and being consumed at any moment, so memory is bounded by
/// `in_flight` items whatever the length of the stream or the speed of each
/// worker. The first error `consume` returns stops everything: the remaining
/// items are not drawn and that error is returned.
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
    let (result_tx, result_rx) = sync_channel::<(u64, R)>(in_flight);

    thread::scope(|scope| {
        scope.spawn(move || draw(inputs, permit_rx, item_tx));
        for _ in 0..workers {
            let (item_rx, result_tx, work) = (Arc::clone(&item_rx), result_tx.clone(), &work);
            scope.spawn(move || work_loop(&item_rx, &result_tx, work));
        }
        // Only the threads hold these now: when they end, the channels close.
        drop(item_rx);
        drop(result_tx);

        let mut pending: BTreeMap<u64, R> = BTreeMap::new();
        let mut next = 0u64;
        let mut outcome = Ok(());
        'results: for (seq, result) in result_rx.iter() {
            pending.insert(seq, result);
            while let Some(result) = pending.remove(&next) {
                next += 1;
                if let Err(e) = consume(result) {
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

fn draw<T, I: Iterator<Item = T>>(
    mut inputs: I,
    permits: Receiver<()>,
    items: SyncSender<(u64, T)>,
) {
    for seq in 0u64.. {
        // The permit first: an item is only drawn when there is room for it.
        if permits.recv().is_err() {
            return;
        }
        let Some(item) = inputs.next() else { return };
        if items.send((seq, item)).is_err() {
            return;
        }
    }
}

fn work_loop<T, R, W: Fn(T) -> R>(
    items: &Mutex<Receiver<(u64, T)>>,
    results: &SyncSender<(u64, R)>,
    work: &W,
) {
    loop {
        // Hold the lock only to take one item.
        let next = match items.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok((seq, item)) = next else { return };
        if results.send((seq, work(item))).is_err() {
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
            let result: Result<(), ()> = ordered_map(
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
        let result: Result<(), ()> = ordered_map(
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
                if i == 10 { Err("stop") } else { Ok(()) }
            },
        );
        assert_eq!(result, Err("stop"));
        assert_eq!(consumed, 11);
        assert!(drawn.load(Ordering::SeqCst) < 100);
    }
}
