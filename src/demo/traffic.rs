//! The "traffic" switch: one background task that makes random example writes (comments,
//! reactions, steps) at a bounded rate, so the demo page's counters move on their own.
//!
//! At most one generator runs per gateway. It stops when switched off, when switched to
//! another rate (replaced), and at shutdown (its token is a child of the app's). Stopping
//! waits for the task, so once `stop` returns no further write happens. The rate is capped at
//! [`MAX_RATE`], and a missed tick is skipped rather than caught up, so writes in `t` seconds
//! never exceed `rate * t + 1`. It never writes outside the example application's tables.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::writes;
use crate::state::AppState;

/// The highest rate the switch accepts, in writes per second.
pub const MAX_RATE: u32 = 50;
/// The rate the page offers first.
pub const DEFAULT_RATE: u32 = 5;

const USERS: [&str; 3] = ["alice", "bob", "carol"];
const KINDS: [&str; 4] = ["like", "love", "laugh", "wow"];

/// What the switch reports: whether it is on, at which rate, and writes made so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TrafficStatus {
    pub enabled: bool,
    pub rate: u32,
    pub writes: u64,
}

struct Running {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

struct Switch {
    rate: u32,
    running: Option<Running>,
}

/// The one traffic generator of a gateway. The async lock serialises start/stop, so two
/// concurrent requests can never leave two generators running.
pub struct Traffic {
    switch: Mutex<Switch>,
    writes: Arc<AtomicU64>,
}

impl Default for Traffic {
    fn default() -> Self {
        Traffic {
            switch: Mutex::new(Switch {
                rate: DEFAULT_RATE,
                running: None,
            }),
            writes: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Traffic {
    pub async fn status(&self) -> TrafficStatus {
        let switch = self.switch.lock().await;
        self.status_of(&switch)
    }

    fn status_of(&self, switch: &Switch) -> TrafficStatus {
        TrafficStatus {
            enabled: switch
                .running
                .as_ref()
                .is_some_and(|running| !running.task.is_finished()),
            rate: switch.rate,
            writes: self.writes.load(Ordering::Relaxed),
        }
    }

    /// Starts (or restarts at a new rate) the generator; `rate` must be in `1..=MAX_RATE`.
    pub async fn start(&self, app: &AppState, rate: u32) -> TrafficStatus {
        let rate = rate.clamp(1, MAX_RATE);
        let mut switch = self.switch.lock().await;
        if let Some(running) = switch.running.take() {
            halt(running).await;
        }
        let stop = app.shutdown.child_token();
        // Spawned on the gateway's drain tracker, so shutdown waits for an in-flight write
        // before it closes the pool.
        let task = app.sockets.spawn(generate(
            app.pool.clone(),
            rate,
            self.writes.clone(),
            stop.clone(),
        ));
        switch.rate = rate;
        switch.running = Some(Running { stop, task });
        tracing::info!(rate, "demo traffic started");
        self.status_of(&switch)
    }

    /// Stops the generator (if running) and waits until it has made its last write.
    pub async fn stop(&self) -> TrafficStatus {
        let mut switch = self.switch.lock().await;
        if let Some(running) = switch.running.take() {
            halt(running).await;
            tracing::info!("demo traffic stopped");
        }
        self.status_of(&switch)
    }
}

async fn halt(running: Running) {
    running.stop.cancel();
    if let Err(err) = running.task.await {
        tracing::warn!(error = %err, "demo traffic task ended abnormally");
    }
}

async fn generate(pool: PgPool, rate: u32, writes: Arc<AtomicU64>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut rng = StdRng::from_os_rng();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let write = Write::pick(&mut rng);
        match write.apply(&pool).await {
            Ok(()) => {
                writes.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => tracing::debug!(error = %err, "demo traffic write failed"),
        }
    }
}

/// One random write on a random post (or, for steps, a random user).
#[derive(Debug)]
enum Write {
    AddComment {
        user: &'static str,
    },
    DeleteComment,
    AddReaction {
        user: &'static str,
        kind: &'static str,
    },
    DeleteReaction,
    Steps {
        user: &'static str,
        value: f64,
    },
}

impl Write {
    fn pick(rng: &mut StdRng) -> Write {
        let user = USERS[rng.random_range(0..USERS.len())];
        match rng.random_range(0..100) {
            0..40 => Write::AddComment { user },
            40..55 => Write::DeleteComment,
            55..85 => Write::AddReaction {
                user,
                kind: KINDS[rng.random_range(0..KINDS.len())],
            },
            85..95 => Write::DeleteReaction,
            _ => Write::Steps {
                user,
                value: f64::from(rng.random_range(100..1500)),
            },
        }
    }

    async fn apply(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        const BODY: &str = "a comment from demo traffic";
        match self {
            Write::AddComment { user } => writes::add_comment(pool, None, user, BODY).await?,
            Write::DeleteComment => writes::delete_comment(pool, None).await?,
            Write::AddReaction { user, kind } => {
                writes::add_reaction(pool, None, user, kind).await?
            }
            Write::DeleteReaction => writes::delete_reaction(pool, None).await?,
            Write::Steps { user, value } => Some(writes::add_steps(pool, user, *value).await?),
        };
        Ok(())
    }
}
