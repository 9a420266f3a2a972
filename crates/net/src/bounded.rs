//! Bounding an I/O operation in time without paying for a timer when it needs none: most writes
//! fit the socket's buffer, and under load the next request is often already there, so they
//! complete at their first poll — before any clock is read or timer registered.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tokio::time::error::Elapsed;

/// Poll `fut` once: its output when it is ready at once, else `Pending` (its waker is
/// registered, and it may be awaited on from where it stands).
pub async fn poll_once<F: Future>(mut fut: Pin<&mut F>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await
}

/// `fut` bounded by `limit`, with the timer (and its clock reading) set up only when `fut` is
/// not ready at its first poll.
pub async fn timeout_if_pending<F: Future>(limit: Duration, fut: F) -> Result<F::Output, Elapsed> {
    let mut fut = std::pin::pin!(fut);
    match poll_once(fut.as_mut()).await {
        Poll::Ready(out) => Ok(out),
        Poll::Pending => tokio::time::timeout(limit, fut).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn poll_once_tells_a_ready_future_from_a_waiting_one_which_can_still_finish() {
        assert_eq!(poll_once(std::pin::pin!(async { 5 })).await, Poll::Ready(5));
        let mut later = std::pin::pin!(async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            6
        });
        assert_eq!(poll_once(later.as_mut()).await, Poll::Pending);
        assert_eq!(later.await, 6);
    }

    #[tokio::test(start_paused = true)]
    async fn a_ready_operation_needs_no_timer_and_a_waiting_one_is_bounded() {
        assert_eq!(timeout_if_pending(Duration::from_millis(1), async { 7 }).await.ok(), Some(7));
        let never = std::future::pending::<()>();
        assert!(timeout_if_pending(Duration::from_secs(5), never).await.is_err());
        let later = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            3
        };
        assert_eq!(timeout_if_pending(Duration::from_secs(5), later).await.ok(), Some(3));
    }
}
