//! `bindings.cron`: an input binding that fires on a schedule
//! ([`super::schedule`]), each firing one event with `timeZone` (the schedule's `CRON_TZ`, or UTC) and
//! `readTimeUTC` metadata. A firing the app refuses is not repeated. Its
//! one output operation, `delete`, stops the schedule, as in Dapr.

use std::time::SystemTime;

use async_trait::async_trait;

use super::{Binding, Event, Handler, Reading, Request, Response, schedule::Schedule};
use crate::{Metadata, meta};

/// The cron binding.
pub struct Cron {
    schedule: Schedule,
    /// Set by `delete`: no more firings.
    stopped: tokio::sync::watch::Sender<bool>,
}

impl Cron {
    /// Reads `schedule`.
    pub fn new(metadata: &Metadata) -> Result<Self, String> {
        let text = meta(metadata, "schedule").ok_or("metadata schedule is required (e.g. @every 15s)")?;
        Ok(Self {
            schedule: super::schedule::parse(text)?,
            stopped: tokio::sync::watch::channel(false).0,
        })
    }
}

#[async_trait]
impl Binding for Cron {
    fn operations(&self) -> &'static [&'static str] {
        &["delete"]
    }

    async fn run(&self, _: Request) -> crate::Result<Response> {
        // `delete`, the one operation.
        self.stopped.send_replace(true);
        Ok(Response::default())
    }

    fn is_input(&self) -> bool {
        true
    }

    async fn read(&self, handler: Handler) -> crate::Result<Reading> {
        let schedule = self.schedule.clone();
        let mut stopped = self.stopped.subscribe();
        let task = tokio::spawn(async move {
            let start = SystemTime::now();
            while !*stopped.borrow() {
                let now = SystemTime::now();
                let Some(at) = schedule.next_after(now, start) else {
                    tracing::warn!("the cron schedule never fires again");
                    return;
                };
                tokio::select! {
                    _ = tokio::time::sleep(at.duration_since(now).unwrap_or_default()) => {}
                    _ = stopped.wait_for(|s| *s) => return,
                }
                let metadata = Metadata::from([
                    ("timeZone".to_string(), schedule.zone_name().to_string()),
                    (
                        "readTimeUTC".to_string(),
                        crate::state::rfc3339(SystemTime::now()),
                    ),
                ]);
                if let Err(e) = handler(Event {
                    data: Default::default(),
                    metadata,
                })
                .await
                {
                    tracing::warn!(error = %e, "the app did not take a cron event");
                }
            }
        });
        Ok(Reading::new(vec![task]))
    }
}
