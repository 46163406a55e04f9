//! Group commit: writes that arrive while others are being committed share one transaction.
//!
//! A write joins a queue and then either gets its answer or becomes a leader: one of at most
//! `leaders` callers at a time that takes what is queued (the oldest first, up to a size) and runs
//! it as one batch, answering each member. A write that arrives when the shop is quiet (the last
//! batch was one write) is led at once, alone: it costs what it did. Under load batches grow as
//! writes pile up behind the ones being committed, and a leader waits a moment (`linger`, at most)
//! for as many writes as the last batch had before it takes them: many orders share a `BEGIN`,
//! one statement per table and one `COMMIT` (one flush to disk), and the database's cost per
//! order falls with the batch's size.
//!
//! Callers must run [`GroupCommit::submit`] in a task that nothing cancels ([`crate::db::Db::write`]
//! does that): a leader dropped half-way would leave the members of its batch without an answer
//! (they would get `None`, never a wrong one).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{oneshot, Notify, Semaphore};

/// One queued write and where its answer goes.
pub(crate) struct Member<J, R> {
    pub(crate) job: J,
    reply: oneshot::Sender<R>,
}

impl<J, R> Member<J, R> {
    /// Sends the answer; a caller that has gone away is no one's concern here.
    pub(crate) fn answer(self, answer: R) {
        let _ = self.reply.send(answer);
    }
}

pub(crate) struct GroupCommit<J, R> {
    queue: Mutex<Vec<Member<J, R>>>,
    leaders: Semaphore,
    /// A batch stops growing once the weights of its members reach this (it always takes one).
    max_weight: usize,
    /// How many the last batch took.
    last: AtomicUsize,
    /// Woken at every write queued, for a leader that is gathering.
    arrived: Notify,
    /// The longest a leader waits for its batch to fill.
    linger: Duration,
}

impl<J, R> GroupCommit<J, R> {
    /// At most `leaders` batches run at once; each takes members until their weights reach
    /// `max_weight`. Under load a leader waits up to `linger` for as many members as the last
    /// batch had ([`Self::gather`]).
    pub(crate) fn new(leaders: usize, max_weight: usize, linger: Duration) -> Self {
        Self {
            queue: Mutex::new(Vec::new()),
            leaders: Semaphore::new(leaders),
            max_weight,
            last: AtomicUsize::new(0),
            arrived: Notify::new(),
            linger,
        }
    }

    /// Queues `job` and returns its answer, leading batches (with `run`, which must answer every
    /// member it is given) while it waits. `weight` says how much of a batch a job takes.
    /// `None` only if a batch dropped a member unanswered.
    pub(crate) async fn submit<F, Fut>(&self, job: J, weight: impl Fn(&J) -> usize, run: F) -> Option<R>
    where
        F: Fn(Vec<Member<J, R>>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let (reply, mut answer) = oneshot::channel();
        self.lock().push(Member { job, reply });
        self.arrived.notify_waiters();
        loop {
            tokio::select! {
                biased;
                answered = &mut answer => return answered.ok(),
                permit = self.leaders.acquire() => {
                    let permit = permit.ok()?;
                    self.gather().await;
                    let batch = self.take(&weight);
                    if batch.is_empty() {
                        // Another leader took ours: it answers.
                        drop(permit);
                        return answer.await.ok();
                    }
                    self.last.store(batch.len(), Ordering::Relaxed);
                    run(batch).await;
                }
            }
        }
    }

