//! The connections the metrics endpoint serves: at most [`MAX_OPEN`] at once, each with a
//! deadline for its whole exchange (request head, the supervisor's answer, the reply).
//!
//! Each connection is served by its own thread with plain blocking reads and writes; the
//! accepting thread keeps the deadlines and the bound, by shutting a socket down (which ends any
//! read or write blocked on it at once). So a client that trickles its request or reads the
//! answer a byte a second holds one connection until its deadline, never the endpoint; and when
//! every place is taken, a new connection takes the place of the oldest one that has not sent a
//! whole request head: a thousand idle connections cannot keep a scraper out, and one that has
//! asked is answered.

use std::collections::BTreeMap;
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Connections served at once.
pub(super) const MAX_OPEN: usize = 64;
/// Time one exchange may take, from accept to the last byte of the answer.
pub(super) const EXCHANGE_DEADLINE: Duration = Duration::from_secs(10);

/// The open connections, shared by the accepting thread and the serving ones.
#[derive(Debug, Default)]
pub(super) struct Connections {
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    next: u64,
    /// By admission order, so the first entries are the oldest.
    open: BTreeMap<u64, Open>,
}

#[derive(Debug)]
struct Open {
    /// A handle on the socket, to shut it down.
    stream: TcpStream,
    deadline: Instant,
    /// The whole request head arrived: it is being answered.
    asked: bool,
    /// Shut down already (deadline or eviction); its thread is on its way out.
    shut: bool,
}

impl Open {
    fn shut_down(&mut self) {
        if !self.shut {
            self.shut = true;
            // Already closed by the peer is fine: either way its thread's I/O ends.
            if let Err(error) = self.stream.shutdown(Shutdown::Both) {
                log::debug!("metrics: shutting a connection down: {error}");
            }
        }
    }
}

/// A connection's place; giving it back ([`Drop`]) frees it.
#[derive(Debug)]
pub(super) struct Place {
    id: u64,
    connections: Arc<Connections>,
}

impl Place {
    /// Marks the request head as complete: the connection is no longer idle, so it is not
    /// evicted for a newcomer (its deadline still holds).
    pub(super) fn asked(&self) {
        if let Some(open) = self.connections.lock().open.get_mut(&self.id) {
            open.asked = true;
        }
    }

    /// When the exchange must be over.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.connections
            .lock()
            .open
            .get(&self.id)
            .map(|open| open.deadline)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.connections.lock().open.remove(&self.id);
    }
}

impl Connections {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // A thread that panicked while holding the table left it consistent (every change is
        // one insert, remove or flag), so its poison is not a reason to stop serving.
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A place for `stream` (accepted at `now`), evicting the oldest connection that has not
    /// sent a whole request head when every place is taken; `None` when all of them have.
    pub(super) fn admit(
        self: &Arc<Self>,
        stream: &TcpStream,
        now: Instant,
    ) -> std::io::Result<Option<Place>> {
        let handle = stream.try_clone()?;
        let mut table = self.lock();
        let live = table.open.values().filter(|open| !open.shut).count();
        if live >= MAX_OPEN {
            let Some(idle) = table
                .open
                .values_mut()
                .find(|open| !open.shut && !open.asked)
            else {
                return Ok(None);
            };
            idle.shut_down();
        }
        // Evicted threads leave as soon as they run; this bounds the threads if they lag.
        if table.open.len() >= 2 * MAX_OPEN {
            return Ok(None);
        }
        let id = table.next;
        table.next += 1;
        table.open.insert(
            id,
            Open {
                stream: handle,
                deadline: now + EXCHANGE_DEADLINE,
                asked: false,
                shut: false,
            },
        );
        Ok(Some(Place {
            id,
            connections: Arc::clone(self),
        }))
    }

    /// Shuts down every connection past its deadline at `now`; returns the next deadline.
    pub(super) fn enforce(&self, now: Instant) -> Option<Instant> {
        let mut table = self.lock();
        for open in table.open.values_mut() {
            if open.deadline <= now {
                open.shut_down();
            }
        }
        table
            .open
            .values()
            .filter(|open| !open.shut)
            .map(|open| open.deadline)
            .min()
    }

    /// Connections holding a place, shut down or not (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    /// A connected pair: (the server's end, the client's end).
    fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().expect("bound")).expect("connects");
        let (server, _) = listener.accept().expect("accepts");
        (server, client)
    }

    fn closed(mut client: &TcpStream) -> bool {
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("a read timeout");
        matches!(client.read(&mut [0u8; 1]), Ok(0))
    }

    #[test]
    fn the_deadline_covers_the_whole_exchange() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bound");
        let connections = Arc::new(Connections::default());
        let start = Instant::now();
        let (server, client) = pair(&listener);
        let place = connections
            .admit(&server, start)
            .expect("cloned")
            .expect("a place");
        place.asked();
        assert_eq!(place.deadline(), Some(start + EXCHANGE_DEADLINE));
        assert_eq!(
            connections.enforce(start + EXCHANGE_DEADLINE - Duration::from_millis(1)),
            Some(start + EXCHANGE_DEADLINE),
            "not shut before its deadline"
        );
        // However it has been reading or writing meanwhile, at the deadline it is shut.
        assert_eq!(connections.enforce(start + EXCHANGE_DEADLINE), None);
        assert!(closed(&client), "the client sees the connection end");
        drop(place);
        assert_eq!(connections.len(), 0, "the place is given back");
    }

    #[test]
    fn a_newcomer_takes_the_place_of_the_oldest_idle_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bound");
        let connections = Arc::new(Connections::default());
        let now = Instant::now();
        let mut held = Vec::new();
        for i in 0..MAX_OPEN {
            let (server, client) = pair(&listener);
            let place = connections
                .admit(&server, now)
                .expect("cloned")
                .expect("a place");
            // The first two asked (they are being answered), the others are idle.
            if i < 2 {
                place.asked();
            }
            held.push((place, client, server));
        }
        let (server, _client) = pair(&listener);
        let newcomer = connections.admit(&server, now).expect("cloned");
        assert!(newcomer.is_some(), "the newcomer is served");
        assert!(closed(&held[2].1), "the oldest idle connection made room");
        assert!(!closed_now(&held[0].1) && !closed_now(&held[1].1));
        // Once every place is held by a connection being answered, a newcomer is refused.
        for (place, ..) in &held {
            place.asked();
        }
        let newcomer = newcomer.expect("admitted");
        newcomer.asked();
        let (server, _client) = pair(&listener);
        let refused = connections.admit(&server, now).expect("cloned");
        assert!(refused.is_none(), "no idle connection to take the place of");
    }

    /// Whether the client's end was already closed, without waiting.
    fn closed_now(client: &TcpStream) -> bool {
        client.set_nonblocking(true).expect("non-blocking");
        let mut byte = [0u8; 1];
        let closed = matches!((&*client).read(&mut byte), Ok(0));
        client.set_nonblocking(false).expect("blocking");
        closed
    }
}
