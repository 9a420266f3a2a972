//! Bounding an I/O operation in time without paying for a timer when it needs none: most writes
//! fit the socket's buffer, and under load the next request is often already there, so they
//! complete at their first poll — before any clock is read or timer registered.

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use tokio::time::error::Elapsed;

/// `fut` bounded by `limit`, with the timer (and its clock reading) set up only when `fut` is
/// not ready at its first poll.
pub async fn timeout_if_pending<F: Future>(limit: Duration, fut: F) -> Result<F::Output, Elapsed> {
    let mut fut = std::pin::pin!(fut);
    let first = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
    match first {
        Poll::Ready(out) => Ok(out),
        Poll::Pending => tokio::time::timeout(limit, fut).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