    /// Under load (the last batch took more than one write), waits until as many are queued, for
    /// `linger` at most; at once when the shop is quiet. Without it a batch took only what had
    /// arrived during the last commit, and with the clients split over shards the batches stayed
    /// small and each order paid a large share of its batch's statements (BENCHMARKS.md, issue 30).
    async fn gather(&self) {
        let want = self.last.load(Ordering::Relaxed);
        if want < 2 || self.linger.is_zero() {
            return;
        }
        let deadline = tokio::time::Instant::now() + self.linger;
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if self.lock().len() >= want {
                return;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return;
            }
        }
    }

    /// The oldest queued members, up to the weight limit (at least one if any is queued).
    fn take(&self, weight: impl Fn(&J) -> usize) -> Vec<Member<J, R>> {
        let mut queue = self.lock();
        let mut total = 0;
        let n = queue
            .iter()
            .position(|m| {
                total += weight(&m.job);
                total > self.max_weight
            })
            .unwrap_or(queue.len())
            .max(1)
            .min(queue.len());
        queue.drain(..n).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Member<J, R>>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    /// A batch that sums its members' jobs, slowly, recording its size.
    async fn slow_sum(batch: Vec<Member<u32, u32>>, sizes: &Mutex<Vec<usize>>) {
        sizes.lock().unwrap().push(batch.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
        let sum: u32 = batch.iter().map(|m| m.job).sum();
        for m in batch {
            m.answer(sum);
        }
    }

    #[tokio::test]
    async fn a_lone_write_is_its_own_batch() {
        let group = GroupCommit::new(2, 100, Duration::ZERO);
        let sizes = Mutex::new(Vec::new());
        assert_eq!(group.submit(7, |_| 1, |b| slow_sum(b, &sizes)).await, Some(7));
        assert_eq!(*sizes.lock().unwrap(), vec![1]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_that_pile_up_share_batches_and_each_gets_its_batch_answer() {
        let group = Arc::new(GroupCommit::new(1, 100, Duration::ZERO));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let answered = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..40u32)
            .map(|_| {
                let (group, sizes, answered) = (group.clone(), sizes.clone(), answered.clone());
                tokio::spawn(async move {
                    let got = group.submit(1, |_| 1, |b| slow_sum(b, &sizes)).await.unwrap();
                    answered.fetch_add(1, Ordering::Relaxed);
                    got
                })
            })
            .collect();
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.unwrap());
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 40, "every write in exactly one batch: {sizes:?}");
        assert!(sizes.len() < 10, "40 writes at once took {} batches: {sizes:?}", sizes.len());
        // Each write's answer is its own batch's sum: as many writes answered n as batches of n had.
        for &n in &sizes {
            let batches_of_n = sizes.iter().filter(|&&s| s == n).count();
            assert_eq!(answers.iter().filter(|&&a| a as usize == n).count(), n * batches_of_n);
        }
        assert_eq!(answered.load(Ordering::Relaxed), 40);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_stops_at_its_weight() {
        let group = Arc::new(GroupCommit::new(1, 10, Duration::ZERO));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let tasks: Vec<_> = (0..20u32)
            .map(|_| {
                let (group, sizes) = (group.clone(), sizes.clone());
                tokio::spawn(async move { group.submit(4, |j| *j as usize, |b| slow_sum(b, &sizes)).await })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap().is_some());
        }
        let sizes = sizes.lock().unwrap().clone();
        assert!(sizes.iter().all(|&s| (1..=2).contains(&s)), "weight 4 each, at most 10 a batch: {sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), 20);
    }

    /// Under load a leader waits for as many writes as its last batch had; when the shop is
    /// quiet it leads at once. Time is paused: the runtime jumps to each timer, so the steps are
    /// exact. Without the wait D and E, 10 ms apart, would be two batches of one.
    #[tokio::test(start_paused = true)]
    async fn under_load_a_leader_gathers_as_many_as_the_last_batch_had() {
        let group = Arc::new(GroupCommit::new(1, 100, Duration::from_millis(50)));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let submit = |job: u32| {
            let (group, sizes) = (group.clone(), sizes.clone());
            tokio::spawn(async move { group.submit(job, |_| 1, |b| slow_sum(b, &sizes)).await })
        };
        let started = tokio::time::Instant::now();
        // A, alone: led at once, though the linger is long (the shop was quiet).
        let a = submit(1);
        tokio::time::sleep(Duration::from_millis(1)).await;
        // B and C wait behind A's commit (20 ms) and go together: the last batch had two.
        let (b, c) = (submit(2), submit(3));
        assert_eq!(a.await.unwrap(), Some(1));
        assert_eq!(started.elapsed(), Duration::from_millis(20), "a lone write waits for nothing");
        assert_eq!((b.await.unwrap(), c.await.unwrap()), (Some(5), Some(5)));
        tokio::time::sleep(Duration::from_millis(10)).await;
        // D's leader waits for a second write; E comes 10 ms later and shares D's batch.
        let d = submit(4);
        tokio::time::sleep(Duration::from_millis(10)).await;
        let e = submit(5);
        assert_eq!((d.await.unwrap(), e.await.unwrap()), (Some(9), Some(9)));
        assert_eq!(*sizes.lock().unwrap(), vec![1, 2, 2]);
        // Past the linger, a leader takes what it has: F alone, after 50 ms.
        let f_started = tokio::time::Instant::now();
        assert_eq!(submit(6).await.unwrap(), Some(6));
        assert_eq!(f_started.elapsed(), Duration::from_millis(70), "50 ms of linger, 20 of commit");
        assert_eq!(*sizes.lock().unwrap(), vec![1, 2, 2, 1]);
    }
}
