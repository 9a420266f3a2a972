//! The app's side of the loop classes: the ASGI app runs on an asyncio loop (uvloop when
//! installed) on the worker's main thread, whose sockets the worker's runtime serves from the
//! same thread (`server/loop_driver.rs`); gevent's greenlets run on its hub. [`bridge`] carries
//! requests to the loop or hub; [`request`] is the per-request object the loop glue
//! (`ferrocorn/_asgi.py`) drives; [`websocket`] the WebSocket session; [`chunk_channel`] the
//! bounded queue from the app's side (a loop task, a greenlet, a gthread pool thread) to its
//! connection.

pub mod awaitable;
pub mod bridge;
pub mod chunk_channel;
pub mod request;
pub mod websocket;

pub use bridge::{Bridge, Event, HubJob, LoopBridge};
pub use request::{AsgiRequest, Endpoints, RequestShared};
pub use websocket::{WebSocketSession, WsIn, WsOut, WsShared};
